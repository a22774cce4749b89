"""Maximum likelihood of end samples: ``-E log q(x1)``, in nats.

For the field this is FFJORD (with RNODE's optional penalties): each step solves the augmented
ODE from the end back to the start with an adaptive solver and backpropagates through it with
the adjoint method; ``log q(x1) = log p_0(z) + delta`` uses the start's own log-density, so it
works from N(0, I) or from a picture alike. A discrete flow runs its layers backwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowgif.config import Config
from flowgif.flows.model import Flow
from flowgif.objectives.base import Objective
from flowgif.sources import Source

__all__ = ["Likelihood"]


class Likelihood(Objective):
    """Negative log-likelihood of a batch of end samples, plus the flow's penalties."""

    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        x1 = end.density.sample(config.train.batch, generator=generator)
        logq, penalty = flow.fit_log_prob(x1, config.ffjord, generator)
        nll = -logq.mean()
        return nll + penalty, nll.detach()
