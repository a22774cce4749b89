"""The training loop: one policy for a solo run and for a stack of M runs.

The loop decides; a stepper computes. Per run (a *member*: one for a solo run, M for a stack)
the loop keeps the budget (steps or minutes, whichever ends first), the learning-rate schedule
(warm-up, cosine decay), rollback to the last good weights at half the learning rate on a
non-finite loss (failing after :data:`MAX_RETRIES`), the in-memory good snapshots, the
checkpoint cadence, stopping on a signal at a step boundary, and the final save. A stepper
(:class:`Stepper`) holds the weights, optimiser and random streams, and makes one step:
:mod:`flowgif.fit.solo` for any objective, :mod:`flowgif.fit.stack` for M flow-matching runs as
one model.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from flowgif.config import Config
from flowgif.errors import FlowgifError, Interrupted
from flowgif.store import budget_text, fraction

__all__ = [
    "GOOD_EVERY",
    "MAX_RETRIES",
    "Member",
    "Outcome",
    "Progress",
    "Stepper",
    "TrainResult",
    "lr_factor",
    "run_loop",
]

MAX_RETRIES = 4  # non-finite losses survived (each halves the learning rate) before giving up
GOOD_EVERY = 100  # steps between in-memory copies of known-good weights


@dataclass
class Progress:
    """What a progress display needs after each step."""

    step: int
    fraction: float  # of the budget used, in [0, 1]
    loss: float
    seconds: float
    model: Callable[[], nn.Module] | None = None  # the sampling weights now (the EMA when on)


@dataclass
class TrainResult:
    """The trained model (EMA weights when on) and what the run did."""

    model: nn.Module
    steps: int
    seconds: float
    loss: float
    losses: list[tuple[int, float, float, float]]


Outcome = TrainResult | FlowgifError | Interrupted


@dataclass
class Member:
    """One run's counters: step, clock, learning-rate scale, loss log, last checkpoint.

    Attributes:
        step: whole steps made.
        spent: seconds of training so far.
        lr_scale: halved at each rollback.
        losses: ``(step, seconds, loss, lr)`` per step.
        saved: the step its last checkpoint holds (None: never saved).
    """

    step: int = 0
    spent: float = 0.0
    lr_scale: float = 1.0
    losses: list[tuple[int, float, float, float]] = field(default_factory=list)
    saved: int | None = None
    retries: int = 0
    fraction: float = 0.0
    loss: float = math.nan
    outcome: Outcome | None = None

    @classmethod
    def resumed(cls, ckpt: dict[str, Any] | None) -> Member:
        """The counters a checkpoint holds (schema-checked by the caller), or fresh ones."""
        if ckpt is None:
            return cls()
        rows = ckpt["losses"].reshape(-1, 4).tolist()
        return cls(
            step=int(ckpt["step"]),
            spent=float(ckpt["seconds"]),
            lr_scale=float(ckpt.get("lr_scale", 1.0)),
            losses=[(int(s), t, v, lr) for s, t, v, lr in rows],
            saved=int(ckpt["step"]),
        )

    def payload(self) -> dict[str, Any]:
        """The counters' part of a checkpoint."""
        return {
            "step": self.step,
            "seconds": self.spent,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "lr_scale": self.lr_scale,
        }


class Stepper(Protocol):
    """The weights, optimiser state and random streams of one or more runs, and their step."""

    def forward(
        self, active: list[int], fractions: list[float]
    ) -> tuple[list[float], list[float]]:
        """Compute the loss and gradients of the ``active`` members; each member's loss and
        gradient norm (after clipping is computed, before it is applied)."""
        ...

    def update(self, stepping: list[int], lrs: list[float], steps: list[int]) -> None:
        """One optimiser step and EMA update for the members in ``stepping`` at learning
        rates ``lrs``; the others are left exactly as they are. ``steps``: each member's
        step count before this step."""
        ...

    def snapshot(self, m: int) -> Any:
        """Member ``m``'s known-good state (in memory)."""
        ...

    def restore(self, m: int, snap: Any) -> None: ...

    def payload(self, m: int, lr: float) -> dict[str, Any]:
        """Member ``m``'s weights, EMA, optimiser (at learning rate ``lr``) and generator, as
        a checkpoint holds them."""
        ...

    def model(self, m: int) -> nn.Module:
        """Member ``m``'s sampling weights (the EMA when on)."""
        ...


