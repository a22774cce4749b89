"""The view's server: the page, the flows it plays (as binary paths), the run folders.

Routes:

- ``GET /``: the page; ``/static/...``: its script and style (shipped in the package).
- ``POST /api/flow``: a picture's bytes (or ``?text=WORD``) -> its exact flow
  (:mod:`flowgif.flows.exact`, the ``--method exact`` code) as paths.
- ``GET /api/runs``: the run folders under FOLDER; ``GET /api/runs/NAME/flow``: a run's flow
  (a trained network's ODE solved here) from the same noise.
- ``POST /api/save?id=...&particles=...&color=...&background=...&trail=...&format=gif``:
  what is on screen as a file, made by flowgif's own commands run as they are shown
  (``flowgif train --method exact`` into ``FOLDER/view-ID``, then ``flowgif render``) under a
  fresh name in FOLDER; the answer names the file and the command line, and ``GET
  /api/files/NAME`` downloads it.

Paths go out once per picture as one binary body: a little-endian ``uint32`` header length,
the header (JSON: particles, times, the frame's half extents) and ``int16`` positions
``(T, N, 2)`` scaled so that ``32767`` is the frame's half extent (a 512-px frame: a step of
1/64 px), ``T x N x 4`` bytes: 4.1 MB for 20,000 particles at 51 times. Heavy work runs in
a bounded pool of threads off the event loop (``workers``, each with its share of the idle
cores' torch threads); more waiting than :data:`QUEUE` gets 503 with ``Retry-After``.

Safe by default: only the Host names of the bound address are served (DNS rebinding: 400),
uploads over :data:`MAX_UPLOAD` get 413, a broken or foreign file gets the CLI's one-line
reason as 400, and run names are single folder names under FOLDER.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowgif.errors import FlowgifError

__all__ = ["MAX_UPLOAD", "QUEUE", "TIMES", "make_app"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 16 * 1024 * 1024  # bytes of one uploaded picture
QUEUE = 4  # requests that may wait for a worker; more are told to retry
TIMES = 51  # times of the paths sent, 0 to 1 (the page interpolates between them)
PARTICLES = 20_000  # paths sent per picture (the page draws up to 10 x as many, jittered)
MAX_PARTICLES = 60_000
RESOLUTION = 256  # the working grid of a dropped picture (the exact flow: about a second)
STEPS = 32  # the exact flow's solver steps here (48 for --method exact): bench/EXACT.md
# measured 32 against 48 on github.png at 256 px: tv 0.0482 against 0.0473, on_ink 0.9993
# against 0.9994, 0.92 s against 1.38 s


def _paths_body(paths: np.ndarray, half: tuple[float, float], extra: dict) -> bytes:
    """The binary body: header length, header JSON, int16 positions ``(T, N, 2)``."""
    scale = max(half) * 1.25  # room for paths that leave the frame a little
    q = np.clip(np.round(paths / scale * 32767), -32767, 32767).astype("<i2")
    header = json.dumps(
        {
            "times": paths.shape[0],
            "particles": paths.shape[1],
            "scale": scale,
            "half": list(half),
            **extra,
        }
    ).encode()
    header += b" " * (-len(header) % 4)  # int16 data 4-byte aligned after the length
    return struct.pack("<I", len(header)) + header + q.tobytes()


def _flow_paths(flow, n: int, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    """``(TIMES, n, 2)`` points of a flow from ``n`` start points drawn with ``seed``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    z = flow.starts(n, gen, shown=True)
    with torch.no_grad():
        paths = flow.paths(z, torch.linspace(0, 1, TIMES, dtype=z.dtype))
    return paths.detach().cpu().numpy()


