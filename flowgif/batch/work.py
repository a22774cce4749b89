"""One stack of a batch's pictures, worked through: skip, resume or redo each, train, render.

:func:`process_stack` is what every engine runs, in this process, a worker process or a Ray
task, so they share every rule of a batch: ``done.json`` last (it holds the hashes of the
picture, the effective config and the render options, and a picture whose three hashes match
is skipped), a run folder continued by the one resume rule, the rest redone; it never raises
for a bad picture.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from flowgif.batch.items import BatchItem, Chunk, EngineOptions, chunk_items
from flowgif.config import Config, dump_toml
from flowgif.device import resolve_device, set_threads
from flowgif.errors import FlowgifError, Interrupted
from flowgif.files import atomic_write, atomic_write_text, printable
from flowgif.owned import SIGNATURE, check_replaceable

__all__ = [
    "OUTPUTS",
    "STOP",
    "BatchItem",
    "Chunk",
    "EngineOptions",
    "chunk_items",
    "done_folders",
    "process_stack",
]


def hashes(image: Path, config: Config, render: dict) -> dict[str, str]:
    from flowgif.sources.picture import image_hash

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    return {
        "image": image_hash(image),
        "config": digest(dump_toml(config.to_dict())),
        "render": digest(json.dumps(render, sort_keys=True)),
    }


@dataclass
class _Job:
    """A picture that needs training (or only rendering, when ``trained``)."""

    image: Path
    run: Path
    label: str
    keys: dict[str, str]
    resume: bool
    trained: bool
    clock: float


def run_folder(out: Path, name: str, keys: dict[str, str], config: Config) -> tuple[Path, str]:
    """A picture's run folder in a batch, and a note of the folders passed over.

    The first of ``OUT/name``, ``name-2``, ... that is absent, or that flowgif's marker
    proves a batch made for this picture (``keys``: :func:`hashes`) — done with these very
    settings, empty yet, or with a checkpoint this config may continue by the one resume
    rule. Every other folder is kept as it is: a run made by
    ``train`` or ``morph``, one of another picture or of other settings, one without a marker,
    a symbolic link — the note says so, and the run goes beside it.
    """
    from flowgif.store import CHECKPOINT, load_checkpoint, read_marker, resume_problem, safe_name

    base, passed, k = safe_name(name), [], 1
    while True:
        path = out / (base if k == 1 else f"{base}-{k}")
        k += 1
        if not path.exists() and not path.is_symlink():
            break
        marker = None if path.is_symlink() else read_marker(path)
        if path.is_symlink():
            why = "is a symbolic link"
        elif marker is None:
            why = "is not a run folder flowgif marked as its own"
        elif marker["made_by"] != "batch":
            why = f"was made by flowgif {marker['made_by']}"
        elif marker.get("picture") != keys["image"]:
            why = "holds another picture"
        elif skipped(path, "", keys) is not None or not (path / CHECKPOINT).exists():
            break
        else:
            try:
                ckpt = load_checkpoint(path / CHECKPOINT, for_resume=True)
                why = (
                    "was trained with other settings"
                    if resume_problem(ckpt, config, keys["image"])
                    else ""
                )
            except FlowgifError:
                why = "holds a checkpoint that cannot be resumed"
            if not why:
                break
        passed.append(f"{path.name} {why}")
    note = f"{'; '.join(passed)}: kept, this run is {path.name}" if passed else ""
    return path, note


def _prepare(
    image: Path, run: Path, config: Config, render: dict, label: str, stop: Callable[[], bool]
) -> BatchItem | _Job:
    """Skip a picture that is done, claim a new folder, or say how to go on.

    ``run`` comes from :func:`run_folder`: absent (claimed here, exclusively), or a folder a
    batch made for this picture, continued by the one resume rule
    (:func:`flowgif.store.resume_problem`): a batch whose budget grew extends its runs, as
    ``train --resume`` does; one whose budget is already spent is rendered again.
    """
    clock = time.perf_counter()
    keys = hashes(image, config, render)
    done = skipped(run, label, keys)
    if done is not None:
        return done
    if stop():
        return BatchItem(label, str(run), "not started", "the batch was stopped")
    for _ in range(1000):  # another flowgif may take a folder between the look and the claim
        got = _take(run, keys, config)
        if got is not None:
            resume, trained = got
            return _Job(image, run, label, keys, resume, trained, clock)
        run, _ = run_folder(run.parent, run.name, keys, config)  # the next free name
    raise FlowgifError(f"no free run folder beside {run}")


def _take(run: Path, keys: dict[str, str], config: Config) -> tuple[bool, bool] | None:
    """Hold ``run`` for this picture: ``(resume, trained)``, or None when the folder is not
    this picture's (another flowgif took it for another picture, or another settings' run,
    since it was chosen)."""
    from flowgif.store import (
        CHECKPOINT,
        adopt,
        budget_spent,
        claim,
        hold,
        let_go,
        load_checkpoint,
        read_marker,
        resume_problem,
    )

    if (run / CHECKPOINT).is_file():
        marker = read_marker(run)
        if marker is None or (marker["made_by"], marker.get("picture")) != (
            "batch",
            keys["image"],
        ):
            return None
        hold(run)  # another batch still working on it: this one says so and leaves it
        try:
            ckpt = load_checkpoint(run / CHECKPOINT, for_resume=True)
            if resume_problem(ckpt, config, keys["image"]):
                let_go(run)
                return None
        except BaseException:
            let_go(run)
            raise
        return True, budget_spent(config, ckpt)
    if claim(run, "batch", keys["image"]) or adopt(run, "batch", keys["image"]):
        hold(run)  # until its picture is done (rendered, evaluated)
        return False, False
    return None


def _finish(job: _Job, config: Config, render: dict) -> BatchItem:
    """Render, evaluate and mark done a trained picture."""
    from flowgif.evaluate import evaluate
    from flowgif.render import RenderOptions
    from flowgif.render import render as do_render
    from flowgif.store import load_run

    device = resolve_device(config.train.device)
    for name in (*OUTPUTS, "done.json"):  # a person's file there: this picture fails, it stays
        check_replaceable(job.run / name)
    loaded = load_run(job.run, device)
    do_render(loaded, job.run / "flow.gif", RenderOptions(**render), device)
    write_thumbnail(job.image, job.run / "picture.png")
    figures = evaluate(loaded, n_nll=2000, n_samples=20_000, device=device, n_transport=500)
    signed = {"generator": SIGNATURE, **figures}
    atomic_write_text(job.run / "eval.json", json.dumps(signed, indent=2) + "\n")
    record = {
        "generator": SIGNATURE,
        "hashes": job.keys,
        "image": printable(job.image),
        "steps": loaded.meta.get("step"),
        "seconds": loaded.meta.get("seconds"),
    }
    atomic_write_text(job.run / "done.json", json.dumps(record, indent=2))
    note = "rendered again" if job.trained else "resumed" if job.resume else ""
    return BatchItem(job.label, str(job.run), "done", note, time.perf_counter() - job.clock)


def _failed(label: str, run: Path, clock: float, err: Exception) -> BatchItem:
    """A picture's failure: a FlowgifError's one line, or where a bug or a resource error
    struck (which must not stop the other pictures)."""
    reason = str(err)
    if not isinstance(err, FlowgifError):
        where = traceback.extract_tb(err.__traceback__)[-1:]
        at = f" ({Path(where[0].filename).name}:{where[0].lineno})" if where else ""
        reason = f"{type(err).__name__}: {err}{at}"
    return BatchItem(label, str(run), "failed", reason, time.perf_counter() - clock)


def _cut(job: _Job, cut: Interrupted) -> BatchItem:
    note = f"stopped at step {cut.step}"
    if cut.checkpoint_step is not None:
        note += f"; a rerun resumes from step {cut.checkpoint_step}"
    return BatchItem(job.label, str(job.run), "interrupted", note, time.perf_counter() - job.clock)


def process_stack(
    tasks: list[tuple[Path, Path, str]],
    config: Config,
    render: dict,
    threads: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[BatchItem]:
    """Train (or resume) and render ``(picture, run folder, label)`` s; never raises for a bad
    picture. Two or more that need training train together, stacked
    (:func:`flowgif.fit.train_stack`); one trains alone (:func:`flowgif.fit.train_run`).
    One item per task, in order."""
    stop = stop or worker_stop
    clock = time.perf_counter()
    items: dict[int, BatchItem] = {}
    jobs: dict[int, _Job] = {}
    if threads:
        set_threads(threads)
        config = config.updated({"train.threads": threads})
    for i, (image, run, label) in enumerate(tasks):
        try:
            got = _prepare(image, run, config, render, label, stop)
        except Exception as err:
            got = _failed(label, run, clock, err)
        if isinstance(got, _Job):
            jobs[i] = got
        else:
            items[i] = got
    to_train = {i: job for i, job in jobs.items() if not job.trained}
    if len(to_train) == 1:
        items.update(_train_alone(to_train, config, stop))
    elif to_train:
        items.update(_train_stacked(to_train, config, stop))
    for i, job in jobs.items():
        if i not in items:  # trained: render it
            try:
                items[i] = _finish(job, config, render)
            except Exception as err:
                items[i] = _failed(job.label, job.run, job.clock, err)
        elif items[i].status != "done":
            from flowgif.store import release  # torch: only once a stack is under way

            release(job.run)  # claimed here and never written into: no empty folder is left
    if jobs:
        from flowgif.store import let_go

        for job in jobs.values():
            let_go(job.run)
    return [items[i] for i in range(len(tasks))]


def _train_alone(
    jobs: dict[int, _Job], config: Config, stop: Callable[[], bool]
) -> dict[int, BatchItem]:
    """Train one picture; an item only if it failed or was cut."""
    from flowgif.fit import train_run

    ((i, job),) = jobs.items()
    try:
        train_run(job.image, config, job.run, resume=job.resume, stop=stop, made_by="batch")
    except Interrupted as cut:
        return {i: _cut(job, cut)}
    except Exception as err:
        return {i: _failed(job.label, job.run, job.clock, err)}
    return {}


def _train_stacked(
    jobs: dict[int, _Job], config: Config, stop: Callable[[], bool]
) -> dict[int, BatchItem]:
    """Open each run folder (a picture that cannot be read fails alone), train them stacked,
    write each one's preview; items only for those that failed or were cut."""
    import torch

    from flowgif.fit import RunFolder, TrainResult, open_run
    from flowgif.fit.stack import train_stack

    items: dict[int, BatchItem] = {}
    runs: dict[int, RunFolder] = {}
    for i, job in jobs.items():
        try:
            runs[i] = open_run(job.image, config, job.run, job.resume, made_by="batch")
        except Exception as err:
            items[i] = _failed(job.label, job.run, job.clock, err)
    device = resolve_device(config.train.device)
    try:
        outcomes: list = train_stack(list(runs.values()), device, stop=stop)
    except torch.cuda.OutOfMemoryError:
        why = f"the device ran out of memory with {len(runs)} pictures stacked"
        why += "; give a smaller --stack"
        outcomes = [FlowgifError(why)] * len(runs)
    except Exception as err:  # the stack as a whole failed: each of its pictures says so
        outcomes = [err] * len(runs)
    from flowgif.store import let_go

    for run in runs.values():
        let_go(run.out)  # open_run's hold; the batch's own stays until the picture is done
    for (i, run), outcome in zip(runs.items(), outcomes, strict=True):
        job = jobs[i]
        if isinstance(outcome, TrainResult):
            try:
                run.preview(outcome.model, device)
                continue
            except Exception as err:
                outcome = err
        run.discard_if_empty()
        if isinstance(outcome, Interrupted):
            items[i] = _cut(job, outcome)
        else:
            items[i] = _failed(job.label, job.run, job.clock, outcome)
    return items


