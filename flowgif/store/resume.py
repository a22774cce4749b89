"""The one resume rule: when a run folder may be continued, and when its budget is spent.

A run keeps its own config. Only the budget and where it runs may change when it is continued
(:data:`RESUMABLE`); its picture and its start must be the same (by hash, so a picture that
moved is still recognised). ``train --resume``, ``morph`` (a leg on a rerun) and ``batch``
(a picture on a rerun) all ask :func:`resume_problem`, and a budget that grew extends the run
from where it stopped in all three.
"""

from __future__ import annotations

from typing import Any

from flowgif.config import Config
from flowgif.store.checkpoint import checkpoint_config

__all__ = ["RESUMABLE", "budget_spent", "budget_text", "changed", "fraction", "resume_problem"]

# The settings that may differ between a run and its continuation.
RESUMABLE = ("train.steps", "train.minutes", "train.device", "train.threads")


def changed(stored: Config, wanted: Config) -> list[tuple[str, Any, Any]]:
    """``(setting, stored, wanted)`` for every setting outside :data:`RESUMABLE` that differs,
    in the config's order."""
    a, b = stored.to_dict(), wanted.to_dict()
    out = []
    for section, values in a.items():
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in RESUMABLE and b[section][key] != value:
                out.append((dotted, value, b[section][key]))
    return out


def resume_problem(
    ckpt: dict[str, Any], config: Config | None, end_digest: str, start_digest: str = ""
) -> str:
    """Why the run of checkpoint ``ckpt`` cannot be continued as ``config`` from the start
    whose hash is ``start_digest`` ("" for N(0, I)) to the end ``end_digest``, or "".

    Args:
        ckpt: a checkpoint loaded (and schema-checked) for resuming.
        config: the config to go on with (None: the run's own, with nothing changed).
        end_digest: the hash of the end it must have been trained on.
        start_digest: the hash of its start, "" for N(0, I).
    """
    if ckpt.get("image_hash") != end_digest:
        return "it was trained on another picture"
    if ckpt.get("start", {}).get("hash", "") != start_digest:
        return "it was trained from another start"
    if config is None:
        return ""
    diff = changed(checkpoint_config(ckpt), config)
    if diff:
        key, was, now = diff[0]
        return f"it was trained with {key} {was}, not {now}; start a new run to change it"
    return ""


def fraction(steps: int, minutes: float, step: int, seconds: float) -> float:
    """How much of a budget of ``steps`` or ``minutes`` (0: none) is spent, the larger."""
    a = step / steps if steps else 0.0
    b = seconds / (minutes * 60.0) if minutes else 0.0
    return max(a, b)


def budget_spent(config: Config, checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's steps or seconds already fill ``config``'s budget (always, for a
    flow that is computed whole rather than trained: the exact flow)."""
    tc = config.train
    if tc.objective == "exact":
        return True
    return fraction(tc.steps, tc.minutes, checkpoint["step"], checkpoint["seconds"]) >= 1


def budget_text(steps: int, minutes: float) -> str:
    """``5000 steps``, ``3 min`` or ``5000 steps or 3 min``."""
    parts = ([f"{steps} steps"] if steps else []) + ([f"{minutes:g} min"] if minutes else [])
    return " or ".join(parts)
