"""Energy targets known only up to a constant, fitted by reverse KL (sampling from the flow).

The four classic 2D potentials of Rezende & Mohamed (2015), ``p(z) ~ exp(-U(z))``, confined to
a square window by a steep wall (U2 to U4 are otherwise not normalisable along z1). ``U1`` is
the two-mode ring as this project specifies it:
``1/2 ((|z| - 4) / 0.4)^2 - log(exp(-1/2 ((z1 - 2) / 0.8)^2) + exp(-1/2 ((z1 + 2) / 0.8)^2))``.

They are fitted by reverse KL (:mod:`flowgif.objectives.reverse_kl`): an energy has no sampler.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flowgif.errors import FlowgifError
from flowgif.sources.toys import ENERGIES

if TYPE_CHECKING:
    from flowgif.sources.picture import ImageDensity

__all__ = ["ENERGIES", "WINDOWS", "energy", "energy_density", "log_partition"]

WINDOWS = {"u1": 6.0, "u2": 4.0, "u3": 4.0, "u4": 4.0}  # half-size of each target's square
WALL = 0.1  # width of the soft wall outside the window


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def energy(name: str, z: Tensor) -> Tensor:
    """``U(z)`` of target ``name`` at points ``(N, 2)``, wall included."""
    name = name.lower()
    z1, z2 = z[:, 0], z[:, 1]
    if name == "u1":
        r = torch.linalg.norm(z, dim=1)
        modes = torch.logaddexp(-0.5 * ((z1 - 2) / 0.8) ** 2, -0.5 * ((z1 + 2) / 0.8) ** 2)
        u = 0.5 * ((r - 4) / 0.4) ** 2 - modes
    elif name == "u2":
        u = 0.5 * ((z2 - _w1(z)) / 0.4) ** 2
    elif name == "u3":
        w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
        u = -torch.logaddexp(
            -0.5 * ((z2 - _w1(z)) / 0.35) ** 2, -0.5 * ((z2 - _w1(z) + w2) / 0.35) ** 2
        )
    elif name == "u4":
        w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
        u = -torch.logaddexp(
            -0.5 * ((z2 - _w1(z)) / 0.4) ** 2, -0.5 * ((z2 - _w1(z) + w3) / 0.35) ** 2
        )
    else:
        raise FlowgifError(f"unknown energy {name!r}; choose one of: {', '.join(ENERGIES)}")
    outside = (z.abs() - WINDOWS[name]).clamp(min=0).pow(2).sum(1)
    return u + 0.5 * outside / WALL**2


def energy_density(name: str, resolution: int = 256) -> ImageDensity:
    """``exp(-U)`` rasterised on its window (for framing, rendering and grid figures)."""
    from flowgif.sources.picture import ImageDensity

    w = WINDOWS[name.lower()]
    c = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * 2 * w - w
    y, x = torch.meshgrid(c.flip(0), c, indexing="ij")  # row 0 is the top
    u = energy(name, torch.stack([x.ravel(), y.ravel()], 1)).reshape(resolution, resolution)
    ink = torch.exp(-(u - u.min())).numpy()
    return ImageDensity(ink, (resolution, resolution), extent=w)


def log_partition(name: str, resolution: int = 1024) -> float:
    """``log Z = log int exp(-U)`` by the midpoint rule, over the window and its wall (the wall
    holds a few per cent of the mass of U2-U4, whose density does not fall off along z1)."""
    w = WINDOWS[name.lower()] + 8 * WALL
    c = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * 2 * w - w
    y, x = torch.meshgrid(c, c, indexing="ij")
    u = energy(name, torch.stack([x.ravel(), y.ravel()], 1))
    return float(torch.logsumexp(-u, 0) + 2 * math.log(2 * w / resolution))
