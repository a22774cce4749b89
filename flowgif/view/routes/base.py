"""What the routes share: the server's state, and reading a request's settings."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from flowgif.errors import FlowgifError
from flowgif.view.jobs import Job, Pool, refusal
from flowgif.view.scene import inside_body, scene_body
from flowgif.view.training import Trainings

__all__ = [
    "PARTICLES",
    "REMEMBERED",
    "THUMBS",
    "State",
    "choice",
    "count",
    "error",
    "finite",
    "flow_body",
    "inside",
    "remember",
    "state_of",
]

PARTICLES = 20_000  # paths sent per picture (the page draws up to 15 x as many, jittered)
MAX_PARTICLES = 60_000
REMEMBERED = 8  # pictures kept for save and inside (each at most the upload cap)
THUMBS = 256  # thumbnails kept (a few KB each): a folder's list is not made again each time


@dataclass
class State:
    """The server's state: the folder it serves, its pool, and what it remembers (LRUs of
    :data:`REMEMBERED` pictures and cameras, :data:`THUMBS` thumbnails)."""

    folder: Path
    pool: Pool
    pictures: OrderedDict = field(default_factory=OrderedDict)  # id -> (data, text, ink, invert)
    cameras: OrderedDict = field(default_factory=OrderedDict)  # flow key -> (TIMES, 2) views
    thumbs: OrderedDict = field(default_factory=OrderedDict)  # (name, mtime) -> PNG
    thumbnailing: anyio.CapacityLimiter = field(  # thumbnails made at once (each loads a run)
        default_factory=lambda: anyio.CapacityLimiter(2)
    )
    trainings: Trainings = field(default_factory=Trainings)  # the trainings it started
    watches: OrderedDict = field(default_factory=OrderedDict)  # run name -> live.Watch
    solving: anyio.CapacityLimiter = field(  # networks solved at once for the page
        default_factory=lambda: anyio.CapacityLimiter(1)
    )


def state_of(request: Request) -> State:
    return request.app.state.view


def remember(store: OrderedDict, key: object, value: object, most: int = REMEMBERED) -> None:
    """Keep ``value`` under ``key``, forgetting the least recently kept beyond ``most``."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > most:
        store.popitem(last=False)


def error(message: str, status: int = 400, folder: Path | None = None) -> Response:
    """A refusal the page shows (:func:`flowgif.view.jobs.refusal`), FOLDER named as it was
    given rather than as the server resolves it."""
    if folder is not None:
        message = message.replace(str(folder.resolve()), str(folder))
    return refusal(message, status)


def count(request: Request) -> int:
    """The ``n`` particles asked for, within bounds."""
    try:
        n = int(request.query_params.get("n", PARTICLES))
    except ValueError:
        raise FlowgifError("n is a number of particles") from None
    return max(100, min(MAX_PARTICLES, n))


def choice(request: Request, name: str, choices: tuple, default: str) -> str:
    """The query parameter ``name``, one of ``choices``."""
    value = request.query_params.get(name, default)
    if value not in choices:
        raise FlowgifError(f"{name} is one of: {', '.join(map(str, choices))}")
    return value


def finite(figures: object, keys: tuple[str, ...]) -> dict:
    """The finite numbers among ``figures[keys]`` (an ``eval.json`` may hold NaN or anything)."""
    if not isinstance(figures, dict):
        return {}
    out = {}
    for k in keys:
        v = figures.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[k] = float(v)
    return out


def flow_body(state: State, key: str, make: Callable, n: int, job: Job) -> bytes:
    """The body of ``n`` particles of the scene ``make()`` builds; its camera is kept under
    ``key`` for what is inside it."""
    scene, extra = make()
    body, camera = scene_body(scene, n, job, extra)
    remember(state.cameras, key, camera)
    return body


def inside(state: State, key: str, make: Callable, job: Job) -> bytes:
    """``p_t`` and ``v`` of the scene ``make()`` builds, over the camera kept under ``key``
    (solved again when it was forgotten)."""
    scene, extra = make()
    if key not in state.cameras:
        _, camera = scene_body(scene, 2000, job, extra)
        remember(state.cameras, key, camera)
    return inside_body(scene, state.cameras[key], job)