def lr_factor(config: Config, step: int, fraction: float) -> float:
    """Linear warm-up, then cosine decay to 1% over the budget (or constant)."""
    warm = min(1.0, (step + 1) / config.train.warmup) if config.train.warmup else 1.0
    if config.train.schedule == "constant":
        return warm
    return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def run_loop(
    stepper: Stepper,
    members: list[Member],
    config: Config,
    save: Callable[[int, dict[str, Any]], None] | None = None,
    progress: Callable[[list[Progress]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Train every member until its budget is spent, it fails, or ``stop`` asks.

    Args:
        stepper: the members' weights and their step.
        members: their counters (:meth:`Member.resumed` for a checkpoint).
        config: the training config they share.
        save: called with a member's index and checkpoint payload every
            ``checkpoint_every`` steps, when its budget is spent, and when ``stop`` asks.
        progress: called with each member's progress before the first step and after every
            step.
        stop: asked between steps; when it returns True each unfinished member is
            checkpointed at its last whole step and gets an ``Interrupted``. It may block
            (training paused): the time it holds is not counted as training.

    Returns:
        One outcome per member: a :class:`TrainResult`, the ``FlowgifError`` it failed with
        (a budget already spent on resume, training that diverged) or ``Interrupted`` (also
        when a KeyboardInterrupt cut a step: then nothing is saved, the last checkpoint stays).
    """
    loop = _Loop(stepper, members, config, save)

    def report() -> None:
        if progress is not None:
            progress(
                [
                    Progress(
                        m.step,
                        min(m.fraction, 1.0),
                        m.loss,
                        m.spent,
                        functools.partial(stepper.model, i),
                    )
                    for i, m in enumerate(members)
                ]
            )

    report()  # where it starts (a watcher sees the network before its first step)
    try:
        while active := loop.training():
            if stop is not None:
                asked = time.perf_counter()
                stopping = stop()
                loop.clock += time.perf_counter() - asked  # a pause is not training time
                if stopping:
                    loop.interrupt(active)
                    break
            loop.step(active)
            report()
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        for i in loop.training():  # cut mid-step: the last checkpoints stay as they are
            m = members[i]
            m.outcome = Interrupted(m.step, False, m.saved)
    return loop.finish()


class _Loop:
    """The policy of :func:`run_loop`, one method per moment of it."""

    def __init__(
        self,
        stepper: Stepper,
        members: list[Member],
        config: Config,
        save: Callable[[int, dict[str, Any]], None] | None,
    ) -> None:
        self.stepper, self.members, self.config, self.save = stepper, members, config, save
        tc = self.tc = config.train
        self.lrs = [tc.lr] * len(members)
        for m in members:
            m.fraction = fraction(tc.steps, tc.minutes, m.step, m.spent)
            if m.saved is not None and m.fraction >= 1.0:
                m.outcome = FlowgifError(
                    f"the run already has {m.step} steps ({m.spent:.0f} s), which fills its "
                    f"budget ({budget_text(tc.steps, tc.minutes)}); the budget counts from the "
                    "run's start: give more steps or minutes to train further"
                )
        self.good = [stepper.snapshot(i) for i in range(len(members))]
        self.clock, self.began = time.perf_counter(), [m.spent for m in members]

    def training(self) -> list[int]:
        """The members still training."""
        return [i for i, m in enumerate(self.members) if m.outcome is None and m.fraction < 1.0]

    def checkpoint(self, i: int) -> None:
        member = self.members[i]
        if self.save is not None:
            self.save(i, {**self.stepper.payload(i, self.lrs[i]), **member.payload()})
            member.saved = member.step

    def interrupt(self, active: list[int]) -> None:
        """Stop asked: checkpoint each active member's last whole step."""
        for i in active:
            m = self.members[i]
            if m.step != m.saved and m.step > 0:
                self.checkpoint(i)
            m.outcome = Interrupted(m.step, m.saved == m.step, m.saved)

    def step(self, active: list[int]) -> None:
        """One step of the active members; a non-finite loss or gradient rolls its member
        back to its last good weights at half the learning rate."""
        tc, members = self.tc, self.members
        for i in active:
            m = members[i]
            self.lrs[i] = tc.lr * m.lr_scale * lr_factor(self.config, m.step, m.fraction)
        values, norms = self.stepper.forward(active, [m.fraction for m in members])
        stepping = []
        for i in active:
            members[i].loss = values[i]
            if math.isfinite(values[i]) and math.isfinite(norms[i]):
                stepping.append(i)
            else:
                self.roll_back(i)
        self.stepper.update(stepping, self.lrs, [m.step for m in members])
        now = time.perf_counter() - self.clock
        for i in active:  # the clock runs on for a member that rolled back
            m = members[i]
            m.spent = self.began[i] + now
            if i in stepping:
                m.step += 1
                m.losses.append((m.step, m.spent, values[i], self.lrs[i]))
                if m.step % GOOD_EVERY == 0:
                    self.good[i] = self.stepper.snapshot(i)
            m.fraction = fraction(tc.steps, tc.minutes, m.step, m.spent)
            due = m.step % tc.checkpoint_every == 0 or m.fraction >= 1.0
            if m.outcome is None and m.step and m.step != m.saved and due:
                self.checkpoint(i)

    def roll_back(self, i: int) -> None:
        """Member ``i`` diverged: back to its last good weights, half its learning rate; it
        fails after :data:`MAX_RETRIES` times."""
        m = self.members[i]
        m.retries += 1
        if m.retries > MAX_RETRIES:
            kept = (
                f"the checkpoint of step {m.saved} is kept"
                if m.saved is not None
                else "nothing was saved"
            )
            m.outcome = FlowgifError(
                f"training diverged at step {m.step} (loss {m.loss}), {MAX_RETRIES} times "
                f"halving the learning rate did not help; {kept}; lower the learning rate"
            )
        self.stepper.restore(i, self.good[i])
        m.lr_scale *= 0.5

    def finish(self) -> list[Outcome]:
        """Save what is not saved yet; each member's outcome."""
        outcomes: list[Outcome] = []
        for i, m in enumerate(self.members):
            if m.outcome is None:
                if m.step != m.saved:
                    self.checkpoint(i)
                loss = m.losses[-1][2] if m.losses else m.loss
                model = self.stepper.model(i).eval()
                m.outcome = TrainResult(model, m.step, m.spent, loss, m.losses)
            outcomes.append(m.outcome)
        return outcomes
