"""The training loop both trainers share, and ``train_run``: picture in, run folder out.

Adam with warm-up and cosine decay over the budget (steps or minutes, whichever ends first),
gradient clipping, an EMA of the weights for sampling, seeded RNG streams, periodic atomic
checkpoints. The loss is ``fm`` (flow matching) or ``ffjord`` (maximum likelihood).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from flowgif import __version__
from flowgif.config import Config, dump_toml
from flowgif.density import ImageDensity, image_hash, ink_colors, load_image
from flowgif.energy import ENERGIES, WINDOWS, energy_density, reverse_kl_loss
from flowgif.errors import FlowgifError
from flowgif.ffjord import ffjord_loss
from flowgif.field import VectorField
from flowgif.fm import fm_loss
from flowgif.ode import AugmentedDynamics, sample
from flowgif.run import (
    CHECKPOINT,
    atomic_write_text,
    ink_tensor,
    load_checkpoint,
    native_bf16,
    resolve_device,
    save_checkpoint,
    write_loss_csv,
)
from flowgif.targets import WINDOW, text_image, toy_density, toy_picture

__all__ = ["Progress", "TrainResult", "train", "train_run"]

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
    """The trained field (EMA weights when on) and what the run did."""

    field: VectorField
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
) -> TrainResult:
    """Fit a vector field to ``density`` with ``config.train.method`` (and ``finetune``).

    Args:
        config: the full run configuration.
        density: the target (moved to ``device``).
        device: defaults to ``config.train.device`` resolved.
        progress: called after every step.
        checkpoint: called with a checkpoint payload every ``checkpoint_every`` steps, at the
            end, and on KeyboardInterrupt (which is then re-raised).
        resume: a loaded checkpoint to continue from.
        energy: the energy target (:data:`flowgif.energy.ENERGIES`) for ``method = reverse``.

    Returns:
        The trained field and a summary.
    """
    tc = config.train
    device = device or resolve_device(tc.device)
    if tc.threads and device.type == "cpu":
        torch.set_num_threads(tc.threads)
    density = density.to(device)
    torch.manual_seed(tc.seed)
    field = VectorField(config.field).to(device)
    ema = copy.deepcopy(field).requires_grad_(False) if tc.ema > 0 else None
    opt = torch.optim.Adam(field.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    gen = torch.Generator(device=device).manual_seed(tc.seed)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))
    ml = tc.method == "ffjord"
    reverse = tc.method == "reverse"
    if reverse and energy is None:
        raise FlowgifError("--method reverse fits an energy target: use --target u1 (to u4)")
    dyn = AugmentedDynamics(field) if ml or reverse or tc.finetune > 0 else None
    step, spent, losses, lr_scale = 0, 0.0, [], 1.0
    if resume is not None:
        field.load_state_dict(resume["field"])
        if ema is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        step, spent = int(resume["step"]), float(resume["seconds"])
        lr_scale = float(resume.get("lr_scale", 1.0))
        losses = [tuple(r) for r in resume["losses"].tolist()]
        losses = [(int(s), t, v, lr) for s, t, v, lr in losses]

    def payload() -> dict:
        return {
            "field": field.state_dict(),
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
                "field": field.state_dict(),
                "optimizer": opt.state_dict(),
                "ema": ema.state_dict() if ema else None,
            }
        )

    good, retries = snapshot(), 0

    budget = tc.minutes * 60.0
    start = time.perf_counter() - spent
    fraction = _fraction(tc.steps, budget, step, spent)
    loss_value = float("nan")
    try:
        while fraction < 1.0:
            lr = tc.lr * lr_scale * lr_factor(config, step, fraction)
            for group in opt.param_groups:
                group["lr"] = lr
            if reverse:
                loss, shown = reverse_kl_loss(dyn, energy, tc.batch, config.ffjord, gen, device)
            elif not (ml or fraction >= 1.0 - tc.finetune):
                x1 = density.sample(tc.batch, generator=gen)
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    loss = fm_loss(field, x1, config.fm, gen)
                shown = loss.detach()
            else:
                x1 = density.sample(tc.batch, generator=gen)
                loss, shown = ffjord_loss(dyn, x1, config.ffjord, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(field.parameters(), tc.grad_clip or math.inf)
            loss_value = float(shown)
            if not (math.isfinite(loss_value) and math.isfinite(float(norm))):
                # Diverged: go back to the last good weights with half the learning rate.
                retries += 1
                if retries > MAX_RETRIES:
                    raise FlowgifError(
                        f"training diverged at step {step} {retries} times (loss {loss_value}); "
                        "the last good checkpoint is kept; lower --lr"
                    )
                field.load_state_dict(good["field"])
                opt.load_state_dict(good["optimizer"])
                if ema is not None:
                    ema.load_state_dict(good["ema"])
                lr_scale *= 0.5
                continue
            opt.step()
            if ema is not None:
                decay = min(tc.ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(field.parameters()), 1 - decay)
            step += 1
            spent = time.perf_counter() - start
            losses.append((step, spent, loss_value, lr))
            fraction = _fraction(tc.steps, budget, step, spent)
            if progress is not None:
                progress(Progress(step, fraction, loss_value, spent))
            if step % GOOD_EVERY == 0:
                good = snapshot()
            if checkpoint is not None and step % tc.checkpoint_every == 0:
                checkpoint(payload())
    except KeyboardInterrupt:
        if checkpoint is not None:
            checkpoint(payload())
        raise
    if checkpoint is not None:
        checkpoint(payload())
    out = ema if ema is not None else field
    return TrainResult(out.eval(), step, spent, loss_value, losses)


def _fraction(steps: int, budget: float, step: int, seconds: float) -> float:
    a = step / steps if steps else 0.0
    b = seconds / budget if budget else 0.0
    return max(a, b)


@dataclass
class Source:
    """What a run is trained on: a picture file, a word set in type, or a toy density.

    Attributes:
        label: the picture's path, ``text:WORD`` or ``target:NAME`` (stored in the checkpoint).
        digest: SHA-256 identifying the content (a resumed run must match it).
        picture: the picture (toy densities: a grey rendering of the density).
        density: the density to fit.
        config: the config, with ``density.extent`` set to the toy window for toy targets (and
            ``train.method = reverse`` for energy targets).
        energy: the energy target's name, if it is one.
    """

    label: str
    digest: str
    picture: Image.Image
    density: ImageDensity
    config: Config
    energy: str | None = None

    @classmethod
    def load(
        cls,
        config: Config,
        image: Path | None = None,
        text: str | None = None,
        target: str | None = None,
    ) -> Source:
        """Exactly one of ``image``, ``text`` or ``target``."""
        if sum(x is not None for x in (image, text, target)) != 1:
            raise FlowgifError("give exactly one of --img PATH, --text WORD or --target NAME")
        dc = config.density
        if target is not None and target.lower() in ENERGIES:
            name = target.lower()
            density = energy_density(name, dc.resolution)
            if config.train.method != "reverse":
                config = config.updated({"train.method": "reverse"})
            config = config.updated({"density.extent": WINDOWS[name]})
            label = f"target:{name}"
            return cls(label, _digest(label), toy_picture(density), density, config, name)
        if target is not None:
            density = toy_density(target, dc.resolution)
            config = config.updated({"density.extent": WINDOW})
            label = f"target:{target.lower()}"
            return cls(label, _digest(label), toy_picture(density), density, config)
        if text is not None:
            img, label = text_image(text), f"text:{text}"
            digest = _digest(label)
        else:
            img, label, digest = (
                load_image(image),
                str(image),
                image_hash(image),
            )
        density = ImageDensity.from_image(img, dc.resolution, dc.invert, dc.ink_floor, dc.extent)
        return cls(label, digest, img, density, config)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def train_run(
    image: Path | Source | None,
    config: Config,
    out: Path,
    progress: Callable[[Progress], None] | None = None,
    resume: bool = False,
    preview: bool = True,
    text: str | None = None,
    target: str | None = None,
) -> TrainResult:
    """Train on a picture (or a word, or a toy target) and write the run folder ``out``.

    Args:
        image: the picture, or a loaded :class:`Source` (or None with ``text`` or ``target``).
        config: the run configuration (written to ``out/config.toml``).
        out: the run folder; created if needed.
        progress: called after every step.
        resume: continue from ``out/checkpoint.pt`` (config and image must match).
        preview: write ``out/samples.png`` (50,000 samples) at the end.
        text: a word to set in type and fit instead of a picture.
        target: a toy density (:data:`flowgif.targets.TOYS`) instead of a picture.
    """
    from flowgif.draw import write_samples_png  # drawing is only needed at the end

    out = Path(out)
    src = image if isinstance(image, Source) else Source.load(config, image, text, target)
    config, density, img = src.config, src.density, src.picture
    state = None
    if resume:
        state = load_checkpoint(out / CHECKPOINT)
        if state.get("image_hash") != src.digest:
            raise FlowgifError(f"{src.label} is not what {out} was trained on")
    atomic_write_text(out / "config.toml", dump_toml(config.to_dict()))
    meta = {
        "config": config.to_dict(),
        "seed": config.train.seed,
        "image": src.label,
        "image_hash": src.digest,
        "ink": ink_tensor(density),
        "size": list(density.size),
        "colors": torch.from_numpy(ink_colors(img, density.grid, config.density.invert)),
        "flowgif": __version__,
    }

    def save(payload: dict) -> None:
        save_checkpoint(out / CHECKPOINT, {**meta, **payload})
        write_loss_csv(out / "loss.csv", [tuple(r) for r in payload["losses"].tolist()])

    device = resolve_device(config.train.device)
    result = train(
        config,
        density,
        device,
        progress=progress,
        checkpoint=save,
        resume=state,
        energy=src.energy,
    )
    if not preview:
        return result
    sc = config.solve
    x = sample(
        result.field,
        50_000,
        config.train.seed,
        sc.method,
        sc.atol,
        sc.rtol,
        device,
        steps=sc.steps,
    )
    write_samples_png(out / "samples.png", img, density.to_pixels(x))
    return result
