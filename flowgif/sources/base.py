"""What every distribution a flow starts from or ends at offers (model coordinates, 2-D)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["Distribution"]


class Distribution(ABC):
    """A distribution on the plane, in the model's coordinates (centred on the origin).

    Attributes:
        half: its frame, half width and half height in model units: where a picture of it
            is drawn, and what the camera shows at its end of an animation.
    """

    half: tuple[float, float]

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples, ``(n, 2)`` float32."""

    def draws(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """The random numbers of ``sample(n, generator)``, in the order it draws them; with
        :meth:`place`, ``sample`` in two halves, so that many distributions can draw from
        their own generators and be placed together (:mod:`flowgif.fit.stack`)."""
        return [self.sample(n, generator)]

    def place(self, draws: list[Tensor]) -> Tensor:
        """The samples that :meth:`draws`' numbers make (``place(draws(n, g))`` is
        ``sample(n, g)``)."""
        return draws[0]

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density at points ``(N, 2)``, ``(N,)``."""

    @abstractmethod
    def entropy(self) -> float:
        """Exact differential entropy in nats."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Distribution:
        """The same distribution with its tensors on ``device``."""
