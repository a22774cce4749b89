"""Closed-form kernels on grids, for the posterior of the straight path
(:mod:`flowgif.flows.posterior`): a picture's cells as boxes blurred by a Gaussian per axis,
bilinear splatting and look-up, and a convolution by FFT."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from flowgif.sources.picture import ImageDensity

__all__ = [
    "between",
    "blur_matrix",
    "box_blur",
    "cells",
    "convolve",
    "corners",
    "edges",
    "nearest_inked",
    "splat",
]


def corners(
    x: Tensor, lo: Tensor, step: Tensor, shape: tuple[int, ...]
) -> list[tuple[tuple[Tensor, Tensor], Tensor]]:
    """Bilinear interpolation on a grid of ``shape`` ``(Gy, Gx)`` with node ``(0, 0)`` at ``lo``
    and ``step`` apart (one grid, or one per point): the four corner nodes ``(row, col)`` of
    each point and their weights; points off the grid take its edge."""
    gy, gx = shape
    top = torch.tensor([gx - 1, gy - 1], device=x.device, dtype=x.dtype)
    u = torch.minimum(((x - lo) / step).clamp_min(0), top)
    i0 = torch.minimum(u.floor(), top - 1).long()  # the last node is a cell's far corner
    f = u - i0
    ix, iy = i0[:, 0], i0[:, 1]
    fx, fy = f[:, 0], f[:, 1]
    return [
        ((iy, ix), (1 - fx) * (1 - fy)),
        ((iy, ix + 1), fx * (1 - fy)),
        ((iy + 1, ix), (1 - fx) * fy),
        ((iy + 1, ix + 1), fx * fy),
    ]


def edges(d: ImageDensity) -> tuple[Tensor, Tensor]:
    """The end's cells along each axis as ``(2, n)`` lower and upper edges: columns left to
    right (x), rows top to bottom (y, so decreasing)."""
    h, w = d.grid
    col = torch.arange(w + 1, dtype=torch.float64) * d.cell[0] - d.half[0]
    row = d.half[1] - torch.arange(h + 1, dtype=torch.float64) * d.cell[1]
    return torch.stack([col[:-1], col[1:]]), torch.stack([row[1:], row[:-1]])


def box_blur(
    lo: Tensor, step: Tensor, g: int, a: Tensor, b: Tensor, sd: float, noise: bool
) -> tuple[Tensor, Tensor | None]:
    """Along one axis: boxes ``[a, b]`` (each uniform, its mass 1) blurred by N(0, sd^2), on
    ``g`` nodes ``step`` apart from ``lo``. Returns ``(g, n)`` matrices: the mass each box puts
    in each node's cell, and (``noise``) the moment of ``x - y`` there (``x`` the point, ``y``
    the box's point it blurs). Closed forms: with ``H(d) = d Phi(d / sd) + sd phi(d / sd)``,
    the integral of Phi, mass ``[H(q - a) - H(q - b) - H(p - a) + H(p - b)] / (b - a)`` for the
    cell ``[p, q]``, and moment ``sd^2 [D(p) - D(q)] / (b - a)`` with ``D(u) = Phi((u - a)/sd)
    - Phi((u - b)/sd)``. A box of width 0 (t = 0) is its point. Exact as ``sd -> 0``: the
    boxes' overlap with the cells."""
    sd = max(float(sd), 1e-12)
    nodes = lo + step * torch.arange(g, dtype=torch.float64)
    p, q = (nodes - step / 2)[:, None], (nodes + step / 2)[:, None]
    a, b = a[None, :], b[None, :]
    w = b - a
    cdf = torch.special.ndtr

    def pdf(u: Tensor) -> Tensor:
        return torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)

    if float(w.abs().max()) == 0.0:  # points
        mass = between(cdf, (q - a) / sd, (p - a) / sd)
        moment = sd * (pdf((p - a) / sd) - pdf((q - a) / sd)) if noise else None
        return mass, moment

    def h(d: Tensor) -> Tensor:
        return d * cdf(d / sd) + sd * pdf(d / sd)

    mass = ((h(q - a) - h(p - a)) - (h(q - b) - h(p - b))) / w
    if not noise:
        return mass.clamp_min(0), None
    dp = between(cdf, (p - a) / sd, (p - b) / sd)
    dq = between(cdf, (q - a) / sd, (q - b) / sd)
    return mass.clamp_min(0), sd * sd * (dp - dq) / w


def between(cdf: Callable[[Tensor], Tensor], hi: Tensor, lo: Tensor) -> Tensor:
    """``Phi(hi) - Phi(lo)`` without cancelling in the upper tail: there it is mirrored,
    ``Phi(-lo) - Phi(-hi)`` (one pair of CDFs either way)."""
    sign = torch.where((hi + lo) > 0, -1.0, 1.0).to(hi.dtype)
    return sign * (cdf(sign * hi) - cdf(sign * lo))


def cells(d: ImageDensity) -> tuple[Tensor, Tensor]:
    """The centres ``(K, 2)`` and masses ``(K,)`` of a density's cells that hold mass."""
    probs = torch.as_tensor(d.probs_np, dtype=torch.float64)
    rows, cols = torch.nonzero(probs > 0, as_tuple=True)
    x = -d.half[0] + (cols.double() + 0.5) * d.cell[0]
    y = d.half[1] - (rows.double() + 0.5) * d.cell[1]
    return torch.stack([x, y], 1), probs[rows, cols]


def splat(x: Tensor, mass: Tensor, lo: Tensor, step: Tensor, g: int) -> Tensor:
    """Masses at points ``x`` ``(K, 2)`` shared bilinearly among a ``(g, g)`` grid's nodes."""
    u = ((x - lo) / step).clamp(0, g - 1)
    i0 = u.floor().clamp_max(g - 2).long()
    f = u - i0
    out = torch.zeros(g * g, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
            out.index_add_(0, (i0[:, 1] + dy) * g + i0[:, 0] + dx, w * mass)
    return out.reshape(g, g)


def blur_matrix(g: int, step: float, sd: float) -> Tensor:
    """``(g, g)`` matrix of a 1-D Gaussian blur of ``sd`` on nodes ``step`` apart: each
    column holds the mass N(0, sd^2) gives each node's cell, so it stays exact (a plain
    shift) when ``sd`` is far below ``step``."""
    j = torch.arange(-(g - 1), g, dtype=torch.float64)
    if sd <= 1e-12:
        kernel = (j == 0).double()
    else:
        z = step / (sd * math.sqrt(2))
        kernel = 0.5 * (torch.erf((j + 0.5) * z) - torch.erf((j - 0.5) * z))
    idx = torch.arange(g)
    return kernel[(idx[:, None] - idx[None, :]) + g - 1]


def convolve(a: Tensor, kernel: Tensor) -> Tensor:
    """``a`` convolved with a centred ``kernel`` of the same size (zero outside), by FFT."""
    g = a.shape[0]
    n = 2 * g
    f = torch.fft.rfft2(a, s=(n, n)) * torch.fft.rfft2(kernel, s=(n, n))
    full = torch.fft.irfft2(f, s=(n, n))
    off = (g - 1) // 2
    return full[off : off + g, off : off + g]


def nearest_inked(probs: np.ndarray) -> np.ndarray:
    """For every cell of ``probs`` ``(h, w)``, its flat index when it holds mass, else that
    of the nearest cell that does."""
    from scipy.ndimage import distance_transform_edt

    empty = probs <= 0
    if not empty.any():
        return np.arange(empty.size)
    _, (rows, cols) = distance_transform_edt(empty, return_indices=True)
    return (rows * probs.shape[1] + cols).ravel()
