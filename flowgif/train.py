"""The training loop both trainers share, and ``train_run``: picture in, run folder out.

Adam with warm-up and cosine decay over the budget (steps or minutes, whichever ends first),
gradient clipping, an EMA of the weights for sampling, seeded RNG streams, periodic atomic
checkpoints. The loss is ``fm`` (flow matching), ``ffjord`` (maximum likelihood through the
ODE), reverse KL to an energy target, or, for the discrete flows, maximum likelihood through
their inverses.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flowgif import __version__
from flowgif.config import Config, dump_toml
from flowgif.errors import FlowgifError, Interrupted
from flowgif.flows import build, wrap
from flowgif.flows.model import sample
from flowgif.objectives import objective as objective_named
from flowgif.optim import Adam
from flowgif.recipes import check_ends, for_ends
from flowgif.run import (
    CHECKPOINT,
    atomic_write_text,
    check_new_run_dir,
    end_meta,
    load_checkpoint,
    native_bf16,
    resolve_device,
    save_checkpoint,
    write_loss_csv,
)
from flowgif.sources import NOISE, Distribution, Source, end_spec, load_source
from flowgif.sources.noise import Noise

__all__ = [
    "Progress",
    "RunFolder",
    "Source",
    "TrainResult",
    "TrainState",
    "budget_spent",
    "budget_text",
    "open_run",
    "train",
    "train_run",
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


@dataclass
class TrainResult:
    """The trained model (EMA weights when on) and what the run did."""

    model: nn.Module
    steps: int
    seconds: float
    loss: float
    losses: list[tuple[int, float, float, float]]


def lr_factor(config: Config, step: int, fraction: float) -> float:
    """Linear warm-up, then cosine decay to 1% over the budget (or constant)."""
    warm = min(1.0, (step + 1) / config.train.warmup) if config.train.warmup else 1.0
    if config.train.schedule == "constant":
        return warm
    return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


class TrainState:
    """Everything a training run changes: weights, EMA, optimiser, RNG, step, clock, log.

    Args:
        config: the run's config.
        module: the weights to train (a flow's ``module``), fresh or to be loaded by
            :meth:`resume`.
        device: where its random generator lives.
    """

    def __init__(self, config: Config, module: nn.Module, device: torch.device) -> None:
        tc = config.train
        self.model = module
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if tc.ema > 0 else None
        self.opt = Adam(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.gen = torch.Generator(device=device).manual_seed(tc.seed)
        self.step, self.spent, self.lr_scale = 0, 0.0, 1.0
        self.losses: list[tuple[int, float, float, float]] = []

    def resume(self, ckpt: dict) -> None:
        """Load a checkpoint (schema-checked by the caller) into this state.

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
        self.step, self.spent = int(ckpt["step"]), float(ckpt["seconds"])
        self.lr_scale = float(ckpt.get("lr_scale", 1.0))
        rows = ckpt["losses"].reshape(-1, 4).tolist()
        self.losses = [(int(s), t, v, lr) for s, t, v, lr in rows]

    def payload(self) -> dict:
        return {
            "field": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "step": self.step,
            "seconds": self.spent,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "lr_scale": self.lr_scale,
        }

    def snapshot(self) -> dict:
        """Known-good weights to roll back to (in memory)."""
        return copy.deepcopy(
            {
                "field": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
            }
        )

    def restore(self, snap: dict) -> None:
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

    One loop for every objective, flow family and pair of ends: Adam, the learning-rate
    schedule, gradient clipping, an EMA of the weights, rollback on a non-finite loss and
    checkpoints.

    Args:
        config: the full run configuration (adapted to the ends: :func:`flowgif.recipes.for_ends`).
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
    if tc.threads and device.type == "cpu":
        torch.set_num_threads(tc.threads)
    start = start or Noise()
    end = _as_source(end, "end")
    start = _as_source(start, NOISE if isinstance(start, Noise) else "start")
    check_ends(config, start, end)
    end = dataclasses.replace(end, density=end.density.to(device))
    torch.manual_seed(tc.seed)
    flow = wrap(build(config).to(device), config, start.density.to(device))
    state = TrainState(config, flow.module, device)
    if resume is not None:
        state.resume(resume)
    main, fine = objective_named(tc.objective), objective_named("likelihood")
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))

    saved_step = state.step if resume is not None else None  # the step the checkpoint holds

    def save() -> None:
        nonlocal saved_step
        if checkpoint is not None:
            checkpoint(state.payload())
            saved_step = state.step

    budget = tc.minutes * 60.0
    clock = time.perf_counter() - state.spent
    fraction = _fraction(tc.steps, budget, state.step, state.spent)
    if resume is not None and fraction >= 1.0:
        raise FlowgifError(
            f"the run already has {state.step} steps ({state.spent:.0f} s), which fills its "
            f"budget ({budget_text(tc.steps, tc.minutes)}); the budget counts from the run's "
            "start: give more steps or minutes to train further"
        )
    good, retries, loss_value = state.snapshot(), 0, float("nan")
    try:
        while fraction < 1.0:
            if stop is not None and stop():
                if state.step != saved_step and state.step > 0:
                    save()
                raise Interrupted(state.step, saved_step == state.step, saved_step)
            lr = tc.lr * state.lr_scale * lr_factor(config, state.step, fraction)
            state.opt.lr = lr
            objective = fine if tc.finetune and fraction >= 1 - tc.finetune else main
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16 and objective.bf16):
                loss, shown = objective.loss(flow, end, config, state.gen)
            state.opt.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(state.model.parameters(), tc.grad_clip or math.inf)
            loss_value = float(shown)
            if not (math.isfinite(loss_value) and math.isfinite(float(norm))):
                # Diverged: go back to the last good weights with half the learning rate.
                retries += 1
                if retries > MAX_RETRIES:
                    kept = (
                        f"the checkpoint of step {saved_step} is kept"
                        if saved_step is not None
                        else "nothing was saved"
                    )
                    raise FlowgifError(
                        f"training diverged at step {state.step} (loss {loss_value}), "
                        f"{MAX_RETRIES} times halving the learning rate did not help; {kept}; "
                        "lower the learning rate"
                    )
                state.restore(good)
                state.lr_scale *= 0.5
                continue
            state.opt.step()
            state.average(min(tc.ema, (1 + state.step) / (10 + state.step)))
            state.step += 1
            state.spent = time.perf_counter() - clock
            state.losses.append((state.step, state.spent, loss_value, lr))
            fraction = _fraction(tc.steps, budget, state.step, state.spent)
            if progress is not None:
                progress(Progress(state.step, fraction, loss_value, state.spent))
            if state.step % GOOD_EVERY == 0:
                good = state.snapshot()
            if state.step % tc.checkpoint_every == 0:
                save()
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        # Cut mid-step: the state is half of a step; keep the last checkpoint as it is.
        raise Interrupted(state.step, False, saved_step) from None
    if state.step != saved_step:
        save()
    if state.losses and not math.isfinite(loss_value):
        loss_value = state.losses[-1][2]
    out = state.ema if state.ema is not None else state.model
    return TrainResult(out.eval(), state.step, state.spent, loss_value, state.losses)


