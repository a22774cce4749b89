"""The training loop both trainers share, and ``train_run``: picture in, run folder out.

Adam with warm-up and cosine decay over the budget (steps or minutes, whichever ends first),
gradient clipping, an EMA of the weights for sampling, seeded RNG streams, periodic atomic
checkpoints. The loss is ``fm`` (flow matching), ``ffjord`` (maximum likelihood through the
ODE), reverse KL to an energy target, or, for the discrete flows, maximum likelihood through
their inverses.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from flowgif import __version__
from flowgif.config import Config, dump_toml
from flowgif.density import ImageDensity, ink_colors
from flowgif.energy import energy as energy_of
from flowgif.energy import reverse_kl_loss
from flowgif.errors import FlowgifError, Interrupted
from flowgif.ffjord import ffjord_loss
from flowgif.flows import FAMILIES
from flowgif.fm import fm_loss
from flowgif.model import augment, build_model, sample, wrap
from flowgif.ode import AugmentedDynamics
from flowgif.run import (
    CHECKPOINT,
    atomic_write_text,
    check_new_run_dir,
    ink_tensor,
    load_checkpoint,
    native_bf16,
    resolve_device,
    save_checkpoint,
    write_loss_csv,
)
from flowgif.source import Source

__all__ = [
    "Progress",
    "Source",
    "TrainResult",
    "budget_spent",
    "budget_text",
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


def train(
    config: Config,
    density: ImageDensity,
    device: torch.device | None = None,
    progress: Callable[[Progress], None] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    energy: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fit a flow to ``density`` with ``config.train.method`` (and ``finetune``).

    Args:
        config: the full run configuration.
        density: the target (moved to ``device``).
        device: defaults to ``config.train.device`` resolved.
        progress: called after every step.
        checkpoint: called with a checkpoint payload every ``checkpoint_every`` steps, at the
            end, and when ``stop`` asks for it.
        resume: a loaded checkpoint to continue from (validated by the caller).
        energy: an energy target (:data:`flowgif.energy.ENERGIES`): fitted by reverse KL.
        stop: asked between steps; when it returns True the state after the last whole step is
            checkpointed and :class:`~flowgif.errors.Interrupted` raised, so that a resumed
            run continues bit for bit (a signal handler sets a flag this reads).

    Returns:
        The trained model and a summary.

    Raises:
        Interrupted: ``stop`` asked, or a KeyboardInterrupt arrived mid-step (then nothing is
            saved: a state cut mid-step would not resume exactly; the last checkpoint stays).
        FlowgifError: the budget is already spent (on resume), or training diverged.
    """
    tc = config.train
    device = device or resolve_device(tc.device)
    if tc.threads and device.type == "cpu":
        torch.set_num_threads(tc.threads)
    density = density.to(device)
    torch.manual_seed(tc.seed)
    model = build_model(config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if tc.ema > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    gen = torch.Generator(device=device).manual_seed(tc.seed)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))
    if tc.method == "reverse" and energy is None:
        raise FlowgifError("--method reverse fits an energy target: use --target u1 (to u4)")
    discrete = tc.method in FAMILIES
    dyn = None if discrete else AugmentedDynamics(model)  # the ODE with its log-density

    def objective(fraction: float) -> tuple[Tensor, Tensor]:
        """This step's loss, and the figure to show (nats, without regularisers)."""
        if discrete:  # exact log-densities through the layers: reverse KL or likelihood
            if energy is not None:
                x, logq = model(torch.randn(tc.batch, 2, device=device, generator=gen))
                loss = (logq + energy_of(energy, x)).mean()
            else:
                loss = -model.log_prob(density.sample(tc.batch, generator=gen)).mean()
            return loss, loss.detach()
        if energy is not None:
            return reverse_kl_loss(dyn, energy, tc.batch, config.ffjord, gen, device)
        x1 = density.sample(tc.batch, generator=gen)
        x1, log_r = augment(x1, config.field.augment, gen)
        if tc.method == "fm" and fraction < 1.0 - tc.finetune:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = fm_loss(model, x1, config.fm, gen)
            return loss, loss.detach()
        loss, nll = ffjord_loss(dyn, x1, config.ffjord, gen)
        return loss, nll + log_r.mean()

    step, spent, losses, lr_scale = 0, 0.0, [], 1.0
    if resume is not None:
        try:
            model.load_state_dict(resume["field"])
            if ema is not None and resume.get("ema") is not None:
                ema.load_state_dict(resume["ema"])
            opt.load_state_dict(resume["optimizer"])
            gen.set_state(resume["generator"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
            raise FlowgifError(
                f"the checkpoint does not fit its own config, so it cannot be resumed ({reason})"
            ) from None
        step, spent = int(resume["step"]), float(resume["seconds"])
        lr_scale = float(resume.get("lr_scale", 1.0))
        losses = [tuple(r) for r in resume["losses"].reshape(-1, 4).tolist()]
        losses = [(int(s), t, v, lr) for s, t, v, lr in losses]

    def payload() -> dict:
        return {
            "field": model.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "step": step,
            "seconds": spent,
            "losses": torch.tensor(losses, dtype=torch.float64),
            "lr_scale": lr_scale,
        }

    def snapshot() -> dict:
        return copy.deepcopy(
            {
                "field": model.state_dict(),
                "optimizer": opt.state_dict(),
                "ema": ema.state_dict() if ema else None,
            }
        )

    good, retries = snapshot(), 0
    saved_step = step if resume is not None else None  # the step the checkpoint holds

    def save() -> None:
        nonlocal saved_step
        if checkpoint is not None:
            checkpoint(payload())
            saved_step = step

    budget = tc.minutes * 60.0
    start = time.perf_counter() - spent
    fraction = _fraction(tc.steps, budget, step, spent)
    if resume is not None and fraction >= 1.0:
        raise FlowgifError(
            f"the run already has {step} steps ({spent:.0f} s), which fills its budget "
            f"({budget_text(tc.steps, tc.minutes)}); the budget counts from the run's start: "
            "give more steps or minutes to train further"
        )
    loss_value = float("nan")
    try:
        while fraction < 1.0:
            if stop is not None and stop():
                if step != saved_step and step > 0:
                    save()
                raise Interrupted(step, saved_step == step, saved_step)
            lr = tc.lr * lr_scale * lr_factor(config, step, fraction)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, shown = objective(fraction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or math.inf)
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
                        f"training diverged at step {step} (loss {loss_value}), "
                        f"{MAX_RETRIES} times halving the learning rate did not help; {kept}; "
                        "lower the learning rate"
                    )
                model.load_state_dict(good["field"])
                opt.load_state_dict(good["optimizer"])
                if ema is not None:
                    ema.load_state_dict(good["ema"])
                lr_scale *= 0.5
                continue
            opt.step()
            if ema is not None:
                decay = min(tc.ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
                for mine, theirs in zip(ema.buffers(), model.buffers(), strict=True):
                    mine.copy_(theirs)  # batch-norm statistics are not averaged
            step += 1
            spent = time.perf_counter() - start
            losses.append((step, spent, loss_value, lr))
            fraction = _fraction(tc.steps, budget, step, spent)
            if progress is not None:
                progress(Progress(step, fraction, loss_value, spent))
            if step % GOOD_EVERY == 0:
                good = snapshot()
            if step % tc.checkpoint_every == 0:
                save()
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        # Cut mid-step: the state is half of a step; keep the last checkpoint as it is.
        raise Interrupted(step, False, saved_step) from None
    if step != saved_step:
        save()
    if losses and not math.isfinite(loss_value):
        loss_value = losses[-1][2]
    out = ema if ema is not None else model
    return TrainResult(out.eval(), step, spent, loss_value, losses)


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
) -> TrainResult:
    """Train on a picture (or a word, or a toy target) and write the run folder ``out``.

    The folder's files are written together at each checkpoint (``checkpoint.pt`` first, then
    ``config.toml`` and ``loss.csv``), each atomically, so a failure (a full disk, a kill)
    leaves the previous state whole; a new folder that got no checkpoint is removed again.

    Args:
        image: the picture, or a loaded :class:`Source` (or None with ``text`` or ``target``).
        config: the run configuration (written to ``out/config.toml``).
        out: the run folder; created if needed. Without ``resume`` it must not hold a run.
        progress: called after every step.
        resume: continue from ``out/checkpoint.pt`` (config and image must match).
        preview: write ``out/samples.png`` (50,000 samples) at the end.
        text: a word to set in type and fit instead of a picture.
        target: a toy density (:data:`flowgif.targets.TOYS`) instead of a picture.
        stop: see :func:`train`.

    Raises:
        FlowgifError: a bad source, a damaged checkpoint, a run folder in the way.
        Interrupted: ``stop`` asked (see :func:`train`).
    """
    from flowgif.draw import write_samples_png  # drawing is only needed at the end

    out = Path(out)
    src = image if isinstance(image, Source) else Source.load(config, image, text, target)
    config, density, img = src.config, src.density, src.picture
    state = None
    if resume:
        state = load_checkpoint(out / CHECKPOINT, for_resume=True)
        if state.get("image_hash") != src.digest:
            raise FlowgifError(f"{src.label} is not what {out} was trained on")
    else:
        check_new_run_dir(out)
    made = not out.exists()
    meta = {
        "config": config.to_dict(),
        "seed": config.train.seed,
        "image": src.stored_label,
        "image_hash": src.digest,
        "ink": ink_tensor(density),
        "size": list(density.size),
        "colors": torch.from_numpy(
            ink_colors(
                img,
                density.grid,
                config.density.invert,
                density.ink.ink if density.ink is not None else None,
            )
        ),
        "flowgif": __version__,
    }
    text_config = dump_toml(config.to_dict())

    saved: list[bool] = []

    def save(payload: dict) -> None:
        save_checkpoint(out / CHECKPOINT, {**meta, **payload})
        if not saved:  # after this call's first checkpoint: config.toml never runs ahead of it
            atomic_write_text(out / "config.toml", text_config)
            saved.append(True)
        write_loss_csv(out / "loss.csv", [tuple(r) for r in payload["losses"].tolist()])

    device = resolve_device(config.train.device)
    try:
        result = train(
            config,
            density,
            device,
            progress=progress,
            checkpoint=save,
            resume=state,
            energy=src.energy,
            stop=stop,
        )
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a folder this call made and never wrote into
        raise
    if not preview:
        return result
    x = sample(wrap(result.model, config), 50_000, config.train.seed, device)
    write_samples_png(out / "samples.png", img, density.to_pixels(x), density.probs_np)
    return result
