"""Training in the page: a picture on screen (or a run of the folder) trained by an ordinary
``flowgif train ... --live`` command, watched as it learns beside its exact flow.

- ``POST /api/train?id=PICTURE[&from=PICTURE]|run=NAME&method=fm&steps=N|minutes=M&keep=1``:
  start (or queue) the command (:mod:`flowgif.view.training`); the answer names the run and
  the command. ``from`` trains a morph of two pictures (``--from``: the ``morph`` recipe).
  ``run=NAME`` continues a run of the folder (``--resume``); a picture sent as bytes is kept
  in FOLDER as ``view-HASH.EXT`` (the command's ``--img``, so that it can be run again and
  resumed), never over a file that holds anything else.
- ``GET /api/train/NAME/next?after=STAMP``: waits (at most :data:`WAIT` s) for weights newer
  than ``STAMP`` or a change of state, then answers a body (:mod:`flowgif.view.live`): the
  training's state, its figures, and the network's paths when they are new. Any run of the
  folder may be watched: one trained by a command in a shell shows as training while its
  process holds the folder, its flow from each checkpoint.
- ``POST /api/train/NAME/pause|continue|stop``: SIGUSR1, SIGUSR2, SIGTERM to a training this
  server started (stop keeps its checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowgif.errors import FlowgifError
from flowgif.files import temp_name
from flowgif.view.live import EVERY, Watch
from flowgif.view.routes.base import choice, error, remember, state_of
from flowgif.view.routes.pictures import RESOLUTION, STEPS
from flowgif.view.routes.runs import run_name
from flowgif.view.saving import argument
from flowgif.view.scene import pack
from flowgif.view.training import BusyError, threads_for

__all__ = ["METHODS", "act", "keep_picture", "next_update", "start"]

METHODS = ("fm", "ffjord", "realnvp")  # the CLI's --method: flow matching, FFJORD, RealNVP
WAIT = 10.0  # seconds a watch waits for something new before answering anyway
MAX_STEPS = 1_000_000
MAX_MINUTES = 600.0
FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


def keep_picture(folder: Path, data: bytes) -> Path:
    """The sent picture as a file of ``folder``: ``view-HASH.EXT`` (HASH of its bytes), or
    the first ``view-HASH-K.EXT`` that is free; a file already there is used only when it
    holds these very bytes (nothing else is ever replaced)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            ext = FORMATS.get(img.format or "", "img")
    except Exception:
        ext = "img"  # not a picture: the command says so
    digest = hashlib.sha256(data).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        path = folder / (f"view-{digest}.{ext}" if k == 1 else f"view-{digest}-{k}.{ext}")
        k += 1
        try:
            if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
                return path
            if os.path.lexists(path):
                continue
        except OSError:
            continue
        tmp = temp_name(path)  # a name flowgif's sweep knows, should this process die here
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)  # fails if the name was taken meanwhile
            return path
        except FileExistsError:
            continue
        finally:
            tmp.unlink(missing_ok=True)


def _run_folder(folder: Path, stem: str, taken: dict) -> str:
    """The first free run name ``STEM``, ``STEM-2`` ...: nothing of that name in ``folder``,
    and none of this server's trainings (``taken``; a queued one has no folder yet). The
    command claims it; another process taking it first makes the command say so."""
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}-{k}"
        if name not in taken and not os.path.lexists(folder / name):
            return name
        k += 1


def _budget(request: Request) -> list[str]:
    q = request.query_params
    try:
        if q.get("minutes"):
            minutes = float(q["minutes"])
            if not 0 < minutes <= MAX_MINUTES:
                raise ValueError
            return ["--minutes", f"{minutes:g}"]
        steps = int(q.get("steps", "2000"))
        if not 0 < steps <= MAX_STEPS:
            raise ValueError
        return ["--steps", str(steps)]
    except ValueError:
        raise FlowgifError(
            f"the budget is steps (1 to {MAX_STEPS:,}) or minutes (up to {MAX_MINUTES:g})"
        ) from None


async def _picture_args(folder: Path, data: bytes | None, text: str | None, flag: str) -> list:
    """A picture of the page as the command's argument: ``--img PATH`` (the picture kept in
    FOLDER, :func:`keep_picture`) or ``--text=WORD`` (``--from text:WORD`` for a start)."""
    if text is not None:
        return [f"--text={text}"] if flag == "--img" else [f"{flag}=text:{text}"]
    picture = await anyio.to_thread.run_sync(keep_picture, folder, data)
    return [flag, argument(picture)]


