"""RealNVP (Dinh et al. 2017): affine coupling layers with alternating masks, optional batch-norm.

A coupling layer keeps one coordinate and moves the other by an affine map whose scale and shift
are MLPs of the kept one: ``x_b = z_b * exp(s(z_a)) + t(z_a)``, so inverse and log-determinant
(``sum s``) are exact and cheap. Successive layers swap the roles of the two coordinates.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from flowgif.config import Config
from flowgif.flows.base import DiscreteFlow, Layer

__all__ = ["AffineCoupling", "FlowBatchNorm", "build", "realnvp"]


class AffineCoupling(Layer):
    """Moves coordinate ``1 - keep`` by scale and shift computed from coordinate ``keep``.

    The scale is ``tanh``-bounded (times a learnt factor) so early steps cannot explode, and the
    last layer starts at zero so that every coupling starts as the identity.
    """

    def __init__(self, keep: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.keep = keep
        dims = [1] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.SiLU()]
        last = nn.Linear(dims[-1], 2)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.scale = nn.Parameter(torch.ones(()))

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a, b = z[:, self.keep : self.keep + 1], z[:, 1 - self.keep : 2 - self.keep]
        s, t = self.net(a).chunk(2, dim=1)
        return a, b, self.scale * torch.tanh(s), t

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.keep == 0 else [b, a], dim=1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        a, b, s, t = self._split(z)
        return self._join(a, b * torch.exp(s) + t), s[:, 0]

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b, s, t = self._split(x)  # a is unchanged by the layer, so s, t are the same
        return self._join(a, (b - t) * torch.exp(-s)), s[:, 0]


class FlowBatchNorm(Layer):
    """Batch normalisation as an invertible layer (RealNVP, section 3.7).

    It normalises in the picture -> noise direction: while training by maximum likelihood the
    inverse uses the batch's mean and variance (and updates running averages); otherwise, and
    in the noise -> picture direction, the running averages, making it a learnt affine map.
    """

    def __init__(self, momentum: float = 0.05, eps: float = 1e-4) -> None:
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(2))
        self.beta = nn.Parameter(torch.zeros(2))
        self.register_buffer("mean", torch.zeros(2))
        self.register_buffer("var", torch.ones(2))
        self.momentum, self.eps = momentum, eps

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        std = (self.var + self.eps).sqrt()
        x = (z - self.beta) * torch.exp(-self.log_gamma) * std + self.mean
        ladj = (std.log() - self.log_gamma).sum().expand(len(z))
        return x, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.mean.lerp_(mean, self.momentum)
                self.var.lerp_(var, self.momentum)
        else:
            mean, var = self.mean, self.var
        std = (var + self.eps).sqrt()
        z = (x - mean) / std * torch.exp(self.log_gamma) + self.beta
        return z, (std.log() - self.log_gamma).sum().expand(len(x))


def realnvp(layers: int, hidden: int, depth: int, batchnorm: bool) -> DiscreteFlow:
    """``layers`` couplings with alternating masks, a batch-norm between each two if asked."""
    stack: list[Layer] = []
    for k in range(layers):
        if batchnorm and k:
            stack.append(FlowBatchNorm())
        stack.append(AffineCoupling(k % 2, hidden, depth))
    return DiscreteFlow(stack, "realnvp")


def build(config: Config) -> DiscreteFlow:
    """The family's module as ``config.flow`` describes it (``layers = 0``: 8)."""
    c = config.flow
    return realnvp(c.layers or 8, c.hidden, c.depth, c.batchnorm)
