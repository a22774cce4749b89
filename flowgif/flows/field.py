"""The vector field ``v(t, x)``: a time-conditioned MLP in torchdiffeq's ``(t, x)`` signature."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from flowgif.config import Config, FieldConfig

__all__ = ["VectorField", "build"]

ACTIVATIONS = {
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


class ConcatSquash(nn.Module):
    """FFJORD's time-gated linear layer: ``(W h + b) * sigmoid(g(t)) + c(t)``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_in, n_out)
        self.gate = nn.Linear(1, n_out)
        self.bias = nn.Linear(1, n_out, bias=False)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.layer(h) * torch.sigmoid(self.gate(t)) + self.bias(t)


LATE_EPS = 1e-3  # 1 - t where the late features end (log(1 - t + LATE_EPS) / log(LATE_EPS))


class VectorField(nn.Module):
    """MLP velocity ``v(t, x)`` on ``dim``-dimensional points.

    Input features: ``x``, ``time_features`` sin/cos pairs of t (or t itself), and optionally
    ``fourier_features`` random Fourier features of x (fixed Gaussian frequencies), which let a
    small MLP draw sharp edges. With ``arch = "concatsquash"`` every layer is instead gated by
    t, as in FFJORD's own 2D models (time features are then not used).

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
        # Harmonics pi * (1..k) of log(1 - t) over [0, 1] as 1 - t goes from 1 to 1e-3.
        late = config.late_features
        freq = math.pi * torch.arange(1, late + 1, dtype=torch.float32)
        self.register_buffer("u_freq", freq, persistent=False)  # runs from before it load
        self.squash = config.arch == "concatsquash"
        n_in = dim + 2 * f + (0 if self.squash else (2 * k if k else 1) + 2 * late)
        sizes = [n_in] + [config.width] * config.depth + [dim]
        make = ConcatSquash if self.squash else nn.Linear
        self.layers = nn.ModuleList(make(a, b) for a, b in itertools.pairwise(sizes))
        self.act = ACTIVATIONS[config.activation]()

    def features(self, t: Tensor, x: Tensor) -> Tensor:
        """Network input: x, time features (MLP only) and Fourier features of x."""
        parts = [x]
        if not self.squash:
            t = _column(t, x)
            parts += (
                [torch.sin(t * self.t_freq), torch.cos(t * self.t_freq)]
                if len(self.t_freq)
                else [t]
            )
            if len(self.u_freq):
                u = torch.log1p(LATE_EPS - t.clamp(max=1.0)) / math.log(LATE_EPS)
                parts += [torch.sin(u * self.u_freq), torch.cos(u * self.u_freq)]
        if self.x_freq.shape[1]:
            b = x @ self.x_freq
            parts += [torch.sin(b), torch.cos(b)]
        return torch.cat(parts, dim=1)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Velocity at time ``t`` (scalar, ``(N,)`` or ``(N, 1)``), points ``x`` ``(N, dim)``."""
        h = self.features(t, x)
        if self.squash:
            t = _column(t, x)
            for layer in self.layers[:-1]:
                h = self.act(layer(t, h))
            return self.layers[-1](t, h)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)


def _column(t: Tensor | float, x: Tensor) -> Tensor:
    """Time as an ``(N, 1)`` column matching ``x``."""
    t = torch.as_tensor(t).to(x)
    return t.expand(x.shape[0], 1) if t.dim() == 0 else t.reshape(-1, 1)


def build(config: Config) -> VectorField:
    """The field as ``config.field`` describes it, on ``2 + augment`` dimensions."""
    return VectorField(config.field, 2 + config.field.augment)
