"""What every objective offers: a loss on one batch, and what it needs of the end."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from flowgif.config import Config
from flowgif.flows.model import Flow
from flowgif.sources import Source

__all__ = ["Computed", "Objective"]


class Objective(ABC):
    """A way to fit a flow.

    Attributes:
        needs_energy: the end must be an energy (reverse KL); otherwise it must have samples.
        fields_only: only a vector field can be fitted this way (flow matching).
        bf16: its loss may run under bfloat16 autocast (``train.precision``); likelihoods,
            whose solves need error control, never do.
        trains: it takes steps (False: the flow is computed whole, no step to take).
    """

    needs_energy = False
    fields_only = False
    bf16 = False
    trains = True

    @abstractmethod
    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """This step's loss on ``config.train.batch`` points, and the figure to show (nats,
        without regularisers, for the two likelihood objectives)."""


class Computed(Objective):
    """The exact flow's "objective": nothing to fit, the flow is computed from its ends."""

    trains = False

    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("the exact flow takes no training step")
