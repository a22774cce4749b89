"""Train and render every picture of a folder; resumable, and one bad picture stops nothing.

Each picture gets ``OUT/<name>/`` (its file name without the suffix; pictures that would share a
name keep their suffix too: ``logo-png``, ``logo-jpg``). ``done.json`` is written last and
holds the hashes of the picture, the effective config and the render options: a later batch
skips a picture whose three hashes match, resumes one that has a checkpoint of the same picture
and config, and redoes the rest. ``--jobs N`` trains N pictures at once in separate processes,
one torch thread each.

Every file of the folder shows up in the result: ``done``, ``skipped`` (already done),
``failed`` (with the reason: a file whose suffix says picture but does not decode fails),
``ignored`` (not a picture, hidden, flowgif's own output) or ``interrupted``/``not started``
when the batch was stopped. ``OUT/batch.json`` is rewritten after every picture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from flowgif.config import Config, dump_toml
from flowgif.errors import FlowgifError, Interrupted
from flowgif.files import atomic_write, atomic_write_text, check_replaceable, sweep_stale

__all__ = ["PICTURE_SUFFIXES", "BatchItem", "run_batch", "scan", "summary"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
STATUSES = ("done", "skipped", "failed", "interrupted", "not started", "ignored")
RUN_MARKERS = ("checkpoint.pt", "done.json", "batch.json")  # a folder flowgif wrote


@dataclass
class BatchItem:
    """The outcome for one file of the folder.

    Attributes:
        image: the file's path relative to the batch folder.
        run: its run folder ("" when it has none).
        status: one of :data:`STATUSES`.
        reason: why it failed or was ignored, or a note ("resumed").
        seconds: time spent on it.
    """

    image: str
    run: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Scan:
    """A batch folder sorted out: pictures to train, and every other file with its reason."""

    pictures: list[Path]
    failed: list[tuple[Path, str]]
    ignored: list[tuple[Path, str]]


def scan(folder: Path, recursive: bool = False, skip: Path | None = None) -> Scan:
    """Sort the files of ``folder`` (sub-folders too when ``recursive``), in name order.

    Pictures are found by content, not suffix; a file whose suffix says picture but that does
    not decode is a failure, other files are ignored with a reason. ``skip`` (the output
    folder) and folders holding flowgif's own runs are not searched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FlowgifError(f"not a folder: {folder}")
    skip_at = skip.resolve() if skip is not None else None
    pictures: list[Path] = []
    failed: list[tuple[Path, str]] = []
    ignored: list[tuple[Path, str]] = []

    def visit(where: Path) -> None:
        try:
            entries = sorted(where.iterdir(), key=lambda p: p.name)
        except OSError as err:
            failed.append((where, f"cannot list this folder ({err.strerror or err})"))
            return
        for path in entries:
            if path.is_dir():
                if path.resolve() == skip_at:
                    ignored.append((path, "the output folder"))
                elif any((path / m).exists() for m in RUN_MARKERS):
                    ignored.append((path, "a folder of flowgif's own output"))
                elif path.name.startswith("."):
                    ignored.append((path, "a hidden folder"))
                elif not recursive:
                    ignored.append((path, "a sub-folder; a recursive batch includes it"))
                else:
                    visit(path)
                continue
            if not path.is_file():
                ignored.append((path, "not a regular file"))
            elif path.name.startswith("."):
                ignored.append((path, "a hidden file"))
            else:
                reason = _not_a_picture(path)
                if not reason:
                    pictures.append(path)
                elif path.suffix.lower() in PICTURE_SUFFIXES:
                    failed.append((path, reason))
                else:
                    ignored.append((path, "not a picture"))

    visit(folder)
    return Scan(pictures, failed, ignored)


