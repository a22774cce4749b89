"""Planar flows (Rezende & Mohamed 2015): ``f(z) = z + u tanh(w.z + b)``.

Each layer bends the plane along one direction. It is invertible when ``w.u >= -1``; the
standard reparametrisation ``u' = u + (softplus(w.u) - 1 - w.u) w / |w|^2`` keeps ``w.u' > -1``.
The inverse has no closed form: ``w.x = a + (w.u') tanh(a + b)`` is solved for ``a = w.z`` by
bisection (it is strictly increasing) and a Newton step, then one more Newton step with
gradients on, which gives the exact gradient of the root (implicit differentiation). That is
what lets a planar flow be trained by maximum likelihood on picture samples; on energy targets
it is trained by reverse KL, which only runs it forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from flowgif.config import Config
from flowgif.flows.base import DiscreteFlow, Layer

__all__ = ["Planar", "build", "planar"]

SCALE = 3.0  # parameters are stored divided by this: Adam then moves them 3x faster
BISECTIONS = 24  # halvings of the bracket of width 2|w.u'|; two Newton steps finish it


class Planar(Layer):
    """One planar layer with its invertibility constraint."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.w_ = nn.Parameter(torch.randn(2, generator=generator) * 0.5 / SCALE)
        self.u_ = nn.Parameter(torch.randn(2, generator=generator) * 0.1 / SCALE)
        self.b_ = nn.Parameter(torch.zeros(()))

    def _wub(self) -> tuple[Tensor, Tensor, Tensor]:
        w, u, b = SCALE * self.w_, SCALE * self.u_, SCALE * self.b_
        wu = w @ u
        return w, u + (softplus(wu) - 1 - wu) * w / (w @ w + 1e-12), b

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        w, u, b = self._wub()
        h = torch.tanh(z @ w + b)
        ladj = torch.log1p((w @ u) * (1 - h**2))
        return z + h[:, None] * u, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w, u, b = self._wub()
        c, y = w @ u, x @ w  # w.x = a + c tanh(a + b) with a = w.z; c > -1
        with torch.no_grad():
            lo, hi = y - c.abs(), y + c.abs()
            for _ in range(BISECTIONS):
                mid = (lo + hi) / 2
                above = mid + c * torch.tanh(mid + b) > y
                hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
            a = (lo + hi) / 2
            h = torch.tanh(a + b)
            a = a - (a + c * h - y) / (1 + c * (1 - h**2))
        h = torch.tanh(a + b)
        slope = 1 + c * (1 - h**2)
        a = a - (a + c * h - y) / slope  # zero step in value, exact first-order gradient
        h = torch.tanh(a + b)
        return x - h[:, None] * u, torch.log1p(c * (1 - h**2))


def planar(layers: int, seed: int = 0) -> DiscreteFlow:
    """A stack of ``layers`` planar layers with seeded random directions."""
    gen = torch.Generator().manual_seed(seed)
    return DiscreteFlow([Planar(gen) for _ in range(layers)], "planar")


def build(config: Config) -> DiscreteFlow:
    """The family's module as ``config.flow`` describes it (``layers = 0``: 32)."""
    return planar(config.flow.layers or 32, config.train.seed)
