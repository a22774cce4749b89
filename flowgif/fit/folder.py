"""A run folder being trained: open it (both ends, the adapted config, what to resume), write
its checkpoints, and ``train_run``: picture in, run folder out."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from flowgif import __version__
from flowgif.config import Config, dump_toml
from flowgif.device import resolve_device
from flowgif.draw import write_samples_png
from flowgif.errors import FlowgifError
from flowgif.files import atomic_write_text
from flowgif.fit.loop import Progress, TrainResult
from flowgif.fit.solo import train
from flowgif.flows import wrap
from flowgif.flows.model import sample
from flowgif.objectives.recipes import check_ends, for_ends
from flowgif.owned import check_replaceable, made_by_flowgif, record_written
from flowgif.sources import NOISE, Source, end_spec, load_source
from flowgif.store import (
    CHECKPOINT,
    LIVE,
    check_marked,
    check_new_run_dir,
    claim_marked,
    end_meta,
    hold,
    let_go,
    load_checkpoint,
    loss_csv_text,
    read_marker,
    release,
    resume_problem,
    save_checkpoint,
    write_loss_csv,
)

__all__ = ["LIVE_EVERY", "RunFolder", "open_run", "train_opened", "train_run"]

LIVE_EVERY = 0.25  # seconds between two writes of live.pt (``flowgif train --live``)


class RunFolder:
    """A run folder about to be trained: both ends, the adapted config, the checkpoint to
    resume (or None), and the writer of its files (:meth:`save`).

    Made by :func:`open_run`; :func:`train_run` trains one, :func:`flowgif.fit.stack.train_stack`
    many at once.
    """

    def __init__(
        self, out: Path, end: Source, start: Source, config: Config, resume: dict | None
    ) -> None:
        self.out, self.end, self.start, self.config, self.resume = out, end, start, config, resume
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
            record_written(self.out / "config.toml")
            self._saved = True
        write_loss_csv(self.out / "loss.csv", [tuple(r) for r in payload["losses"].tolist()])
        record_written(self.out / "loss.csv")

    def live(self) -> Callable[[Progress], None]:
        """A progress callback that writes ``live.pt`` (:data:`~flowgif.store.LIVE`): the
        sampling weights now, with the checkpoint's record of both ends, the step, seconds,
        loss and this process's id, after the first step and then every
        :data:`LIVE_EVERY` seconds, atomically (``flowgif view`` shows it while it trains;
        :meth:`clear_live` removes it when training ends)."""
        path = self.out / LIVE
        check_replaceable(path)  # one left by a killed run is flowgif's by its record
        last = [-1.0]

        def write(p: Progress) -> None:
            now = time.monotonic()
            if p.model is None or now - last[0] < LIVE_EVERY:
                return
            last[0] = now
            record = {"step": p.step, "seconds": p.seconds, "loss": p.loss}
            payload = {
                **self.meta,
                **record,
                "fraction": p.fraction,
                "pid": os.getpid(),
                "field": p.model().state_dict(),
                "ema": None,
                "losses": torch.tensor([[p.step, p.seconds, p.loss, 0.0]], dtype=torch.float64),
            }
            save_checkpoint(path, payload)
            record_written(path)

        return write

    def clear_live(self) -> None:
        """Remove ``live.pt`` and its record when this process wrote it (its record proves
        it), so that the folder is what a run without ``--live`` leaves."""
        from flowgif.owned import forget_written

        forget_written(self.out / LIVE)

    def check_own_files(self) -> None:
        """Before a resumed run writes anything: each file it will replace (``config.toml``,
        ``loss.csv``, ``samples.png``) must be provably flowgif's — recorded in the folder's
        ledger, signed, or byte for byte what the checkpoint's own record writes.

        Raises:
            FlowgifError: one of them is not (a person's annotated config, their own plot).
        """
        for name, text in _regenerated(self.resume or {}).items():
            path = self.out / name
            if not _provably_ours(path, text):
                check_replaceable(path)

    def discard_if_empty(self) -> None:
        """Remove the folder again if this process claimed it and never wrote into it."""
        release(self.out)

    def preview(self, model: nn.Module, device: torch.device) -> None:
        """``samples.png``: 50,000 samples of the trained flow over the picture."""
        flow = wrap(model, self.config, self.start.density.to(device), self.end.density.to(device))
        x = sample(flow, 50_000, self.config.train.seed, device)
        density = self.end.density
        check_replaceable(self.out / "samples.png")
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
    made_by: str = "train",
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
        if read_marker(out) is None:
            _adopt_unmarked(out, state)
        check_marked(out)
    else:
        check_new_run_dir(out, made_by, end.digest)
    hold(out)  # this process works in it now; train_opened gives the hold back
    try:
        if resume:
            start_hash = "" if start.is_noise else start.digest
            problem = resume_problem(state, config, end.digest, start_hash)
            if problem:
                raise FlowgifError(f"{out} cannot be resumed: {problem}")
        run = RunFolder(out, end, start, config, state)
        if resume:
            run.check_own_files()
    except BaseException:
        let_go(out)
        raise
    return run


def _regenerated(state: dict) -> dict[str, str | None]:
    """The files a checkpoint's own record rewrites byte for byte: ``config.toml`` and
    ``loss.csv`` as flowgif wrote them with it (``samples.png`` proves itself by its
    signature)."""
    losses = state.get("losses")
    return {
        "config.toml": dump_toml(state["config"]) if "config" in state else None,
        "loss.csv": loss_csv_text([tuple(r) for r in losses.tolist()])
        if isinstance(losses, torch.Tensor)
        else None,
        "samples.png": None,
    }


def _provably_ours(path: Path, text: str | None) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if text is not None:
        with contextlib.suppress(OSError):
            if path.read_bytes() == text.encode("utf-8"):
                return True
    return made_by_flowgif(path)


def _adopt_unmarked(out: Path, state: dict) -> None:
    """Mark a run folder from before flowgif marked its folders, when everything in it is
    provably flowgif's: the checkpoint, files byte for byte as its record writes them, files
    that carry flowgif's signature. Anything else (a person's annotated config, their own
    plot, any other file) and the folder is left unmarked, and resuming it is refused."""
    made = _regenerated(state)
    for entry in Path(out).iterdir():
        if entry.name == CHECKPOINT and entry.is_file() and not entry.is_symlink():
            continue
        if not _provably_ours(entry, made.get(entry.name)):
            return
    claim_marked(out, "train", str(state.get("image_hash", "")))


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
    made_by: str = "train",
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
        config: the run configuration (adapted to the end by
            :func:`flowgif.objectives.recipes.for_ends`, then written to ``out/config.toml``).
        out: the run folder; created if needed. Without ``resume`` it must not hold a run.
        progress: called after every step.
        resume: continue from ``out/checkpoint.pt`` (config and both ends must match).
        preview: write ``out/samples.png`` (50,000 samples) at the end.
        text: a word to set in type and fit instead of a picture.
        target: a toy density (:data:`flowgif.sources.toys.TOYS`) instead of a picture.
        stop: see :func:`train`.
        start: where the flow starts (:func:`flowgif.sources.load_source`: ``noise``, the
            default, a picture's path, ``text:WORD``, ``target:NAME``) or a loaded source.
        made_by: what claims a new folder (``train``, ``batch``, ``morph``), in its marker
            (:mod:`flowgif.store.folders`).

    Raises:
        FlowgifError: a bad source, a damaged checkpoint, a run folder in the way, ends that
            cannot train together.
        Interrupted: ``stop`` asked (see :func:`train`).
    """
    resolve_device(config.train.device)  # a device that is not there: before any folder
    run = open_run(image, config, out, resume, text, target, start, made_by)
    return train_opened(run, progress, preview, stop)


def train_opened(
    run: RunFolder,
    progress: Callable[[Progress], None] | None = None,
    preview: bool = True,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a run folder :func:`open_run` opened (what :func:`train_run` does after opening
    it; a command opens first, so that every refusal comes before it says what it does)."""
    try:
        device = resolve_device(run.config.train.device)
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
        run.clear_live()
        run.discard_if_empty()
        let_go(run.out)
        raise
    run.clear_live()
    try:
        if preview:
            run.preview(result.model, device)
    finally:
        let_go(run.out)
    return result