async def start(request: Request) -> Response:
    state = state_of(request)
    folder, q = state.folder, request.query_params
    try:
        budget = _budget(request)
        keep = choice(request, "keep", ("0", "1"), "0") == "1"
        threads = ["--threads", str(threads_for(state.trainings.workers)), "--live"]
        if "run" in q:
            name = run_name(folder, q["run"])
            args = ["train", "--resume", argument(folder / name), *budget, *threads]
        elif q.get("id", "") in state.pictures:
            method = choice(request, "method", METHODS, "fm")
            data, text, ink, invert = state.pictures[q["id"]]
            what = await _picture_args(folder, data, text, "--img")
            stem = f"view-{q['id']}-{method}"
            if "from" in q:  # a morph: from the picture before
                if q["from"] not in state.pictures:
                    return error("drop the pictures of the morph again, then train")
                if method == "realnvp":
                    raise FlowgifError(
                        "RealNVP carries N(0, I) through its layers: it cannot morph"
                    )
                data0, text0, _, _ = state.pictures[q["from"]]
                what += await _picture_args(folder, data0, text0, "--from")
                stem = f"view-{q['from']}-to-{q['id']}-{method}"
            name = _run_folder(folder, stem, state.trainings.all)
            args = ["train", *what, "--method", method, "--resolution", str(RESOLUTION)]
            args += ["--ink", ink, *(["--invert"] if invert else []), *budget]
            args += ["--out", argument(folder / name), *threads]
        else:
            return error("drop the picture again, then train")
    except FlowgifError as e:
        return error(str(e), folder=folder)
    except OSError as e:
        return error(f"cannot write into {folder}: {e.strerror}", folder=folder)
    try:
        t = state.trainings.start(name, folder / name, args, keep)
    except BusyError:
        return error(f"busy: {state.trainings.workers} training(s) and a full queue", 503)
    return JSONResponse({**t.status(), "queued": state.trainings.position(t)})


def _status(state, folder: Path, name: str) -> dict:  # noqa: ANN001
    """A run's training state: this server's own training, else whether a process holds it."""
    t = state.trainings.get(name)
    if t is not None:
        out = t.status()
        if t.state == "queued":
            out["queued"] = state.trainings.position(t)
        return out
    from flowgif.store import in_use

    training = in_use(folder / name)
    return {"name": name, "state": "training" if training else "done", "line": "", "mine": False}


async def next_update(request: Request) -> Response:
    state = state_of(request)
    folder = state.folder
    name = request.path_params["name"]
    try:
        if state.trainings.get(name) is None:
            run_name(folder, name, training=True)
    except FlowgifError as e:
        return error(str(e), 404)
    after = request.query_params.get("after", "")
    watch = state.watches.get(name)
    if watch is None:
        watch = Watch(folder / name, STEPS)
        remember(state.watches, name, watch)
    t = state.trainings.get(name)
    if t is not None:
        state.trainings.seen_by(t, +1)
    try:
        began, status = time.monotonic(), _status(state, folder, name)
        looked = began
        was = request.query_params.get("state", "")
        while True:
            found = watch.source()
            stamp = "" if found is None else "-".join(map(str, found[1][1:]))
            due = time.monotonic() - watch.solved >= EVERY  # at most ~2 solves a second
            if (stamp != after and due) or status["state"] != was:
                break
            if time.monotonic() - began > WAIT:
                break
            if await request.is_disconnected():
                return Response(status_code=499)
            await anyio.sleep(0.05)
            if t is not None or time.monotonic() - looked > 1.0:  # a lock test: once a second
                status, looked = _status(state, folder, name), time.monotonic()
        body, figures = None, watch.figures
        if stamp and stamp != after:
            body, figures = await anyio.to_thread.run_sync(watch.update, limiter=state.solving)
            stamp = "-".join(map(str, watch.seen[1:])) if watch.seen else ""
    except FlowgifError as e:
        return error(str(e))
    finally:
        if t is not None:
            state.trainings.seen_by(t, -1)
    header = {"status": status, "figures": figures, "stamp": stamp}
    if body is None or stamp == after:
        return Response(pack(header, {}), media_type="application/octet-stream")
    return Response(_with_header(body, header), media_type="application/octet-stream")


def _with_header(body: bytes, extra: dict) -> bytes:
    """``body`` (:func:`flowgif.view.scene.pack`) with ``extra`` added to its header."""
    import json
    import struct

    (n,) = struct.unpack("<I", body[:4])
    header = {**json.loads(body[4 : 4 + n]), **extra}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 4)
    return struct.pack("<I", len(text)) + text + body[4 + n :]


async def act(request: Request) -> Response:
    state = state_of(request)
    name, what = request.path_params["name"], request.path_params["what"]
    t = state.trainings.get(name)
    if t is None:
        return error(f"no training of {name!r} was started here", 404)
    if what not in ("pause", "continue", "stop"):
        return error(f"a training may be paused, continued or stopped, not {what!r}", 404)
    state.trainings.signal(t, what)
    return JSONResponse(t.status())
