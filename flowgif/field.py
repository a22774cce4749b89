"""The vector field ``v(t, x)``: a time-conditioned MLP in torchdiffeq's ``(t, x)`` signature."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowgif.config import FieldConfig

__all__ = ["VectorField"]

ACTIVATIONS = {
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


class VectorField(nn.Module):
    """MLP velocity ``v(t, x)`` on ``dim``-dimensional points.

    Input features: ``x``, ``time_features`` sin/cos pairs of t (or t itself), and optionally
    ``fourier_features`` random Fourier features of x (fixed Gaussian frequencies), which let a
    small MLP draw sharp edges.

    Args:
        config: widths, depth, activation and feature counts.
        dim: dimension of the points (2 for pictures).

    Example:
        >>> v = VectorField(FieldConfig(width=16, depth=2))
        >>> v(torch.tensor(0.5), torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, config: FieldConfig, dim: int = 2) -> None:
        super().__init__()
        self.config = config
        self.dim = dim
        k = config.time_features
        # Harmonics pi * (1..k) of t: smooth enough in t for few solver steps (geometric
        # frequencies up to pi * 2^7 trained measurably worse).
        self.register_buffer("t_freq", math.pi * torch.arange(1, k + 1, dtype=torch.float32))
        f = config.fourier_features
        gen = torch.Generator().manual_seed(1234)  # frequencies are part of the architecture
        self.register_buffer(
            "x_freq", 2 * math.pi * config.fourier_scale * torch.randn(dim, f, generator=gen)
        )
        n_in = dim + (2 * k if k else 1) + 2 * f
        act = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        for i in range(config.depth):
            layers += [nn.Linear(n_in if i == 0 else config.width, config.width), act()]
        layers.append(nn.Linear(config.width if config.depth else n_in, dim))
        self.net = nn.Sequential(*layers)

    def features(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t).to(x)
        t = t.expand(x.shape[0], 1) if t.dim() == 0 else t.reshape(-1, 1)
        parts = [x]
        if self.t_freq.numel():
            a = t * self.t_freq
            parts += [torch.sin(a), torch.cos(a)]
        else:
            parts.append(t)
        if self.x_freq.shape[1]:
            b = x @ self.x_freq
            parts += [torch.sin(b), torch.cos(b)]
        return torch.cat(parts, dim=1)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Velocity at time ``t`` (scalar, ``(N,)`` or ``(N, 1)``), points ``x`` ``(N, dim)``."""
        return self.net(self.features(t, x))
