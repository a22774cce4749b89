"""Radial flows (Rezende & Mohamed 2015): ``f(z) = z + beta (z - z0) / (alpha + |z - z0|)``.

Each layer pulls points towards (``beta < 0``) or pushes them from a centre ``z0``.
``alpha = softplus(.) > 0`` and ``beta = -alpha + softplus(.) >= -alpha`` keep it invertible.
The inverse is closed form: the radius ``r`` of ``z`` solves the quadratic
``r^2 + (alpha + beta - r_x) r - alpha r_x = 0``, so radial flows train by maximum likelihood
on picture samples as well as by reverse KL on energy targets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from flowgif.config import Config
from flowgif.flows.base import DiscreteFlow, Layer

__all__ = ["Radial", "build", "radial"]

SCALE = 10.0  # parameters are stored divided by this: Adam then moves them 10x faster


class Radial(Layer):
    """One radial layer around a learnt centre."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.z0_ = nn.Parameter(torch.randn(2, generator=generator) / SCALE)
        self.a_ = nn.Parameter(torch.zeros(()))
        self.b_ = nn.Parameter(torch.zeros(()))

    def _ab(self) -> tuple[Tensor, Tensor, Tensor]:
        alpha = softplus(SCALE * self.a_)
        return SCALE * self.z0_, alpha, softplus(SCALE * self.b_) - alpha

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._ab()
        d = z - z0
        r = d.norm(dim=1)
        h = 1 / (alpha + r)
        # det J = (1 + beta h)^(d-1) (1 + beta h + beta h' r), h' = -h^2; d = 2
        ladj = torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)
        return z + (beta * h)[:, None] * d, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._ab()
        dx = x - z0
        rx = dx.norm(dim=1)
        p = alpha + beta - rx
        root = (p * p + 4 * alpha * rx).sqrt()
        # the positive root, in the form that does not cancel for either sign of p
        r = torch.where(p > 0, 2 * alpha * rx / (p + root).clamp_min(1e-30), (root - p) / 2)
        h = 1 / (alpha + r)
        ladj = torch.log1p(beta * h) + torch.log1p(beta * alpha * h**2)
        return z0 + dx / (1 + beta * h)[:, None], ladj


def radial(layers: int, seed: int = 0) -> DiscreteFlow:
    """A stack of ``layers`` radial layers with seeded random centres."""
    gen = torch.Generator().manual_seed(seed)
    return DiscreteFlow([Radial(gen) for _ in range(layers)], "radial")


def build(config: Config) -> DiscreteFlow:
    """The family's module as ``config.flow`` describes it (``layers = 0``: 32)."""
    return radial(config.flow.layers or 32, config.train.seed)
