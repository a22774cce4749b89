"""A trained run, loaded from its folder: config, both ends and the flow, ready to use."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.flows import build, wrap
from flowgif.flows.computed import ComputedField
from flowgif.flows.field import VectorField
from flowgif.flows.model import Flow
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity
from flowgif.store.checkpoint import CHECKPOINT, checkpoint_config, load_checkpoint

__all__ = ["Run", "load_run"]


@dataclass
class Run:
    """A trained run, ready to sample, render and evaluate.

    Attributes:
        path: the run folder.
        config: the config that trained it.
        density: the picture's density (rebuilt from the ink grid stored in the checkpoint).
        model: the trained module with the sampling (EMA) weights, in eval mode: a
            :class:`~flowgif.flows.field.VectorField` or a
            :class:`~flowgif.flows.base.DiscreteFlow`.
        flow: the same behind the :class:`~flowgif.flows.model.Flow` interface, from
            ``start`` (paths, log_prob ...).
        meta: the checkpoint's plain values (step, seed, version, image, image hash ...).
        colors: ``(h, w, 3)`` uint8 ink-weighted colour of each working-grid cell.
        start: the distribution at t = 0: N(0, I), or a blurred picture density.
        start_colors: the start picture's colours as ``colors``, or None for N(0, I).
        start_label: ``noise``, or the start picture's path, ``text:WORD`` or ``target:NAME``.
    """

    path: Path
    config: Config
    density: ImageDensity
    model: torch.nn.Module
    meta: dict[str, Any]
    colors: np.ndarray
    start: Distribution = dataclasses.field(default_factory=Noise)
    start_colors: np.ndarray | None = None
    start_label: str = "noise"

    @functools.cached_property
    def flow(self) -> Flow:
        """The run's flow (made once: the exact flow caches its grids)."""
        return wrap(self.model, self.config, self.start, self.density)

    @property
    def field(self) -> VectorField | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The vector field of a continuous flow (the exact flow's ``v*``, the transport
        flow's velocity).

        Raises:
            FlowgifError: the run holds a discrete flow, which has none.
        """
        if isinstance(self.model, ComputedField):
            return self.flow.field  # type: ignore[attr-defined]
        if not isinstance(self.model, VectorField):
            raise FlowgifError(
                f"{self.path} holds a {self.config.train.family} flow, a stack of layers with "
                "no vector field"
            )
        return self.model


def load_run(path: Path, device: torch.device | str = "cpu", file: str = CHECKPOINT) -> Run:
    """Load the run folder ``path`` (its ``checkpoint.pt``, or ``file``: the ``live.pt`` of a
    run training with ``--live``) onto ``device``."""
    path = Path(path)
    if not path.is_dir():
        raise FlowgifError(f"run folder not found: {path}")
    ckpt = load_checkpoint(path / file)
    try:
        config = checkpoint_config(ckpt, source=f"{path / file}")
        density = ImageDensity(
            ckpt["ink"].double().numpy(), tuple(ckpt["size"]), config.density.extent, device
        )
        model = build(config).to(device)
        model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["field"])
        colors = _colors(ckpt, density)
        start, start_colors, start_label = Noise(device), None, "noise"
        if "start" in ckpt:
            s = ckpt["start"]
            start = ImageDensity(
                s["ink"].double().numpy(), tuple(s["size"]), s["extent"], device, s["blur"]
            )
            start_colors, start_label = _colors(s, start), s["label"]
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if len(reason) > 100:
            reason = reason[:97] + "..."
        raise FlowgifError(
            f"{path / file} is damaged or from another version ({reason})"
        ) from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if not isinstance(v, (dict, torch.Tensor))}
    return Run(path, config, density, model, meta, colors, start, start_colors, start_label)


def _colors(record: dict[str, Any], density: ImageDensity) -> np.ndarray:
    return record["colors"].numpy().astype(np.uint8).reshape(*density.grid, 3)
