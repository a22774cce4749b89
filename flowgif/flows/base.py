"""What every discrete flow shares: a stack of invertible layers with exact log-determinants.

Generation runs noise -> picture: ``x = f_K(... f_1(z))`` with ``z ~ N(0, I)``. Each layer
returns its ``log |det df/dz|``, so ``log q(x) = log N(z) - sum_k log |det J_k|``. The layer
outputs ``S_0 = z, S_1, ..., S_K = x`` are what a discrete flow's animation can show: the
classic GIFs interpolate linearly between them, which is all a stack of layers has to offer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowgif.sources.noise import normal_log_prob

__all__ = ["DiscreteFlow", "Layer"]


class Layer(nn.Module):
    """An invertible map of ``(N, 2)`` points with its log-determinant."""

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``x = f(z)`` and ``log |det df/dz|``, ``(N, 2)`` and ``(N,)``."""
        raise NotImplementedError

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z = f^-1(x)`` and the forward ``log |det df/dz|`` at that ``z``."""
        raise NotImplementedError


class DiscreteFlow(nn.Module):
    """A stack of layers carrying N(0, I) to the picture.

    Args:
        layers: the layers, applied in order from the noise.
        family: the family's name (``realnvp``, ``planar``, ``radial``).
    """

    dim = 2  # dimension of the noise

    def __init__(self, layers: list[Layer], family: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.family = family

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Noise ``(N, 2)`` to samples, and ``log q`` of each sample ``(N,)``."""
        logq = normal_log_prob(z)
        for layer in self.layers:
            z, ladj = layer(z)
            logq = logq - ladj
        return z, logq

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log q(x)`` at picture-side points ``(N, 2)``, by running the stack backwards."""
        ladj = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for layer in reversed(self.layers):
            x, step = layer.inverse(x)
            ladj = ladj + step
        return normal_log_prob(x) - ladj

    def stages(self, z: Tensor) -> Tensor:
        """The layer outputs ``S_0 = z, ..., S_K``, ``(K + 1, N, 2)``."""
        out = [z]
        for layer in self.layers:
            z = layer(z)[0]
            out.append(z)
        return torch.stack(out)

    def paths(self, z: Tensor, times: Tensor) -> Tensor:
        """Points at ``times`` in [0, 1], ``(T, N, 2)``: layer ``k`` of ``K`` lands at
        ``t = k / K``, with straight lines between (the tutorials' interpolation)."""
        stages = self.stages(z)
        s = times.to(z).clamp(0, 1) * (len(stages) - 1)
        k = s.floor().long().clamp(max=len(stages) - 2)
        w = (s - k)[:, None, None]
        return (1 - w) * stages[k] + w * stages[k + 1]