def picture_id(data: bytes | None, text: str | None) -> str:
    """A picture's (or word's) name on this server: the start of its SHA-256."""
    raw = data if data is not None else ("text:" + (text or "")).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def picture_flow(data: bytes | None, text: str | None, n: int) -> bytes:
    """The exact flow of a picture (its bytes) or a word, as the binary body."""
    from flowgif.config import load_config
    from flowgif.flows.exact import ExactFlow
    from flowgif.sources import load_source, spec

    dc = load_config("default").updated({"density.resolution": RESOLUTION}).density
    with tempfile.TemporaryDirectory() as tmp:
        if text is not None:
            source = load_source(spec(f"text:{text}"), dc)
        else:
            path = Path(tmp) / "picture"
            path.write_bytes(data or b"")
            try:
                source = load_source(spec(str(path)), dc)
            except FlowgifError as e:  # the reason, about the file the person sent
                raise FlowgifError(str(e).replace(str(path), "the file")) from None
    end = source.density
    paths = _flow_paths(ExactFlow(end, steps=STEPS), n)
    label = source.label if text else "picture"
    return _paths_body(paths, end.half, {"label": label, "id": picture_id(data, text)})


COLORS = ("position", "mono")
BACKGROUNDS = ("light", "dark")


def save(folder: Path, data: bytes | None, text: str | None, settings: dict) -> dict:
    """Write what the page shows as a GIF or MP4 in ``folder`` by flowgif's own commands, run
    as they are shown: the exact flow's run folder ``view-ID`` (made once), then ``flowgif
    render`` into a fresh ``view-ID-K.EXT``. Returns the file's name and both commands."""
    pid = picture_id(data, text)
    run = folder / f"view-{pid}"
    folder.mkdir(parents=True, exist_ok=True)
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        if not (run / "checkpoint.pt").is_file():
            if text is not None:
                what = ["--text", text]
            else:
                pic = Path(tmp) / "picture"
                pic.write_bytes(data or b"")
                what = ["--img", str(pic)]
            train = ["train", *what, "--method", "exact", "--resolution", str(RESOLUTION)]
            commands.append(_flowgif([*train, "--out", str(run)]))
        ext = settings["format"]
        k = 1
        while (folder / f"view-{pid}-{k}.{ext}").exists():
            k += 1
        out = folder / f"view-{pid}-{k}.{ext}"
        render = ["render", str(run), "--out", str(out), "--particles", str(settings["particles"])]
        render += ["--color", settings["color"], "--background", settings["background"]]
        if settings["trail"]:
            render += ["--trail", str(settings["trail"])]
        commands.append(_flowgif(render))
    return {"file": out.name, "command": commands[-1], "commands": commands}