def _as_source(end: Source | Distribution, label: str) -> Source:
    """A bare distribution as a :class:`Source` (library use: ``train(config, density)``)."""
    if isinstance(end, Source):
        return end
    return Source(label, "", end)


def budget_spent(config: Config, checkpoint: dict) -> bool:
    """Whether a checkpoint's steps or seconds already fill ``config``'s budget."""
    tc = config.train
    return _fraction(tc.steps, tc.minutes * 60.0, checkpoint["step"], checkpoint["seconds"]) >= 1


def budget_text(steps: int, minutes: float) -> str:
    """``5000 steps``, ``3 min`` or ``5000 steps or 3 min``."""
    parts = ([f"{steps} steps"] if steps else []) + ([f"{minutes:g} min"] if minutes else [])
    return " or ".join(parts)


def _fraction(steps: int, budget: float, step: int, seconds: float) -> float:
    a = step / steps if steps else 0.0
    b = seconds / budget if budget else 0.0
    return max(a, b)


class RunFolder:
    """A run folder about to be trained: both ends, the adapted config, the checkpoint to
    resume (or None), and the writer of its files (:meth:`save`).

    Made by :func:`open_run`; :func:`train_run` trains one, :func:`flowgif.stack.train_stack`
    many at once.
    """

    def __init__(
        self, out: Path, end: Source, start: Source, config: Config, resume: dict | None
    ) -> None:
        self.out, self.end, self.start, self.config, self.resume = out, end, start, config, resume
        self.made = not out.exists()
        self.meta = {
            "config": config.to_dict(),
            "seed": config.train.seed,
            "image": end.stored_label,
            "image_hash": end.digest,
            **end_meta(end, config.density.invert),
            "flowgif": __version__,
        }
        if not start.is_noise:
            self.meta["start"] = {
                "label": start.stored_label,
                "hash": start.digest,
                **end_meta(start, config.density.invert),
                "blur": start.density.blur,
            }
        self._config_text = dump_toml(config.to_dict())
        self._saved = False

    def save(self, payload: dict) -> None:
        """Write one checkpoint: ``checkpoint.pt``, then ``config.toml`` (first time only, so
        it never runs ahead of a checkpoint) and ``loss.csv``, each atomically."""
        save_checkpoint(self.out / CHECKPOINT, {**self.meta, **payload})
        if not self._saved:
            atomic_write_text(self.out / "config.toml", self._config_text)
            self._saved = True
        write_loss_csv(self.out / "loss.csv", [tuple(r) for r in payload["losses"].tolist()])

    def discard_if_empty(self) -> None:
        """Remove the folder again if this run made it and never wrote into it."""
        if self.made and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def preview(self, model: nn.Module, device: torch.device) -> None:
        """``samples.png``: 50,000 samples of the trained flow over the picture."""
        from flowgif.draw import write_samples_png  # drawing is only needed at the end

        flow = wrap(model, self.config, self.start.density.to(device))
        x = sample(flow, 50_000, self.config.train.seed, device)
        density = self.end.density
        write_samples_png(
            self.out / "samples.png", self.end.picture, density.to_pixels(x), density.probs_np
        )


