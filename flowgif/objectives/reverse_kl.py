"""Reverse KL to an energy ``U`` known up to a constant: ``E_q[log q(x) + U(x)]``.

That is ``KL(q || p) - log Z``, an upper bound of ``-log Z``; it needs the flow's own samples
with their exact log-density (start points carried forward), not samples of the target, which
an energy does not have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowgif.config import Config
from flowgif.flows.model import Flow
from flowgif.objectives.base import Objective
from flowgif.sources import Source
from flowgif.sources.energies import energy

__all__ = ["ReverseKL"]


class ReverseKL(Objective):
    """Reverse KL on ``config.train.batch`` of the flow's samples (plus its penalties)."""

    needs_energy = True

    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        assert end.energy is not None
        z = flow.starts(config.train.batch, generator)
        x, logq, penalty = flow.fit_push(z, config.ffjord)
        bound = (logq + energy(end.energy, x)).mean()
        return bound + penalty, bound.detach()
