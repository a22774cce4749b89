"""Conditional flow matching: regress ``v(t, x_t)`` on straight paths from start to end.

With ``x_t = (1 - t) x_0 + t x_1``, ``x_0`` drawn from the flow's start (N(0, I), a picture
...) and ``x_1`` from the end, the field that minimises ``E |v(t, x_t) - (x_1 - x_0)|^2``
carries the start exactly onto the end (the objectives of torchcfm's
``sample_location_and_conditional_flow(x0, x1)`` and flow_matching's ``ProbPath.sample``).
Training needs no ODE solve, which is why it is orders of magnitude cheaper than maximum
likelihood.

Pairing (``fm.ot``): independent draws, or minibatch optimal transport, which reorders the
start points of each block of ``fm.ot_batch`` so that the pairs are an exact
optimal-transport assignment; the learned paths are then nearly straight and do not cross,
so a morph moves each particle nearly as little as optimal transport.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowgif.config import Config, FMConfig
from flowgif.flows.model import Flow, augment
from flowgif.objectives.base import Objective
from flowgif.sources import Source

__all__ = ["FlowMatching", "draw_times", "fm_batch", "fm_loss", "ot_pair", "sample_times", "times"]


class FlowMatching(Objective):
    """The flow-matching regression on one batch (a vector field only)."""

    fields_only = True
    bf16 = True

    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        n = config.train.batch
        x1 = end.density.sample(n, generator=generator)
        x1, _ = augment(x1, flow.dim - 2, generator)
        x0 = flow.starts(n, generator)
        loss = fm_loss(flow.module, x0, x1, config.fm, generator)
        return loss, loss.detach()


def sample_times(
    n: int, config: FMConfig, generator: torch.Generator, device: torch.device
) -> Tensor:
    """``(n, 1)`` training times in (0, 1): uniform, or logit-normal around ``time_loc``."""
    return times(draw_times(n, config, generator, device), config)


def draw_times(
    n: int, config: FMConfig, generator: torch.Generator, device: torch.device
) -> Tensor:
    """The random numbers of :func:`sample_times`: uniforms, or standard normals."""
    if config.time_sampling == "uniform":
        return torch.rand(n, 1, device=device, generator=generator)
    return torch.randn(n, 1, device=device, generator=generator)


def times(drawn: Tensor, config: FMConfig) -> Tensor:
    """Training times from :func:`draw_times`' numbers (any shape)."""
    if config.time_sampling == "uniform":
        return drawn
    return torch.sigmoid(config.time_loc + config.time_scale * drawn)


def ot_pair(x0: Tensor, x1: Tensor, block: int) -> Tensor:
    """Reorder ``x0`` so that ``(x0[i], x1[i])`` is an exact optimal-transport pairing within
    each block of ``block`` points (squared distances; the Hungarian algorithm of SciPy's
    ``linear_sum_assignment``, cubic in ``block``; bench/ot.py measures the block sizes)."""
    from scipy.optimize import linear_sum_assignment  # heavy import, only when OT is on

    out = torch.empty_like(x0)
    for start in range(0, len(x0), block):
        a, b = x0[start : start + block], x1[start : start + block]
        cost = torch.cdist(b.float(), a.float()).pow(2).cpu().numpy()
        _, cols = linear_sum_assignment(cost)
        out[start : start + block] = a[torch.as_tensor(cols, device=a.device)]
    return out


def fm_batch(
    x0: Tensor, x1: Tensor, config: FMConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of the regression from start points ``x0`` and end points ``x1`` ``(N, d)``:
    times ``t`` ``(N, 1)``, points ``x_t`` on the paths, and the target velocities."""
    if config.ot:
        x0 = ot_pair(x0, x1, config.ot_batch)
    t = sample_times(len(x1), config, generator, x1.device)
    xt = (1 - t) * x0 + t * x1
    if config.sigma > 0:
        xt = xt + config.sigma * torch.randn(x1.shape, device=x1.device, generator=generator)
    return t, xt, x1 - x0


def fm_loss(
    field: nn.Module, x0: Tensor, x1: Tensor, config: FMConfig, generator: torch.Generator
) -> Tensor:
    """Flow-matching loss on a batch of start points ``x0`` and end points ``x1`` ``(N, d)``."""
    t, xt, target = fm_batch(x0, x1, config, generator)
    return (field(t, xt) - target).pow(2).sum(1).mean()
