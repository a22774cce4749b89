"""``run_batch``: every picture of a folder through an engine, with ``batch.json`` and the
gallery."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowgif.batch.local import run_local
from flowgif.batch.ray import run_on_ray
from flowgif.batch.scan import run_names, scan
from flowgif.batch.work import (
    BatchItem,
    EngineOptions,
    done_folders,
    hashes,
    run_folder,
    skipped,
)
from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.files import atomic_write_text, printable
from flowgif.owned import SIGNATURE, check_replaceable

__all__ = ["ENGINES", "STATUSES", "run_batch", "summary", "write_summary"]

# Where a batch's stacks run, by name (``batch.engine``); each takes
# ``(chunks, config, render, options, finish, stop)``.
ENGINES: dict[str, Callable[..., None]] = {"local": run_local, "ray": run_on_ray}


STATUSES = ("done", "skipped", "failed", "interrupted", "not started", "ignored")


def run_batch(
    folder: Path,
    out: Path,
    config: Config,
    render: dict,
    recursive: bool = False,
    report: Callable[[BatchItem], None] | None = None,
    stop: Callable[[], bool] | None = None,
    engine: str = "local",
    options: EngineOptions | None = None,
    stack: int | str = 1,
) -> list[BatchItem]:
    """Process every picture of ``folder`` into ``out``; see the module docstring.

    Args:
        folder: where the pictures are.
        out: where the run folders go (and ``batch.json``, rewritten after each picture).
        config: the training config for every picture.
        render: keyword arguments of :class:`flowgif.render.RenderOptions`.
        recursive: include sub-folders (never ``out`` itself).
        report: called with each finished item.
        stop: asked between pictures and between steps: when True, the running pictures
            save a checkpoint and stop, the rest are reported as not started.
        engine: a name of :data:`ENGINES`: ``local`` (this machine's processes) or ``ray``.
        options: the engine's :class:`~flowgif.batch.work.EngineOptions` (``jobs``: local
            pictures processed at once, 1 thread each when > 1; Ray's address and resources).
        stack: pictures trained together as one stacked model (:mod:`flowgif.fit.stack`), or
            ``auto`` (:func:`flowgif.fit.stack.auto_stack`: 1 on a CPU, as many as fit on a GPU).
            On CUDA the local engine runs one process per visible GPU (``jobs`` is capped
            there), each training its stacks on its own device.

    Returns:
        One item per file of the folder, pictures first in name order, then the ignored ones.
    """
    from flowgif.render import RenderOptions

    RenderOptions(**render)  # a bad option fails here, before any work
    if engine not in ENGINES:
        raise FlowgifError(f"batch.engine {engine!r} is not one of: {', '.join(ENGINES)}")
    folder, out = Path(folder), Path(out)
    if recursive and out.resolve() == folder.resolve():
        raise FlowgifError(
            "batch.out is the picture folder itself: with batch.recursive give another output "
            "folder"
        )
    check_replaceable(out / "batch.json")
    check_replaceable(out / "index.html")
    stop = stop or (lambda: False)
    found = scan(folder, recursive, skip=out, stop=stop)  # Interrupted when stop asks
    if not found.pictures and not found.failed:
        raise FlowgifError(f"no pictures found in {printable(folder)}")

    def rel(p: Path) -> str:
        return printable(p.relative_to(folder))

    from flowgif.store import safe_name  # torch: only when a batch runs

    tasks, notes, already = [], {}, {}
    by_picture, taken = done_folders(out), set()
    for picture, name in zip(found.pictures, run_names(folder, found.pictures), strict=True):
        label = rel(picture)
        try:
            keys = hashes(picture, config, render)
            run, note = run_folder(out, name, keys, config)
            item = skipped(run, label, keys)
            for where in by_picture.get(keys["image"], []) if item is None else []:
                item = None if where in taken else skipped(where, label, keys)
                if item is not None:  # done before, under another name
                    run, note = where, ""
                    break
            taken.add(run)
            if item is not None:
                already[label] = item
        except OSError:  # a picture that cannot be read: its worker says so
            run, note = out / safe_name(name), ""
        tasks.append((picture, run, label))
        if note:
            notes[label] = note
    results: dict[str, BatchItem] = {}
    extra = [BatchItem(rel(p) or ".", "", "failed", why) for p, why in found.failed]
    extra += [BatchItem(rel(p), "", "ignored", why) for p, why in found.ignored]

    def ordered() -> list[BatchItem]:
        pending = [
            BatchItem(label, str(run), "not started", "the batch was stopped")
            for _, run, label in tasks
            if label not in results
        ]
        done = [results[label] for _, _, label in tasks if label in results]
        return done + pending + extra

    def finish(item: BatchItem) -> None:
        if item.image in notes:  # the folders this picture's run went beside
            item.reason = "; ".join(filter(None, [notes[item.image], item.reason]))
        results[item.image] = item
        if report:
            report(item)
        write_summary(out, ordered())

    for item in extra:
        if item.status == "failed" and report:
            report(item)
    todo = []
    for task in tasks:  # what is done already is reported now, so that stacks fill up
        if task[2] in already:
            finish(already[task[2]])
        else:
            todo.append(task)
    size = _stack_size(stack, config, len(todo))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    ENGINES[engine](chunks, config, render, options or EngineOptions(), finish, stop)
    write_summary(out, ordered(), gallery=True)
    return ordered()


def _stack_size(stack: int | str, config: Config, count: int) -> int:
    """The stack size asked for, or ``auto``'s; checked against the config."""
    from flowgif.fit import auto_stack, stack_problem

    if stack == "auto":
        return auto_stack(config, count)
    size = int(stack)
    if size < 1:
        raise FlowgifError(f"batch.stack must be auto or at least 1, not {stack}")
    problem = stack_problem(config) if size > 1 else ""
    if problem:
        raise FlowgifError(f"batch.stack {size}: {problem}")
    return size


def summary(items: list[BatchItem]) -> dict[str, Any]:
    """Counts and items, for ``batch.json``."""
    counts = {s: sum(i.status == s for i in items) for s in STATUSES}
    return {**counts, "items": [dataclasses.asdict(i) for i in items]}


def write_summary(out: Path, items: list[BatchItem], gallery: bool = False) -> None:
    """``OUT/batch.json`` (after every picture), and with ``gallery`` the gallery
    ``OUT/index.html`` (once, at the end: it reads every run folder), atomically."""
    record = {"generator": SIGNATURE, **summary(items)}
    atomic_write_text(Path(out) / "batch.json", json.dumps(record, indent=2) + "\n")
    if gallery:
        from flowgif.render.gallery import write_gallery

        write_gallery(out, items)