def _flowgif(args: list[str]) -> str:
    """Run ``flowgif ARGS`` as its own process; its command line (raises its one line)."""
    done = subprocess.run(
        [sys.executable, "-m", "flowgif", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise FlowgifError(lines[-1].removeprefix("error: ") if lines else "flowgif failed")
    return "flowgif " + " ".join(shlex.quote(a) for a in args)


def run_flow(folder: Path, name: str, n: int) -> bytes:
    """A run folder's flow (its own method: a network's ODE solved here) as the body."""
    from flowgif.store import load_run

    run = load_run(folder / name)
    paths = _flow_paths(run.flow, n)
    return _paths_body(paths, run.density.half, {"label": name, "method": run.config.train.method})


def list_runs(folder: Path) -> list[dict]:
    """The run folders directly under ``folder`` (those with flowgif's checkpoint)."""
    from flowgif.store import CHECKPOINT

    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.is_symlink() and (p / CHECKPOINT).is_file():
            entry = {"name": p.name}
            ev = p / "eval.json"
            if ev.is_file():
                try:
                    figures = json.loads(ev.read_text(encoding="utf-8"))
                    entry["eval"] = {k: figures[k] for k in ("kl", "tv", "on_ink") if k in figures}
                except (OSError, ValueError):
                    pass
            out.append(entry)
    return out


def _run_name(folder: Path, name: str) -> str:
    """``name`` if it is one folder directly under ``folder`` (never outside it)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise FlowgifError(f"not a run name: {name!r}")
    path = folder / name
    if path.is_symlink() or not path.is_dir() or path.resolve().parent != folder.resolve():
        raise FlowgifError(f"no run named {name!r} in {folder}")
    return name


def _count(request: Request) -> int:
    try:
        n = int(request.query_params.get("n", PARTICLES))
    except ValueError:
        raise FlowgifError("n is a number of particles") from None
    return max(100, min(MAX_PARTICLES, n))


def make_app(folder: Path, hosts: list[str], workers: int = 1) -> Starlette:
    """The view's ASGI app.

    Args:
        folder: the run folders it lists (and never reads outside of).
        hosts: the Host names it answers (the bound address's); others get 400.
        workers: heavy jobs at once (threads off the event loop).
    """
    folder = Path(folder)
    limiter = anyio.CapacityLimiter(workers)
    waiting = [0]
    pictures: dict[str, tuple[bytes | None, str | None]] = {}  # the last few, by id

    def remember(data: bytes | None, text: str | None) -> None:
        if len(pictures) >= 8:
            pictures.pop(next(iter(pictures)))
        pictures[picture_id(data, text)] = (data, text)

    async def heavy(fn, *args, as_json: bool = False) -> Response:  # noqa: ANN001, ANN002
        if waiting[0] >= workers + QUEUE:
            return JSONResponse(
                {"error": "busy: other pictures are being computed; retry in 2 s"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        waiting[0] += 1
        try:
            body = await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        except FlowgifError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        finally:
            waiting[0] -= 1
        if as_json:
            return JSONResponse(body)
        return Response(body, media_type="application/octet-stream")

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def flow(request: Request) -> Response:
        try:
            n = _count(request)
        except FlowgifError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        text = request.query_params.get("text")
        if text is not None:
            remember(None, text[:64])
            return await heavy(picture_flow, None, text[:64], n)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_UPLOAD:
            return _too_large()
        data = io.BytesIO()
        async for chunk in request.stream():
            data.write(chunk)
            if data.tell() > MAX_UPLOAD:
                return _too_large()
        if not data.tell():
            return JSONResponse({"error": "no picture was sent"}, status_code=400)
        remember(data.getvalue(), None)
        return await heavy(picture_flow, data.getvalue(), None, n)

    async def runs(request: Request) -> Response:
        return JSONResponse({"folder": str(folder), "runs": list_runs(folder)})

    async def a_run(request: Request) -> Response:
        try:
            name = _run_name(folder, request.path_params["name"])
            n = _count(request)
        except FlowgifError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        return await heavy(run_flow, folder, name, n)

    async def save_route(request: Request) -> Response:
        q = request.query_params
        try:
            data, text = pictures[q.get("id", "")]
            settings = {
                "particles": max(1000, min(200_000, int(q.get("particles", PARTICLES)))),
                "color": q.get("color", "position"),
                "background": q.get("background", "light"),
                "trail": max(0, min(30, int(q.get("trail", 0)))),
                "format": q.get("format", "gif"),
            }
        except (KeyError, ValueError):
            return JSONResponse({"error": "drop the picture again, then save"}, status_code=400)
        if (
            settings["color"] not in COLORS
            or settings["background"] not in BACKGROUNDS
            or settings["format"] not in ("gif", "mp4")
        ):
            return JSONResponse({"error": "not a setting the page has"}, status_code=400)
        return await heavy(save, folder, data, text, settings, as_json=True)

    async def files(request: Request) -> Response:
        name = request.path_params["name"]
        path = folder / name
        ok = name.startswith("view-") and name.endswith((".gif", ".mp4")) and "/" not in name
        if not ok or path.is_symlink() or not path.is_file():
            return JSONResponse({"error": f"no saved file named {name!r}"}, status_code=404)
        return FileResponse(path, filename=name)

    routes = [
        Route("/", index),
        Route("/api/flow", flow, methods=["POST"]),
        Route("/api/runs", runs),
        Route("/api/runs/{name:path}/flow", a_run),
        Route("/api/save", save_route, methods=["POST"]),
        Route("/api/files/{name}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(routes=routes, middleware=middleware)


def _too_large() -> Response:
    return JSONResponse(
        {"error": f"the picture is over {MAX_UPLOAD // (1024 * 1024)} MB"}, status_code=413
    )