def write_thumbnail(image: Path, out: Path, longer: int = 256) -> None:
    """A copy of the picture, at most ``longer`` pixels on its longer side, for the gallery."""
    from flowgif.sources.picture import load_image

    img = load_image(image)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float grey
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0  # a 16-bit picture spans 0-65535
        img = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    img.thumbnail((longer, longer))
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SIGNATURE)
    atomic_write(out, lambda f: img.save(f, format="PNG", pnginfo=info))


OUTPUTS = ("flow.gif", "picture.png", "eval.json")  # what a done picture's folder holds


def skipped(run: Path, label: str, keys: dict[str, str]) -> BatchItem | None:
    """The item of a picture whose ``done.json`` holds these hashes and whose outputs
    (:data:`OUTPUTS`) are all there, else None: a damaged marker, or an output deleted
    since, and the picture is done again (an output alone is made again from its
    checkpoint, not trained again)."""
    try:
        if json.loads((run / "done.json").read_text()).get("hashes") != keys:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    if not all((run / name).is_file() for name in OUTPUTS):
        return None
    return BatchItem(label, str(run), "skipped", "already done")


def done_folders(out: Path) -> dict[str, list[Path]]:
    """The folders of ``out`` that a batch made and finished, by the hash of their picture
    (a picture keeps its done folder even when its run name changes: a picture of the same
    name added later, a recursive batch's new clash)."""
    from flowgif.store import read_marker

    found: dict[str, list[Path]] = {}
    try:
        entries = sorted(Path(out).iterdir())
    except OSError:
        return found
    for path in entries:
        if path.is_symlink() or not (path / "done.json").is_file():
            continue
        marker = read_marker(path)
        if marker is not None and marker["made_by"] == "batch":
            found.setdefault(str(marker.get("picture")), []).append(path)
    return found


STOP: list[int] = []  # set in a worker process by a signal


def worker_stop() -> bool:
    return bool(STOP)
