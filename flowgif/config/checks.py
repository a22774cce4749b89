"""The config's checks: each option in its range, and the combinations that cannot work, each
refused in one line naming the option."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flowgif.config.choices import (
    CHOICES,
    COMPUTED,
    FIXED_STEP,
    FLOORS,
    LIMITS,
    MEMORY_LIMIT,
    NON_NEGATIVE,
    POSITIVE,
)
from flowgif.errors import FlowgifError

if TYPE_CHECKING:
    from flowgif.config.sections import Config

__all__ = ["validate"]


def validate(config: Config, source: str = "config") -> None:
    """Raise FlowgifError naming the first option out of range."""
    for dotted, choices in CHOICES.items():
        value = config.get(dotted)
        if value not in choices:
            raise FlowgifError(
                f"{source}: {dotted} = {value!r} is not one of: {', '.join(choices)}"
            )
    for dotted in POSITIVE | NON_NEGATIVE:
        value = config.get(dotted)
        if not math.isfinite(value) or value < 0 or (dotted in POSITIVE and value == 0):
            need = "> 0" if dotted in POSITIVE else ">= 0"
            raise FlowgifError(f"{source}: {dotted} = {value} must be {need}")
    for dotted, top in LIMITS.items():
        value = config.get(dotted)
        if value > top:
            raise FlowgifError(f"{source}: {dotted} = {value} is above its limit, {top:g}")
    for dotted, bottom in FLOORS.items():
        value = config.get(dotted)
        if value < bottom:
            raise FlowgifError(f"{source}: {dotted} = {value} is below its limit, {bottom:g}")
    if config.train.seed < 0:
        raise FlowgifError(f"{source}: train.seed = {config.train.seed} must be >= 0")
    floats = (
        config.train.batch
        * max(config.field.width, config.flow.hidden)
        * (max(config.field.depth, config.flow.depth) + 1)
    )
    if floats > MEMORY_LIMIT:
        raise FlowgifError(
            f"{source}: train.batch x width x depth = {floats:.3g} activations per step "
            f"is more than flowgif allows ({MEMORY_LIMIT:.0e}, about 8 GB); lower the "
            "batch or the field's size"
        )
    for dotted in ("density.ink_floor", "train.finetune", "train.ema", "fm.late"):
        if not 0 <= config.get(dotted) < 1:
            raise FlowgifError(f"{source}: {dotted} must be in [0, 1)")
    if config.field.augment and config.train.family != "field":
        raise FlowgifError(
            f"{source}: field.augment applies to the continuous flows (fm, "
            f"ffjord, reverse), not to {config.train.family}"
        )
    if (config.train.objective == "exact") != (config.train.family in COMPUTED):
        raise FlowgifError(
            f"{source}: the exact flow and the optimal-transport flow are computed, not "
            'trained: train.objective is "exact" exactly when train.family is "exact" or '
            '"ot" (train.method = "exact" or "ot")'
        )
    fm, augment = config.fm, config.field.augment
    if fm.target == "plan" and (not fm.ot or fm.sigma or augment):
        raise FlowgifError(
            f'{source}: fm.target = "plan" pairs by the optimal-transport plan: it needs '
            "fm.ot = true and takes no fm.sigma or field.augment"
        )
    if config.fm.target == "exact" and (config.fm.ot or config.fm.sigma or config.field.augment):
        raise FlowgifError(
            f'{source}: fm.target = "exact" is the field of independent pairs on straight '
            "paths in two dimensions: it takes no fm.ot, fm.sigma or field.augment"
        )
    if config.train.objective == "fm" and config.train.family != "field":
        raise FlowgifError(
            f'{source}: flow matching fits a vector field (train.family = "field"), not '
            f"{config.train.family}"
        )
    if config.ffjord.solver in FIXED_STEP and not config.ffjord.steps:
        raise FlowgifError(
            f"{source}: ffjord.solver = {config.ffjord.solver!r} takes fixed steps: set "
            "ffjord.steps (e.g. 8)"
        )
    if config.train.steps == 0 and config.train.minutes == 0:
        raise FlowgifError(f"{source}: set train.steps or train.minutes above 0")
