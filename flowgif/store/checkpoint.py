"""Checkpoints: the format, its schema check, saving atomically and loading untrusted files.

A run folder ``runs/<name>/`` holds ``config.toml``, ``checkpoint.pt`` (weights, EMA weights,
optimiser and RNG state, config, seed, flowgif version, and both ends: the end's label, hash,
working ink grid and colours at the top level, the start's under ``start`` when it is not
N(0, I), so it needs nothing else), ``loss.csv`` and ``samples.png``; ``eval.json`` and
renders join later. Checkpoints load with ``torch.load(weights_only=True)``: tensors and plain
values, never code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowgif import __version__
from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.files import atomic_write, atomic_write_text
from flowgif.sources import Source
from flowgif.sources.picture import ImageDensity, ink_colors

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "LIVE",
    "checkpoint_config",
    "checkpoint_problem",
    "end_meta",
    "ink_tensor",
    "load_checkpoint",
    "loss_csv_text",
    "save_checkpoint",
    "write_loss_csv",
]

CHECKPOINT = "checkpoint.pt"
LIVE = "live.pt"  # a run training with --live: its sampling weights now, the checkpoint's schema
FORMAT = "flowgif-checkpoint/1"


def loss_csv_text(rows: list[tuple[int, float, float, float]]) -> str:
    """``step,seconds,loss,lr`` per logged step, as ``loss.csv`` holds it."""
    lines = ["step,seconds,loss,lr"]
    lines += [f"{int(s)},{t:.3f},{v:.6g},{lr:.6g}" for s, t, v, lr in rows]
    return "\n".join(lines) + "\n"


def write_loss_csv(path: Path, rows: list[tuple[int, float, float, float]]) -> None:
    """``loss.csv`` (:func:`loss_csv_text`), atomically."""
    atomic_write_text(path, loss_csv_text(rows))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors and plain values only) atomically."""
    atomic_write(
        path, lambda f: torch.save({"format": FORMAT, "version": __version__, **payload}, f)
    )


def load_checkpoint(path: Path, for_resume: bool = False) -> dict[str, Any]:
    """Load an untrusted checkpoint: tensors and plain values only, never code; schema checked.

    Args:
        path: the ``checkpoint.pt``.
        for_resume: also require what resuming needs (optimiser and RNG state, step, losses).

    Raises:
        FlowgifError: missing, truncated, not a flowgif checkpoint, carrying code, from an
            incompatible format version, or with a field missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FlowgifError(f"no checkpoint at {path}; train first with `flowgif train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files; all mean the same here
        reason = (
            "it carries code or objects that are not plain data"
            if "weights_only" in str(err) or "Unsupported" in str(err)
            else "it is truncated or corrupt"
        )
        raise FlowgifError(f"cannot load {path}: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else None
        raise FlowgifError(
            f"{path} is not a {FORMAT} checkpoint (found {found!r}); retrain it "
            "with this version of flowgif"
        )
    problem = checkpoint_problem(ckpt, for_resume)
    if problem:
        raise FlowgifError(f"{path} is damaged: {problem}")
    return ckpt


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_state(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def checkpoint_problem(ckpt: dict[str, Any], for_resume: bool = False) -> str:
    """What is wrong with a loaded checkpoint's fields, or "" (the schema; see the module)."""
    if not isinstance(ckpt.get("config"), dict):
        return "no config"
    size = ckpt.get("size")
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(_is_int(v) and 0 < v <= 1_000_000 for v in size)
    ):
        return f"size must be two positive whole numbers, found {size!r}"
    ink = ckpt.get("ink")
    if not (isinstance(ink, torch.Tensor) and ink.ndim == 2 and ink.numel() > 0):
        return "the ink grid is missing or not a 2-D tensor"
    if not (ink.is_floating_point() and torch.isfinite(ink).all() and (ink >= 0).all()):
        return "the ink grid has negative or non-finite values"
    if float(ink.sum()) <= 0:
        return "the ink grid is blank"
    colors = ckpt.get("colors")
    if not (isinstance(colors, torch.Tensor) and colors.numel() == 3 * ink.numel()):
        return "the colour grid is missing or does not match the ink grid"
    if not torch.isfinite(colors.float()).all():
        return "the colour grid has non-finite values"
    if not _is_state(ckpt.get("field")):
        return "no weights"
    if ckpt.get("ema") is not None and not _is_state(ckpt["ema"]):
        return "the averaged weights are malformed"
    for key in ("field", "ema"):
        weights = ckpt.get(key) or {}
        if any(w.is_floating_point() and not torch.isfinite(w).all() for w in weights.values()):
            return f"the {'averaged ' if key == 'ema' else ''}weights hold NaN or infinite values"
    for key in ("image", "image_hash"):
        if key in ckpt and not isinstance(ckpt[key], str):
            return f"{key} must be text"
    if "start" in ckpt:
        problem = _start_problem(ckpt["start"])
        if problem:
            return f"the start: {problem}"
    if not for_resume:
        return ""
    if not isinstance(ckpt.get("optimizer"), dict):
        return "no optimiser state (it cannot be resumed; it can still be rendered)"
    gen = ckpt.get("generator")
    if not (isinstance(gen, torch.Tensor) and gen.dtype == torch.uint8 and gen.ndim == 1):
        return "no random-generator state (it cannot be resumed; it can still be rendered)"
    step, seconds = ckpt.get("step"), ckpt.get("seconds")
    if not (_is_int(step) and step >= 0):
        return f"step must be a whole number >= 0, found {step!r}"
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        return f"seconds must be a number >= 0, found {seconds!r}"
    losses = ckpt.get("losses")
    if not (
        isinstance(losses, torch.Tensor)
        and (losses.numel() == 0 or (losses.ndim == 2 and losses.shape[1] == 4))
    ):
        return "the loss log is malformed"
    scale = ckpt.get("lr_scale", 1.0)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        return f"lr_scale must be a number > 0, found {scale!r}"
    return ""


