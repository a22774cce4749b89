"""One run's training: its weights and step for any objective and flow family, and ``train``.

Adam with warm-up and cosine decay over the budget, gradient clipping, an EMA of the weights
for sampling, seeded random streams: :class:`Weights` holds them, :class:`SoloStepper` makes
one step of ``fm`` (flow matching), ``likelihood`` (FFJORD through the adjoint ODE, or a
discrete flow's inverse) or ``reverse`` (reverse KL to an energy), and the policy around the
steps is :func:`flowgif.fit.loop.run_loop`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from flowgif.config import Config
from flowgif.device import native_bf16, resolve_device, set_threads
from flowgif.errors import FlowgifError
from flowgif.fit.loop import Member, Progress, TrainResult, run_loop
from flowgif.fit.memory import check_fits
from flowgif.fit.optim import Adam
from flowgif.flows import build, wrap
from flowgif.flows.model import Flow
from flowgif.objectives import objective as objective_named
from flowgif.objectives.recipes import check_ends
from flowgif.sources import NOISE, Distribution, Source
from flowgif.sources.noise import Noise

__all__ = ["SoloStepper", "Weights", "train"]


class Weights:
    """What training changes in one run apart from its counters: weights, EMA, Adam, RNG.

    Args:
        config: the run's config.
        module: the weights to train (a flow's ``module``), fresh or to be loaded by
            :meth:`load`.
        device: where its random generator lives.
    """

    def __init__(self, config: Config, module: nn.Module, device: torch.device) -> None:
        tc = config.train
        self.model = module
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if tc.ema > 0 else None
        self.opt = Adam(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.gen = torch.Generator(device=device).manual_seed(tc.seed)

    def load(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint's tensors (schema-checked by the caller).

        Raises:
            FlowgifError: its weights or optimiser state do not fit the config.
        """
        try:
            self.model.load_state_dict(ckpt["field"])
            if self.ema is not None and ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.gen.set_state(ckpt["generator"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
            raise FlowgifError(
                f"the checkpoint does not fit its own config, so it cannot be resumed ({reason})"
            ) from None

    def payload(self, lr: float) -> dict[str, Any]:
        """Weights, EMA, optimiser (at learning rate ``lr``) and generator for a checkpoint."""
        self.opt.lr = lr
        return {
            "field": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
        }

    def snapshot(self) -> dict[str, Any]:
        """Known-good weights to roll back to (in memory)."""
        return copy.deepcopy(
            {
                "field": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
            }
        )

    def restore(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["field"])
        self.opt.load_state_dict(snap["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(snap["ema"])

    def average(self, decay: float) -> None:
        """One EMA update (batch-norm statistics are copied, not averaged)."""
        if self.ema is None:
            return
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
        for mine, theirs in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            mine.copy_(theirs)


def ema_decay(config: Config, step: int) -> float:
    """The EMA's decay at ``step``: short memory early, ``train.ema`` later."""
    return min(config.train.ema, (1 + step) / (10 + step))


class SoloStepper:
    """One run's step (a :class:`~flowgif.fit.loop.Stepper` of one member): the objective's
    loss, its gradient, clipping, Adam and the EMA; ``train.finetune`` switches to maximum
    likelihood for the budget's last part."""

    def __init__(
        self, config: Config, flow: Flow, end: Source, weights: Weights, device: torch.device
    ) -> None:
        self.config, self.flow, self.end, self.w = config, flow, end, weights
        tc = config.train
        self.main, self.fine = objective_named(tc.objective), objective_named("likelihood")
        self.device = device
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))

    def forward(
        self, active: list[int], fractions: list[float]
    ) -> tuple[list[float], list[float]]:
        tc = self.config.train
        objective = self.fine if tc.finetune and fractions[0] >= 1 - tc.finetune else self.main
        with torch.autocast(
            self.device.type, torch.bfloat16, enabled=self.bf16 and objective.bf16
        ):
            loss, shown = objective.loss(self.flow, self.end, self.config, self.w.gen)
        self.w.opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.w.model.parameters(), tc.grad_clip or math.inf)
        return [float(shown)], [float(norm)]

    def update(self, stepping: list[int], lrs: list[float], steps: list[int]) -> None:
        if stepping:
            self.w.opt.lr = lrs[0]
            self.w.opt.step()
            self.w.average(ema_decay(self.config, steps[0]))

    def snapshot(self, m: int) -> dict[str, Any]:
        return self.w.snapshot()

    def restore(self, m: int, snap: dict[str, Any]) -> None:
        self.w.restore(snap)

    def payload(self, m: int, lr: float) -> dict[str, Any]:
        return self.w.payload(lr)

    def model(self, m: int) -> nn.Module:
        return self.w.ema if self.w.ema is not None else self.w.model


def train(
    config: Config,
    end: Source | Distribution,
    device: torch.device | None = None,
    progress: Callable[[Progress], None] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    start: Source | Distribution | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fit a flow from ``start`` to ``end`` with ``config.train.objective`` (and ``finetune``).

    One loop for every objective, flow family and pair of ends
    (:func:`~flowgif.fit.loop.run_loop`): Adam, the learning-rate schedule, gradient
    clipping, an EMA of the weights, rollback on a non-finite loss and checkpoints.

    Args:
        config: the full run configuration (adapted to the ends:
            :func:`flowgif.objectives.recipes.for_ends`).
        end: the distribution at t = 1 (a bare distribution is taken as a sampled end).
        device: defaults to ``config.train.device`` resolved.
        progress: called after every step.
        checkpoint: called with a checkpoint payload every ``checkpoint_every`` steps, at the
            end, and when ``stop`` asks for it.
        resume: a loaded checkpoint to continue from (validated by the caller).
        start: the distribution at t = 0 (default N(0, I)).
        stop: asked between steps; when it returns True the state after the last whole step is
            checkpointed and :class:`~flowgif.errors.Interrupted` raised, so that a resumed
            run continues bit for bit (a signal handler sets a flag this reads).

    Returns:
        The trained model and a summary.

    Raises:
        Interrupted: ``stop`` asked, or a KeyboardInterrupt arrived mid-step (then nothing is
            saved: a state cut mid-step would not resume exactly; the last checkpoint stays).
        FlowgifError: ends that cannot train together, the budget already spent (on resume),
            or training diverged.
    """
    tc = config.train
    device = device or resolve_device(tc.device)
    check_fits(config, device)  # before anything is allocated: one line, not a killed process
    set_threads(tc.threads, device)
    start = start or Noise()
    end = _as_source(end, "end")
    start = _as_source(start, NOISE if isinstance(start, Noise) else "start")
    check_ends(config, start, end)
    end = dataclasses.replace(end, density=end.density.to(device))
    torch.manual_seed(tc.seed)
    flow = wrap(build(config).to(device), config, start.density.to(device), end.density)
    weights = Weights(config, flow.module, device)
    if resume is not None:
        weights.load(resume)
    if not objective_named(tc.objective).trains:  # computed whole (the exact flow): no step
        member = Member.resumed(resume)
        if checkpoint is not None:
            checkpoint({**weights.payload(tc.lr), **member.payload()})
        return TrainResult(flow.module.eval(), member.step, member.spent, math.nan, [])
    stepper = SoloStepper(config, flow, end, weights, device)

    def save(m: int, payload: dict[str, Any]) -> None:
        checkpoint(payload)  # type: ignore[misc]

    def report(ps: list[Progress]) -> None:
        if progress is not None:
            progress(ps[0])

    member = Member.resumed(resume)
    (outcome,) = run_loop(stepper, [member], config, save if checkpoint else None, report, stop)
    if not isinstance(outcome, TrainResult):
        raise outcome
    return outcome


def _as_source(end: Source | Distribution, label: str) -> Source:
    """A bare distribution as a :class:`Source` (library use: ``train(config, density)``)."""
    if isinstance(end, Source):
        return end
    return Source(label, "", end)
