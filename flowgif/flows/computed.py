"""What the computed flows share (the exact flow, :mod:`flowgif.flows.exact`, and the
optimal-transport flow, :mod:`flowgif.flows.transport`): a module with no weights, computed
from the run's ends, and an end law that is piecewise constant on the end's cells."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from flowgif.config import FFJORDConfig
from flowgif.errors import FlowgifError
from flowgif.flows.model import Flow
from flowgif.flows.ode import SolveStats
from flowgif.sources.picture import ImageDensity

__all__ = ["ComputedField", "ComputedFlow"]


class ComputedField(nn.Module):
    """A computed flow's module: no weights (the checkpoint keeps both ends instead)."""

    dim = 2
    family = ""
    name = ""

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        raise FlowgifError(f"the {self.name}'s field needs its ends: use its flow")


class ComputedFlow(Flow):
    """A flow computed from its ends; ``end`` is a density on cells."""

    end: ImageDensity
    name = ""

    @abstractmethod
    def landing(self) -> np.ndarray:
        """The mass the flow puts in each cell of the end ``(h * w,)``."""

    @abstractmethod
    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """The velocity at ``(t, x)``."""

    @property
    def field(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The velocity as a field is called (``--panels``' arrows, ``plot --kind field``)."""
        return self.velocity

    def log_prob(
        self,
        x: Tensor,
        stats: SolveStats | None = None,
        generator: torch.Generator | None = None,
        tol: float | None = None,
    ) -> Tensor:
        """``log q(x)`` of the flow's end points: piecewise constant, each cell's landing
        mass (:meth:`landing`) over its area."""
        if not hasattr(self, "_log_q"):
            q = self.landing() / self.end.cell_area
            self._log_q = torch.as_tensor(np.log(np.maximum(q, 1e-30)), dtype=torch.float32)
        inside = (x[:, 0].abs() <= self.end.half[0]) & (x[:, 1].abs() <= self.end.half[1])
        out = self._log_q[self.end.cell_index(x)].to(x.device)
        return torch.where(inside, out, torch.full_like(out, math.log(1e-30)))

    def fit_log_prob(
        self, x1: Tensor, config: FFJORDConfig, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        raise FlowgifError(f"the {self.name} is computed, not trained")

    def fit_push(self, z: Tensor, config: FFJORDConfig) -> tuple[Tensor, Tensor, Tensor]:
        raise FlowgifError(f"the {self.name} is computed, not trained")