def open_run(
    image: Path | Source | None,
    config: Config,
    out: Path,
    resume: bool = False,
    text: str | None = None,
    target: str | None = None,
    start: str | Path | Source | None = None,
) -> RunFolder:
    """Load both ends and check the folder (see :func:`train_run` for the arguments).

    Raises:
        FlowgifError: a bad source, a damaged checkpoint, a run folder in the way, ends that
            cannot train together.
    """
    out = Path(out)
    end = (
        image
        if isinstance(image, Source)
        else load_source(end_spec(image, text, target), config.density)
    )
    config = for_ends(config, end)
    if not isinstance(start, Source):
        start = load_source(start if start is not None else NOISE, config.density, start=True)
    check_ends(config, start, end)
    state = None
    if resume:
        state = load_checkpoint(out / CHECKPOINT, for_resume=True)
        if state.get("image_hash") != end.digest:
            raise FlowgifError(f"{end.label} is not what {out} was trained on")
        if state.get("start", {}).get("hash", "") != ("" if start.is_noise else start.digest):
            raise FlowgifError(f"{out} was not trained from {start.label}")
    else:
        check_new_run_dir(out)
    return RunFolder(out, end, start, config, state)


def train_run(
    image: Path | Source | None,
    config: Config,
    out: Path,
    progress: Callable[[Progress], None] | None = None,
    resume: bool = False,
    preview: bool = True,
    text: str | None = None,
    target: str | None = None,
    stop: Callable[[], bool] | None = None,
    start: str | Path | Source | None = None,
) -> TrainResult:
    """Train from a start to a picture (or a word, or a toy target); write the run folder.

    The folder's files are written together at each checkpoint (``checkpoint.pt`` first, then
    ``config.toml`` and ``loss.csv``), each atomically, so a failure (a full disk, a kill)
    leaves the previous state whole; a new folder that got no checkpoint is removed again.
    The checkpoint records both ends (the start only when it is not N(0, I)), so the folder
    needs neither picture to render, sample or evaluate.

    Args:
        image: the end picture, or a loaded :class:`Source` (or None with ``text`` or
            ``target``).
        config: the run configuration (adapted to the end by :func:`flowgif.recipes.for_ends`,
            then written to ``out/config.toml``).
        out: the run folder; created if needed. Without ``resume`` it must not hold a run.
        progress: called after every step.
        resume: continue from ``out/checkpoint.pt`` (config and both ends must match).
        preview: write ``out/samples.png`` (50,000 samples) at the end.
        text: a word to set in type and fit instead of a picture.
        target: a toy density (:data:`flowgif.sources.toys.TOYS`) instead of a picture.
        stop: see :func:`train`.
        start: where the flow starts (:func:`flowgif.sources.load_source`: ``noise``, the
            default, a picture's path, ``text:WORD``, ``target:NAME``) or a loaded source.

    Raises:
        FlowgifError: a bad source, a damaged checkpoint, a run folder in the way, ends that
            cannot train together.
        Interrupted: ``stop`` asked (see :func:`train`).
    """
    run = open_run(image, config, out, resume, text, target, start)
    device = resolve_device(run.config.train.device)
    try:
        result = train(
            run.config,
            run.end,
            device,
            progress=progress,
            checkpoint=run.save,
            resume=run.resume,
            start=run.start,
            stop=stop,
        )
    except BaseException:
        run.discard_if_empty()
        raise
    if preview:
        run.preview(result.model, device)
    return result
