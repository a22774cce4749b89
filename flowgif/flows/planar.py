"""Planar flows (Rezende & Mohamed 2015): ``f(z) = z + u tanh(w.z + b)``.

Each layer bends the plane along one direction. It is invertible when ``w.u >= -1``; the
standard reparametrisation ``u' = u + (softplus(w.u) - 1 - w.u) w / |w|^2`` keeps ``w.u' > -1``.
The inverse has no closed form: ``w.x = a + (w.u') tanh(a + b)`` is solved for ``a = w.z`` by
bisection (it is strictly increasing), then one Newton step with gradients on, which gives the
exact gradient of the root (implicit differentiation). That is what lets a planar flow be
trained by maximum likelihood on picture samples; on energy targets it is trained by reverse KL,
which only runs it forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from flowgif.flows.base import DiscreteFlow, Layer

__all__ = ["Planar", "planar"]

BISECTIONS = 60  # halvings of an interval of width 2|w.u'|: below float64 resolution


class Planar(Layer):
    """One planar layer with its invertibility constraint."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, generator=generator) * 0.5)
        self.u = nn.Parameter(torch.randn(2, generator=generator) * 0.1)
        self.b = nn.Parameter(torch.zeros(()))

    def _u(self) -> Tensor:
        wu = self.w @ self.u
        return self.u + (softplus(wu) - 1 - wu) * self.w / (self.w @ self.w + 1e-12)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = self._u()
        h = torch.tanh(z @ self.w + self.b)
        ladj = torch.log1p((self.w @ u) * (1 - h**2))
        return z + h[:, None] * u, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self._u()
        c, y = self.w @ u, x @ self.w  # w.x = a + c tanh(a + b) with a = w.z; c > -1
        with torch.no_grad():
            lo, hi = y - c.abs(), y + c.abs()
            for _ in range(BISECTIONS):
                mid = (lo + hi) / 2
                above = mid + c * torch.tanh(mid + self.b) > y
                hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
            a = (lo + hi) / 2
        h = torch.tanh(a + self.b)
        slope = 1 + c * (1 - h**2)
        a = a - (a + c * h - y) / slope  # zero step in value, exact first-order gradient
        h = torch.tanh(a + self.b)
        return x - h[:, None] * u, torch.log1p(c * (1 - h**2))


def planar(layers: int, seed: int = 0) -> DiscreteFlow:
    """A stack of ``layers`` planar layers with seeded random directions."""
    gen = torch.Generator().manual_seed(seed)
    return DiscreteFlow([Planar(gen) for _ in range(layers)], "planar")
