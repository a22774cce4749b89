"""Train and render every picture of a folder; resumable, and one bad picture stops nothing.

Each picture gets ``OUT/<name>/``. ``done.json`` is written last and holds the hashes of the
picture, the effective config and the render options: a later batch skips a picture whose
three hashes match, resumes one that has a checkpoint of the same picture and config, and
redoes the rest. ``--jobs N`` trains N pictures at once in separate processes, one torch
thread each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flowgif.config import Config, dump_toml
from flowgif.errors import FlowgifError

__all__ = ["BatchItem", "find_images", "run_batch"]


@dataclass
class BatchItem:
    """The outcome for one picture: ``done``, ``skipped`` or ``failed`` (with a reason)."""

    image: str
    run: str
    status: str
    reason: str = ""
    seconds: float = 0.0


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Files Pillow can open, found by content rather than suffix, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlowgifError(f"not a folder: {folder}")
    files = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    )
    images = []
    for path in files:
        try:
            with Image.open(path):
                images.append(path)
        except (UnidentifiedImageError, OSError, ValueError):
            continue
        except Image.DecompressionBombError:
            images.append(path)  # let the run report it as too large
    return images


def _run_name(folder: Path, image: Path) -> str:
    rel = image.relative_to(folder).with_suffix("")
    return "__".join(rel.parts)


def _hashes(image: Path, config: Config, render: dict) -> dict[str, str]:
    from flowgif.density import image_hash

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    return {
        "image": image_hash(image),
        "config": digest(dump_toml(config.to_dict())),
        "render": digest(json.dumps(render, sort_keys=True)),
    }


def process_one(
    image: Path, run: Path, config: Config, render: dict, threads: int | None = None
) -> BatchItem:
    """Train (or resume) and render one picture; never raises for a bad picture."""
    import time

    clock = time.perf_counter()
    try:
        import torch

        from flowgif.render import RenderOptions
        from flowgif.render import render as do_render
        from flowgif.run import (
            CHECKPOINT,
            atomic_write_text,
            load_checkpoint,
            load_run,
            resolve_device,
        )
        from flowgif.train import train_run

        if threads:
            torch.set_num_threads(threads)
            config = config.updated({"train.threads": threads})
        keys = _hashes(image, config, render)
        done = run / "done.json"
        if done.is_file():
            try:
                if json.loads(done.read_text()).get("hashes") == keys:
                    return BatchItem(str(image), str(run), "skipped", "already done")
            except (OSError, json.JSONDecodeError):
                pass  # a damaged marker means: do it again
        resume = False
        if (run / CHECKPOINT).is_file():
            try:
                ckpt = load_checkpoint(run / CHECKPOINT)
                resume = (
                    ckpt.get("image_hash") == keys["image"]
                    and Config.from_dict(ckpt["config"]) == config
                )
            except (FlowgifError, KeyError):
                resume = False
        train_run(image, config, run, resume=resume)
        device = resolve_device(config.train.device)
        do_render(load_run(run, device), run / "flow.gif", RenderOptions(**render), device)
        atomic_write_text(done, json.dumps({"hashes": keys, "image": str(image)}, indent=2))
        return BatchItem(
            str(image), str(run), "done", "resumed" if resume else "", time.perf_counter() - clock
        )
    except FlowgifError as err:
        return BatchItem(str(image), str(run), "failed", str(err), time.perf_counter() - clock)
    except Exception as err:  # a bug or resource error must not stop the other pictures
        last = traceback.extract_tb(err.__traceback__)[-1]
        reason = f"{type(err).__name__}: {err} ({Path(last.filename).name}:{last.lineno})"
        return BatchItem(str(image), str(run), "failed", reason, time.perf_counter() - clock)


def run_batch(
    folder: Path,
    out: Path,
    config: Config,
    render: dict,
    jobs: int = 1,
    recursive: bool = False,
    report: Callable[[BatchItem], None] | None = None,
) -> list[BatchItem]:
    """Process every picture of ``folder`` into ``out``; see the module docstring.

    Args:
        folder: where the pictures are.
        out: where the run folders go.
        config: the training config for every picture.
        render: keyword arguments of :class:`flowgif.render.RenderOptions`.
        jobs: pictures processed at once (processes; 1 thread each when > 1).
        recursive: include sub-folders.
        report: called with each finished item.
    """
    from flowgif.render import RenderOptions

    RenderOptions(**render)  # a bad option fails here, before any work
    images = find_images(folder, recursive)
    if not images:
        raise FlowgifError(f"no pictures found in {folder}")
    tasks = [(image, Path(out) / _run_name(Path(folder), image)) for image in images]
    items: list[BatchItem] = []
    if jobs <= 1:
        for image, run in tasks:
            items.append(process_one(image, run, config, render))
            if report:
                report(items[-1])
        return items
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(process_one, image, run, config, render, 1) for image, run in tasks]
        for future in as_completed(futures):
            items.append(future.result())
            if report:
                report(items[-1])
    order = {str(image): k for k, (image, _) in enumerate(tasks)}
    return sorted(items, key=lambda item: order[item.image])


def summary(items: list[BatchItem]) -> dict:
    """Counts and items, for ``batch.json``."""
    counts = {s: sum(i.status == s for i in items) for s in ("done", "skipped", "failed")}
    return {**counts, "items": [dataclasses.asdict(i) for i in items]}
