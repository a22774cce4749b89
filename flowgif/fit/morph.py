"""Morphs: one picture's density flowing into the next, A -> B -> C, one trained flow per leg.

Each leg is an ordinary run folder, trained from the leg's start picture to its end picture
(:func:`flowgif.fit.folder.train_run` with ``start``), under one parent folder that also holds
``morph.json`` (the pictures and their hashes, in order). A rerun with the same pictures and
config reuses the legs that are finished, resumes one that was cut, and refuses a leg folder
trained on anything else; the parent holds nothing that flowgif did not write. The legs are
then played one after another (:func:`flowgif.render.render` with ``chain``): the particles
of each leg start where the last one's ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.files import atomic_write_text
from flowgif.fit.folder import train_run
from flowgif.objectives.recipes import check_ends, for_ends
from flowgif.owned import SIGNATURE, made_by_flowgif
from flowgif.sources import Source, as_start, kind_of, load_source, spec
from flowgif.store import (
    CHECKPOINT,
    MARKER,
    budget_spent,
    load_checkpoint,
    read_marker,
    resume_problem,
)

__all__ = ["MANIFEST", "Leg", "default_parent", "plan", "train_legs"]

MANIFEST = "morph.json"


@dataclass
class Leg:
    """One leg of a morph.

    Attributes:
        start: the leg's start, a picture blurred as a start is.
        end: the leg's end.
        path: its run folder.
        state: ``new``, ``resume`` (a checkpoint short of the budget) or ``done``.
    """

    start: Source
    end: Source
    path: Path
    state: str = "new"


def name_of(spec: str) -> str:
    """A short folder-safe name for a picture, ``text:WORD`` or ``target:NAME``."""
    kind, sep, value = spec.partition(":")
    text = value if sep and kind in ("text", "target") else Path(spec).stem
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:30] or "picture"


def default_parent(specs: list[str], root: Path = Path("runs")) -> Path:
    """``runs/morph-A-B-C``: the same for the same pictures, so a rerun finds its legs."""
    return root / ("morph-" + "-".join(name_of(s) for s in specs))


def plan(specs: list[str], config: Config, parent: Path) -> list[Leg]:
    """Load and check every picture and every leg folder before anything is written.

    Args:
        specs: two or more pictures (paths, ``text:WORD``, ``target:NAME``), in order.
        config: the legs' config (the budget is per leg).
        parent: the folder that holds the legs.

    Raises:
        FlowgifError: fewer than two pictures, one that cannot be read, an energy (it has no
            samples, so it can neither start a leg nor be fitted by flow matching), a parent
            folder holding something else, a leg folder trained on other pictures or settings.
    """
    if len(specs) < 2:
        raise FlowgifError("a morph needs at least two pictures: A B [C ...]")
    for name in specs:
        if kind_of(name) == "noise":
            raise FlowgifError("noise is not a picture; `flowgif train` starts from noise")
    dc = config.density
    ends = [load_source(spec(s), dc) for s in specs]
    for end in ends:
        if end.energy is not None:
            raise FlowgifError(
                f"{end.label} is an energy, known only up to a constant: it has no samples to "
                "morph from or to"
            )
    starts = [as_start(e, dc) for e in ends[:-1]]  # each picture read once
    _check_parent(parent, ends)
    legs = []
    for i, (a, b) in enumerate(zip(starts, ends[1:], strict=True)):
        cfg = for_ends(config, b)
        check_ends(cfg, a, b)
        path = parent / f"{i + 1}-{name_of(a.label)}-to-{name_of(b.label)}"
        legs.append(Leg(a, b, path, _leg_state(path, cfg, a, b)))
    return legs


def _check_parent(parent: Path, ends: list[Source]) -> None:
    """The parent is new, empty, or a morph of these same pictures (its manifest signed by
    flowgif)."""
    if not parent.exists():
        return
    if parent.is_symlink() or not parent.is_dir():
        raise FlowgifError(
            f"{parent} exists and is not a folder; choose another morph.runs folder"
        )
    manifest = parent / MANIFEST
    if not any(parent.iterdir()):
        return
    if manifest.is_symlink() or not made_by_flowgif(manifest):
        raise FlowgifError(
            f"{parent} holds files that are not a flowgif morph; choose another morph.runs folder"
        )
    try:
        known = json.loads(manifest.read_text(encoding="utf-8"))
        hashes = [p["hash"] for p in known["pictures"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise FlowgifError(f"{manifest} is damaged; choose another morph.runs folder") from None
    if hashes != [e.digest for e in ends]:
        raise FlowgifError(
            f"{parent} holds a morph of other pictures; choose another morph.runs folder"
        )


def _leg_state(path: Path, config: Config, start: Source, end: Source) -> str:
    """``new``, ``resume`` or ``done`` for a leg folder (refusing one of another leg)."""
    if not (path / CHECKPOINT).exists():
        marker = read_marker(path)
        ours = marker is not None and marker["made_by"] == "morph"
        if path.is_symlink() or (path.exists() and not _only_marker(path, ours)):
            raise FlowgifError(f"{path} is in the way of a leg; choose another morph.runs folder")
        return "new"
    if read_marker(path) is None:
        raise FlowgifError(
            f"{path} is not a leg flowgif marked as its own; choose another morph.runs folder"
        )
    ckpt = load_checkpoint(path / CHECKPOINT, for_resume=True)
    problem = resume_problem(ckpt, config, end.digest, start.digest)
    if problem:
        raise FlowgifError(
            f"{path} was trained on other pictures or settings ({problem}); choose another "
            "morph.runs folder"
        )
    return "done" if budget_spent(config, ckpt) else "resume"


def _only_marker(path: Path, ours: bool) -> bool:
    """An empty folder, or one holding only a morph's marker."""
    names = [p.name for p in path.iterdir()] if path.is_dir() else ["-"]
    return not names or (ours and names == [MARKER])


def write_manifest(parent: Path, legs: list[Leg]) -> None:
    """``morph.json``: the pictures in order with their hashes, and the legs' folders."""
    ends = [legs[0].start] + [leg.end for leg in legs]
    data = {
        "generator": SIGNATURE,
        "pictures": [{"label": e.stored_label, "hash": e.digest} for e in ends],
        "legs": [leg.path.name for leg in legs],
    }
    parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(parent / MANIFEST, json.dumps(data, indent=2) + "\n")


def train_legs(
    legs: list[Leg],
    config: Config,
    stop: Callable[[], bool] | None = None,
    watch: Callable[[int, Leg], AbstractContextManager[Callable | None]] | None = None,
) -> None:
    """Train every leg that is not done (resuming one that was cut), in order.

    Args:
        legs: from :func:`plan`.
        config: the legs' config.
        stop: see :func:`flowgif.fit.solo.train`.
        watch: called with each leg's number (from 1) and the leg, done ones too; the
            context manager it returns is held while the leg trains and gives its progress
            callback (or None).

    Raises:
        Interrupted: ``stop`` asked; the leg's checkpoint is saved, a rerun continues it.
    """
    write_manifest(legs[0].path.parent, legs)
    for i, leg in enumerate(legs, 1):
        with watch(i, leg) if watch else nullcontext() as progress:
            if leg.state == "done":
                continue
            train_run(
                leg.end,
                config,
                leg.path,
                progress=progress,
                resume=leg.state == "resume",
                stop=stop,
                start=leg.start,
                made_by="morph",
            )
            leg.state = "done"
