"""The run folders under FOLDER, each played beside the exact flow of its picture.

- ``GET /api/runs``: the run folders with the figures of their ``eval``.
- ``GET /api/runs/NAME/thumb``: a small picture of the run's end.
- ``GET /api/runs/NAME/flow``: the run's flow (a trained network's ODE solved here) and
  ``GET /api/runs/NAME/exact``: the exact flow of the same picture, both from the same noise.
- ``GET /api/runs/NAME/inside?of=run|exact``: what is inside either.

A NAME is a run only if :func:`list_runs` lists it: one folder directly under FOLDER (not a
symbolic link) that holds flowgif's checkpoint; anything else is 404.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowgif.errors import FlowgifError
from flowgif.view.jobs import Job
from flowgif.view.routes.base import (
    THUMBS,
    choice,
    count,
    error,
    finite,
    flow_body,
    inside,
    remember,
    state_of,
)
from flowgif.view.routes.pictures import STEPS
from flowgif.view.scene import Scene, exact_scene, run_scene

__all__ = ["a_run", "list_runs", "run_name", "runs", "thumbnail"]

FIGURES = ("kl", "tv", "on_ink", "floor")


def _is_run(path: Path, training: bool = False) -> bool:
    """Whether ``path`` is a run folder of FOLDER: flowgif's checkpoint in it (or, with
    ``training``, the ``live.pt`` of a run training before its first checkpoint)."""
    from flowgif.store import CHECKPOINT, LIVE

    names = (CHECKPOINT, LIVE) if training else (CHECKPOINT,)
    try:
        if not path.is_dir() or path.is_symlink():
            return False
        return any((path / n).is_file() and not (path / n).is_symlink() for n in names)
    except OSError:  # a name too long, a folder that may not be searched
        return False


def list_runs(folder: Path) -> list[dict]:
    """The run folders directly under ``folder`` (those with flowgif's checkpoint, or
    training before it), with the finite figures of their ``eval``, whether a process is
    training them now, and ``computed`` for the flows computed from their ends."""
    from flowgif.store import in_use

    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []
    out = []
    for p in entries:
        if not _is_run(p, training=True):
            continue
        entry: dict = {"name": p.name, "training": in_use(p)}
        if _computed(p):
            entry["computed"] = True  # the exact or OT flow: nothing to train further
        try:
            figures = json.loads((p / "eval.json").read_text(encoding="utf-8"))
            entry["eval"] = finite(figures, FIGURES)
        except (OSError, ValueError):
            pass
        out.append(entry)
    return out


def _computed(path: Path) -> bool:
    """Whether the run's config says it is computed from its ends (``train.objective`` is
    ``exact``: the exact flow, the optimal-transport map), not trained."""
    import tomllib

    try:
        config = tomllib.loads((path / "config.toml").read_text(encoding="utf-8"))
        return config.get("train", {}).get("objective") == "exact"
    except (OSError, ValueError, AttributeError):
        return False


def run_name(folder: Path, name: str, training: bool = False) -> str:
    """``name`` if it is a run :func:`list_runs` would list (never anything outside FOLDER);
    with ``training``, also one training before its first checkpoint.

    Raises:
        FlowgifError: not such a run.
    """
    bad = not name or name in (".", "..") or any(c in name for c in "/\\\0")
    if bad or len(name.encode("utf-8", "surrogateescape")) > 255:
        raise FlowgifError("not a run name")
    path = folder / name
    if not _is_run(path, training) or path.resolve().parent != folder.resolve():
        raise FlowgifError(f"no run named {name!r} in this folder")
    return name


def thumbnail(folder: Path, name: str, job: Job) -> bytes:
    """A PNG of the run's end (its ink in the picture's colours), 96 px on the longer side."""
    from PIL import Image

    from flowgif.store import load_run

    run = load_run(folder / name)
    d = run.density
    ink = d.probs_np.reshape(d.grid)
    a = (ink / max(float(ink.max()), 1e-30))[..., None] ** 0.5
    rgb = 255 * (1 - a) + run.colors.astype(float) * a
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    f = 96 / max(img.size)  # a small grid grows (in blocks), a large one shrinks (smoothly)
    fit = (max(1, round(img.width * f)), max(1, round(img.height * f)))
    img = img.resize(fit, Image.Resampling.NEAREST if f > 1 else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def maker(folder: Path, name: str, of: str) -> Callable[[], tuple[Scene, dict]]:
    """What builds the scene of run ``name`` (``of="run"``) or of its picture's exact flow."""

    def make() -> tuple[Scene, dict]:
        from flowgif.store import CHECKPOINT, LIVE, load_run

        # a run training before its first checkpoint: its weights now
        file = CHECKPOINT if (folder / name / CHECKPOINT).is_file() else LIVE
        run = load_run(folder / name, file=file)
        if of == "exact":
            scene = exact_scene(run.density, run.colors, run.start, run.start_colors, STEPS)
            return scene, {"label": f"the exact flow of {name}", "method": "exact"}
        method = f"{run.config.train.objective}/{run.config.train.family}"
        return run_scene(run), {"label": name, "method": method}

    return make


async def runs(request: Request) -> Response:
    folder = state_of(request).folder
    found = await anyio.to_thread.run_sync(list_runs, folder)
    return JSONResponse({"folder": str(folder), "runs": found})


async def a_run(request: Request) -> Response:
    state = state_of(request)
    folder = state.folder
    try:
        name = run_name(folder, request.path_params["name"])
        what = request.path_params["what"]
        n = count(request)
        of = choice(request, "of", ("run", "exact"), "run")
    except FlowgifError as e:
        return error(str(e), 404)
    if what == "thumb":
        return await _thumb(request, folder, name)
    if what in ("flow", "exact"):
        of = "exact" if what == "exact" else "run"
        make = maker(folder, name, of)
        return await state.pool.run(request, flow_body, state, f"{of}:{name}", make, n)
    if what == "inside":
        make = maker(folder, name, of)
        return await state.pool.run(request, inside, state, f"{of}:{name}", make)
    return error(f"no such thing as {what!r} of a run", 404)


async def _thumb(request: Request, folder: Path, name: str) -> Response:
    from flowgif.store import CHECKPOINT

    state = state_of(request)
    try:
        key = (name, (folder / name / CHECKPOINT).stat().st_mtime)
        if key not in state.thumbs:
            png = await anyio.to_thread.run_sync(
                thumbnail, folder, name, Job(), limiter=state.thumbnailing
            )
            remember(state.thumbs, key, png, THUMBS)
    except FlowgifError as e:
        return error(str(e), folder=folder)
    except OSError as e:
        return error(f"cannot read the run: {e.strerror}", 404)
    return Response(state.thumbs[key], media_type="image/png")