def _not_a_picture(path: Path) -> str:
    """Why Pillow cannot read ``path`` as a picture, or "" if it can."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Image.DecompressionBombError:
        return ""  # a picture: let its run report it as too large
    except UnidentifiedImageError:
        return "not a picture Pillow can decode"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        return f"damaged picture ({err})"
    return ""


def run_names(folder: Path, pictures: list[Path]) -> list[str]:
    """One run-folder name per picture, distinct (a shared stem keeps the suffix too)."""
    folder = Path(folder)

    def base(p: Path, with_suffix: bool) -> str:
        rel = p.relative_to(folder)
        parts = [*rel.parent.parts, rel.stem + (f"-{rel.suffix[1:]}" if with_suffix else "")]
        return "__".join(parts) or "picture"

    plain = [base(p, False) for p in pictures]
    clash = {n for n in plain if plain.count(n) > 1}
    names = [base(p, True) if n in clash else n for p, n in zip(pictures, plain, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # anything still shared gets a number, in name order
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def _hashes(image: Path, config: Config, render: dict) -> dict[str, str]:
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


def _prepare(
    image: Path, run: Path, config: Config, render: dict, label: str, stop: Callable[[], bool]
) -> BatchItem | _Job:
    """Skip a picture that is done, make way for one to redo, or say how to go on."""
    from flowgif.run import CHECKPOINT, checkpoint_config, load_checkpoint
    from flowgif.train import budget_spent

    clock = time.perf_counter()
    keys = _hashes(image, config, render)
    done = _skipped(run, label, keys)
    if done is not None:
        return done
    if stop():
        return BatchItem(label, str(run), "not started", "the batch was stopped")
    resume, trained = False, False
    if (run / CHECKPOINT).is_file():
        try:
            ckpt = load_checkpoint(run / CHECKPOINT, for_resume=True)
            resume = ckpt.get("image_hash") == keys["image"] and checkpoint_config(ckpt) == config
            trained = resume and budget_spent(config, ckpt)
        except (FlowgifError, KeyError):
            resume = False
    if not resume and run.exists():
        _clear_run(run)
    return _Job(image, run, label, keys, resume, trained, clock)


def _finish(job: _Job, config: Config, render: dict) -> BatchItem:
    """Render, evaluate and mark done a trained picture."""
    from flowgif.evaluate import evaluate
    from flowgif.render import RenderOptions
    from flowgif.render import render as do_render
    from flowgif.run import load_run, resolve_device

    device = resolve_device(config.train.device)
    loaded = load_run(job.run, device)
    do_render(loaded, job.run / "flow.gif", RenderOptions(**render), device)
    write_thumbnail(job.image, job.run / "picture.png")
    figures = evaluate(loaded, n_nll=2000, n_samples=20_000, device=device, n_transport=500)
    atomic_write_text(job.run / "eval.json", json.dumps(figures, indent=2) + "\n")
    record = {
        "hashes": job.keys,
        "image": str(job.image),
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


def process_one(
    image: Path,
    run: Path,
    config: Config,
    render: dict,
    threads: int | None = None,
    label: str = "",
    stop: Callable[[], bool] | None = None,
) -> BatchItem:
    """Train (or resume) and render one picture; never raises for a bad picture."""
    return process_stack([(image, run, label or str(image))], config, render, threads, stop)[0]


def process_stack(
    tasks: list[tuple[Path, Path, str]],
    config: Config,
    render: dict,
    threads: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[BatchItem]:
    """Train (or resume) and render ``(picture, run folder, label)`` s; never raises for a bad
    picture. Two or more that need training train together, stacked
    (:func:`flowgif.stack.train_stack`); one trains alone (:func:`flowgif.train.train_run`).
    One item per task, in order."""
    stop = stop or _worker_stop
    clock = time.perf_counter()
    items: dict[int, BatchItem] = {}
    jobs: dict[int, _Job] = {}
    if threads:
        import torch

        torch.set_num_threads(threads)
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
    return [items[i] for i in range(len(tasks))]


def _train_alone(
    jobs: dict[int, _Job], config: Config, stop: Callable[[], bool]
) -> dict[int, BatchItem]:
    """Train one picture; an item only if it failed or was cut."""
    from flowgif.train import train_run

    ((i, job),) = jobs.items()
    try:
        train_run(job.image, config, job.run, resume=job.resume, stop=stop)
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

    from flowgif.run import resolve_device
    from flowgif.stack import train_stack
    from flowgif.train import RunFolder, TrainResult, open_run

    items: dict[int, BatchItem] = {}
    runs: dict[int, RunFolder] = {}
    for i, job in jobs.items():
        try:
            runs[i] = open_run(job.image, config, job.run, job.resume)
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


# What a batch writes into a run folder; only these are cleared before a picture is redone.
RUN_FILES = (
    "checkpoint.pt",
    "config.toml",
    "loss.csv",
    "samples.png",
    "flow.gif",
    "done.json",
    "eval.json",
    "picture.png",
)


def write_thumbnail(image: Path, out: Path, longer: int = 256) -> None:
    """A copy of the picture, at most ``longer`` pixels on its longer side, for the gallery."""
    from flowgif.files import SIGNATURE
    from flowgif.sources.picture import load_image

    img = load_image(image)
    img.thumbnail((longer, longer))
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SIGNATURE)
    atomic_write(out, lambda f: img.save(f, format="PNG", pnginfo=info))


def _clear_run(run: Path) -> None:
    """Make way for a fresh run: remove the files a batch wrote there, and nothing else.

    Raises:
        FlowgifError: ``run`` is not a folder, or holds files flowgif did not write.
    """
    if not run.is_dir():
        raise FlowgifError(f"{run} exists and is not a folder; move it away")
    sweep_stale(run)
    foreign = sorted(p.name for p in run.iterdir() if p.name not in RUN_FILES)
    if foreign:
        raise FlowgifError(
            f"{run} holds files flowgif did not write ({', '.join(foreign[:3])}); move them away"
        )
    for name in RUN_FILES:
        (run / name).unlink(missing_ok=True)


_STOP: list[int] = []  # set in a worker process by a signal


def _worker_stop() -> bool:
    return bool(_STOP)


def _worker_init(devices: Any = None) -> None:
    """In each worker: a signal asks the running picture to stop after its step; on a
    machine with several GPUs, the worker takes one of them (from the queue ``devices``)."""
    if devices is not None:
        with contextlib.suppress(queue.Empty):
            device = devices.get_nowait()
            import torch

            torch.cuda.set_device(device)

    def handler(signum: int, frame: object) -> None:
        _STOP.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_batch(
    folder: Path,
    out: Path,
    config: Config,
    render: dict,
    jobs: int = 1,
    recursive: bool = False,
    report: Callable[[BatchItem], None] | None = None,
    stop: Callable[[], bool] | None = None,
    engine: str = "local",
    ray: Any = None,
    stack: int | str = 1,
) -> list[BatchItem]:
    """Process every picture of ``folder`` into ``out``; see the module docstring.

    Args:
        folder: where the pictures are.
        out: where the run folders go (and ``batch.json``, rewritten after each picture).
        config: the training config for every picture.
        render: keyword arguments of :class:`flowgif.render.RenderOptions`.
        jobs: pictures processed at once (processes; 1 thread each when > 1).
        recursive: include sub-folders (never ``out`` itself).
        report: called with each finished item.
        stop: asked between pictures and between steps: when True, the running pictures
            save a checkpoint and stop, the rest are reported as not started.
        engine: ``local`` (this machine's processes) or ``ray`` (:mod:`flowgif.engines`).
        ray: :class:`flowgif.engines.RayOptions` for the ray engine.
        stack: pictures trained together as one stacked model (:mod:`flowgif.stack`), or
            ``auto`` (:func:`flowgif.stack.auto_stack`: 1 on a CPU, as many as fit on a GPU).
            On CUDA the local engine runs one process per visible GPU (``jobs`` is capped
            there), each training its stacks on its own device.

    Returns:
        One item per file of the folder, pictures first in name order, then the ignored ones.
    """
    from flowgif.render import RenderOptions

    RenderOptions(**render)  # a bad option fails here, before any work
    folder, out = Path(folder), Path(out)
    if recursive and out.resolve() == folder.resolve():
        raise FlowgifError(
            "batch.out is the picture folder itself: with batch.recursive give another output "
            "folder"
        )
    check_replaceable(out / "batch.json")
    check_replaceable(out / "index.html")
    found = scan(folder, recursive, skip=out)
    if not found.pictures and not found.failed:
        raise FlowgifError(f"no pictures found in {folder}")
    stop = stop or (lambda: False)

    def rel(p: Path) -> str:
        return str(p.relative_to(folder))

    names = run_names(folder, found.pictures)
    tasks = [(p, out / n, rel(p)) for p, n in zip(found.pictures, names, strict=True)]
    results: dict[str, BatchItem] = {}
    extra = [BatchItem(rel(p), "", "failed", why) for p, why in found.failed]
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
        results[item.image] = item
        if report:
            report(item)
        write_summary(out, ordered())

    for item in extra:
        if item.status == "failed" and report:
            report(item)
    if engine not in ("local", "ray"):
        raise FlowgifError(f"batch.engine {engine!r} is not one of: local, ray")
    todo = []
    for task in tasks:  # what is done already is reported now, so that stacks fill up
        image, run, label = task
        try:
            item = _skipped(run, label, _hashes(image, config, render))
        except OSError:
            item = None  # a picture that cannot be read: its worker says so
        if item is not None:
            finish(item)
        else:
            todo.append(task)
    size = _stack_size(stack, config, len(todo))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    if engine == "ray":
        from flowgif.engines import RayOptions, run_on_ray

        run_on_ray(chunks, config, render, ray or RayOptions(), finish, stop)
    else:
        _run_local(chunks, config, render, jobs, finish, stop)
    write_summary(out, ordered(), gallery=True)
    return ordered()


def _skipped(run: Path, label: str, keys: dict[str, str]) -> BatchItem | None:
    """The item of a picture whose ``done.json`` holds these hashes, else None (also for a
    damaged marker: the picture is done again)."""
    try:
        if json.loads((run / "done.json").read_text()).get("hashes") == keys:
            return BatchItem(label, str(run), "skipped", "already done")
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _stack_size(stack: int | str, config: Config, count: int) -> int:
    """The stack size asked for, or ``auto``'s; checked against the config."""
    from flowgif.stack import auto_stack, stack_problem

    if stack == "auto":
        return auto_stack(config, count)
    size = int(stack)
    if size < 1:
        raise FlowgifError(f"batch.stack must be auto or at least 1, not {stack}")
    problem = stack_problem(config) if size > 1 else ""
    if problem:
        raise FlowgifError(f"batch.stack {size}: {problem}")
    return size


def _run_local(
    chunks: list[list[tuple[Path, Path, str]]],
    config: Config,
    render: dict,
    jobs: int,
    finish: Callable[[BatchItem], None],
    stop: Callable[[], bool],
) -> None:
    """Each chunk (a stack) in this process, or in ``jobs`` worker processes; on CUDA one
    worker per visible GPU."""
    devices = _gpus(config)
    if devices:
        jobs = len(devices)  # one process per GPU: more would queue on the same device
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            if stop():
                break
            for item in process_stack(chunk, config, render, stop=stop):
                finish(item)
        return
    threads = None if devices else 1
    if not devices:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    import multiprocessing

    # CUDA cannot be used in a forked child of a process that touched it: spawn there.
    context = multiprocessing.get_context("spawn" if devices else None)
    spread = context.Queue()
    for device in devices:
        spread.put(device)
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(spread,)
    ) as pool:
        futures: dict[Future[list[BatchItem]], list[tuple[Path, Path, str]]] = {
            pool.submit(process_stack, chunk, config, render, threads): chunk for chunk in chunks
        }
        forwarded = False
        running = set(futures)
        while running:
            finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                if future.cancelled():
                    continue
                try:
                    items = future.result()
                except Exception as err:  # the worker process died (killed, out of memory)
                    why = f"its worker died ({err!r})"
                    items = [
                        BatchItem(lab, str(r), "failed", why) for _, r, lab in futures[future]
                    ]
                for item in items:
                    finish(item)
            if stop() and not forwarded:
                forwarded = True
                for future in running:
                    future.cancel()  # those not yet handed to a worker
                for proc in list(getattr(pool, "_processes", {}).values()):
                    with contextlib.suppress(OSError):  # a SIGTERM to this process alone
                        os.kill(proc.pid, signal.SIGTERM)  # must reach the workers too


def _gpus(config: Config) -> list[int]:
    """The CUDA devices a batch spreads over: every visible one when the device is ``auto``
    or ``cuda``; none on the CPU or for one named device (``cuda:1``)."""
    from flowgif.run import resolve_device

    device = resolve_device(config.train.device)
    if device.type != "cuda" or device.index is not None:
        return []
    import torch

    return list(range(torch.cuda.device_count()))


def summary(items: list[BatchItem]) -> dict[str, Any]:
    """Counts and items, for ``batch.json``."""
    counts = {s: sum(i.status == s for i in items) for s in STATUSES}
    return {**counts, "items": [dataclasses.asdict(i) for i in items]}


def write_summary(out: Path, items: list[BatchItem], gallery: bool = False) -> None:
    """``OUT/batch.json`` (after every picture), and with ``gallery`` the gallery
    ``OUT/index.html`` (once, at the end: it reads every run folder), atomically."""
    atomic_write_text(Path(out) / "batch.json", json.dumps(summary(items), indent=2) + "\n")
    if gallery:
        from flowgif.gallery import write_gallery

        write_gallery(out, items)