def _start_problem(start: Any) -> str:
    """What is wrong with a checkpoint's ``start`` record (a picture, word or toy), or ""."""
    if not isinstance(start, dict):
        return "it is not a table"
    for key in ("label", "hash"):
        if not isinstance(start.get(key), str):
            return f"{key} must be text"
    for key in ("extent", "blur"):
        value = start.get(key)
        if not (isinstance(value, float) and math.isfinite(value) and value >= 0):
            return f"{key} must be a number >= 0, found {value!r}"
    if not start["extent"] > 0:
        return "extent must be > 0"
    return checkpoint_problem({"config": {}, "field": {}, **start})


def checkpoint_config(ckpt: dict[str, Any], source: str = "checkpoint") -> Config:
    """The config a checkpoint was trained with (runs from before the ink models used
    darkness, which ``density.ink`` then says; runs from before the late times and their
    features trained without them, ``field.late_features = 0`` and ``fm.late = 0``;
    ``train.method`` of runs from before the objectives and families were named apart is
    read as the shorthand it now is)."""
    data = dict(ckpt["config"])
    density = data.get("density")
    if isinstance(density, dict) and "ink" not in density:
        data["density"] = {**density, "ink": "darkness"}
    for section, key in (("field", "late_features"), ("fm", "late")):  # runs from before them
        part = data.get(section)
        if isinstance(part, dict) and key not in part:
            data[section] = {**part, key: 0}
    return Config.from_dict(data, source=source)


def end_meta(source: Source, invert: bool) -> dict[str, Any]:
    """What a checkpoint keeps of a picture-like end: working ink grid, size, colours (and,
    for a start, the frame's half size)."""
    density = source.density
    assert isinstance(density, ImageDensity)
    made = density.ink.ink if density.ink is not None else None
    colors = ink_colors(source.picture, density.grid, invert, made)
    return {
        "ink": ink_tensor(density),
        "size": list(density.size),
        "colors": torch.from_numpy(colors),
        "extent": float(density.half_extent),
    }


def ink_tensor(density: ImageDensity) -> torch.Tensor:
    """The density's working grid as a float32 tensor for the checkpoint."""
    return torch.as_tensor(np.ascontiguousarray(density.probs_np), dtype=torch.float32)
