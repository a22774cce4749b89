"""N(0, I): the usual start of a flow, and one distribution among the others."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowgif.sources.base import Distribution

__all__ = ["Noise", "normal_log_prob"]

RADIUS = 3.0  # the frame of N(0, I): 3 standard deviations hold 98.9 % of it in 2-D


def normal_log_prob(z: Tensor) -> Tensor:
    """Log-density of N(0, I) at ``z`` ``(N, d)``."""
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


class Noise(Distribution):
    """The standard normal N(0, I) in two dimensions.

    Example:
        >>> Noise().sample(5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """

    half = (RADIUS, RADIUS)

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, 2, device=self.device, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        return normal_log_prob(x)

    def entropy(self) -> float:
        return 1.0 + math.log(2 * math.pi)

    def to(self, device: torch.device | str) -> Noise:
        return Noise(device)
