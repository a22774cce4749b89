"""The view's server: the page, the flows it plays (binary bodies, :mod:`flowgif.view.scene`),
the run folders, and saving what is on screen.

Routes:

- ``GET /``: the page; ``/static/...``: its script and style (shipped in the package).
- ``POST /api/flow?ink=...&invert=1``: a picture's bytes (or ``?text=WORD``) -> its exact flow
  (:mod:`flowgif.flows.exact`, the ``--method exact`` code, with the CLI's ``--ink``).
- ``GET /api/inside?id=...``: that flow's ``p_t`` and ``v`` on a grid at each time.
- ``GET /api/runs``: the run folders under FOLDER, with their ``eval`` figures;
  ``GET /api/runs/NAME/thumb``: a small picture of the run's end;
  ``GET /api/runs/NAME/flow``: the run's flow (a trained network's ODE solved here) and
  ``GET /api/runs/NAME/exact``: the exact flow of the same picture, both from the same noise;
  ``GET /api/runs/NAME/inside?of=run|exact``: what is inside either.
- ``GET /api/progress/JOB``: how far the work a request named with ``?job=JOB`` has come.
- ``POST /api/save?id=...&particles=...&color=...&background=...&trail=...&pace=...&format=``:
  what is on screen as a file, made by flowgif's own commands run as they are shown
  (``flowgif train --method exact`` into ``FOLDER/view-ID``, then ``flowgif render``) under a
  fresh name in FOLDER; the answer names the file and the command line, and ``GET
  /api/files/NAME`` downloads it.

Heavy work runs in a bounded pool of threads off the event loop (``workers``, each with its
share of the idle cores' torch threads); more waiting than :data:`QUEUE` gets 503 with
``Retry-After``, before an upload is read. A request whose connection closes (a closed tab)
cancels its work: still queued, it never starts; running, it stops at its next part.

Safe by default: only the Host names of the bound address are served (DNS rebinding: 400),
uploads over :data:`MAX_UPLOAD` get 413, a broken or foreign file gets the CLI's one-line
reason as 400, and run names are single folder names under FOLDER.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import logging
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowgif.config.flags import as_flags
from flowgif.errors import FlowgifError
from flowgif.view.scene import CancelledError, Job, Scene, exact_scene, inside_body, run_scene
from flowgif.view.scene import scene_body as _scene_body

__all__ = ["MAX_UPLOAD", "QUEUE", "make_app", "warm_up"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 16 * 1024 * 1024  # bytes of one uploaded picture
QUEUE = 4  # requests that may wait for a worker; more are told to retry
PARTICLES = 20_000  # paths sent per picture (the page draws up to 15 x as many, jittered)
MAX_PARTICLES = 60_000
RESOLUTION = 256  # the working grid of a dropped picture (the exact flow: about a second)
STEPS = 32  # the exact flow's solver steps here (48 for --method exact): bench/EXACT.md
# measured 32 against 48 on github.png at 256 px: tv 0.0482 against 0.0473, on_ink 0.9993
# against 0.9994, 0.92 s against 1.38 s
INKS = ("auto", "darkness", "local", "shape")  # the CLI's --ink
COLORS = ("position", "image", "target", "density", "mono")  # the CLI's --color
BACKGROUNDS = ("light", "dark")
PACES = ("shape", "time")
TRAILS = (0, 4, 8, 16)
REMEMBERED = 8  # pictures kept for save and inside (each at most MAX_UPLOAD)
_IDLE: list[float] = []  # idle cores over the last second, kept by one watcher thread
_NAMES = threading.Lock()  # guards the two below, shared by the workers' saves
_TAKEN: set[Path] = set()  # files being saved now (a fresh name each)
_MAKING: dict[Path, threading.Lock] = {}  # a picture's run folder is trained once at a time
JOB = re.compile(r"[A-Za-z0-9-]{1,64}")


def picture_id(
    data: bytes | None, text: str | None, ink: str = "auto", invert: bool = False
) -> str:
    """A picture's (or word's) name on this server: the start of a SHA-256 of it and how its
    ink is read."""
    raw = data if data is not None else ("text:" + (text or "")).encode()
    how = f"\0ink:{ink}" + ("\0invert" if invert else "")
    return hashlib.sha256(raw + how.encode()).hexdigest()[:12]


def picture_scene(
    data: bytes | None, text: str | None, ink: str, invert: bool = False
) -> tuple[Scene, str]:
    """The exact flow of a picture (its bytes) or a word as a scene, and its label."""
    from flowgif.config import load_config
    from flowgif.sources import load_source, spec
    from flowgif.sources.picture import ink_colors

    how = {"density.resolution": RESOLUTION, "density.ink": ink, "density.invert": invert}
    dc = load_config("default").updated(how)
    dc = dc.density
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
    made = end.ink.ink if getattr(end, "ink", None) is not None else None
    colors = ink_colors(source.picture, end.grid, dc.invert, made)
    return exact_scene(end, colors, steps=STEPS), source.label if text else "picture"


def use_idle_cores(workers: int) -> int:
    """Give torch the cores idle now, shared among ``workers`` (at least one thread each), at
    the start of each job: a server runs for hours, and cores picked once at its start are
    oversubscribed when the machine gets busy later (a drop took 2.1-2.6 s instead of
    1.1-1.3 s beside one busy process on 2 cores). The idle cores are measured over the last
    second by a watcher thread (this process's own work counts as idle), so a job waits for
    no measurement. Returns the threads set."""
    import torch

    from flowgif.device import idle_cores, pick_threads

    with _NAMES:
        if not _IDLE:
            _IDLE.append(idle_cores())

            def watch() -> None:
                while True:
                    _IDLE[0] = idle_cores(1.0)

            threading.Thread(target=watch, daemon=True, name="flowgif-idle-cores").start()
    threads = max(1, pick_threads(_IDLE[0]) // workers)
    torch.set_num_threads(threads)
    return threads


def warm_up() -> None:
    """Import and run once what a drop runs (a word's exact flow, a few particles), so the
    first picture a person drops flows as fast as the later ones."""
    try:
        use_idle_cores(1)
        scene, _ = picture_scene(None, "warm", "auto", False)
        _scene_body(scene, 500, Job(), {})
    except Exception:  # only a head start: a real drop says what went wrong
        pass


def save(folder: Path, data: bytes | None, text: str | None, settings: dict, job: Job) -> dict:
    """Write what the page shows as a GIF or MP4 in ``folder`` by flowgif's own commands, run
    as they are shown: the exact flow's run folder ``view-ID`` (made once), then ``flowgif
    render`` into a fresh ``view-ID-K.EXT``. Returns the file's name and both commands."""
    if settings.get("run"):  # a run of the folder: rendered as it is
        pid, run = settings["run"], folder / settings["run"]
    else:
        pid = picture_id(data, text, settings["ink"], settings["invert"])
        run = folder / f"view-{pid}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowgifError(f"cannot write into {folder}: {e.strerror}") from None
    commands = []
    with _NAMES:
        making = _MAKING.setdefault(run, threading.Lock())
    with tempfile.TemporaryDirectory() as tmp, making:  # one train of a picture at a time
        if not settings.get("run") and not (run / "checkpoint.pt").is_file():
            if text is not None:
                what = ["--text", text]
            else:
                pic = Path(tmp) / "picture"
                pic.write_bytes(data or b"")
                what = ["--img", str(pic)]
            train = ["train", *what, "--method", "exact", "--resolution", str(RESOLUTION)]
            train += ["--ink", settings["ink"]] + (["--invert"] if settings["invert"] else [])
            commands.append(_flowgif([*train, "--out", str(run)], job))
    ext = settings["format"]
    with _NAMES:  # a name no file has and no other save has chosen
        k = 1
        while (out := folder / f"view-{pid}-{k}.{ext}").exists() or out in _TAKEN:
            k += 1
        _TAKEN.add(out)
    try:
        render = ["render", str(run), "--out", str(out), "--particles", str(settings["particles"])]
        render += ["--color", settings["color"], "--background", settings["background"]]
        render += ["--pace", settings["pace"]]
        if settings["trail"]:
            render += ["--trail", str(settings["trail"])]
        commands.append(_flowgif(render, job))
    finally:
        with _NAMES:
            _TAKEN.discard(out)
    return {"file": out.name, "command": commands[-1], "commands": commands}


def _flowgif(args: list[str], job: Job) -> str:
    """Run ``flowgif ARGS`` as its own process (stopped if the page goes); its command line
    (raises its one line)."""
    job.check()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgif", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while True:
        try:
            _, stderr = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if job.cancelled.is_set():
                proc.terminate()  # flowgif writes to a temporary name: nothing half-written
                proc.wait()
                raise CancelledError from None
    if proc.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        raise FlowgifError(lines[-1].removeprefix("error: ") if lines else "flowgif failed")
    return "flowgif " + " ".join(shlex.quote(a) for a in args)


def _load_run(folder: Path, name: str):  # noqa: ANN202
    from flowgif.store import load_run

    return load_run(folder / name)


def list_runs(folder: Path) -> list[dict]:
    """The run folders directly under ``folder`` (those with flowgif's checkpoint), with the
    figures of their ``eval``."""
    from flowgif.store import CHECKPOINT

    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.is_symlink() and (p / CHECKPOINT).is_file():
            entry: dict = {"name": p.name}
            ev = p / "eval.json"
            if ev.is_file():
                try:
                    figures = json.loads(ev.read_text(encoding="utf-8"))
                    keys = ("kl", "tv", "on_ink", "floor")
                    entry["eval"] = {
                        k: figures[k] for k in keys if isinstance(figures.get(k), (int, float))
                    }
                except (OSError, ValueError, AttributeError):
                    pass
            out.append(entry)
    return out


def thumbnail(folder: Path, name: str, job: Job) -> bytes:
    """A PNG of the run's end (its ink in the picture's colours), 96 px on the longer side."""
    from PIL import Image

    run = _load_run(folder, name)
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


def _choice(request: Request, name: str, choices: tuple, default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise FlowgifError(f"{name} is one of: {', '.join(map(str, choices))}")
    return value


def _error(message: str, status: int = 400) -> Response:
    """A refusal the page shows: one line, its settings named as the page's controls are (the
    command line's flags)."""
    return JSONResponse({"error": as_flags(message)}, status_code=status)


def host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``,
    ``localhost:8000`` -> ``localhost``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _an_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _SameHost:
    """Refuse (400) a request whose Host header is a name other than the server's own, against
    DNS rebinding: a page on an attacker's name made to resolve to this machine. An address
    (``192.0.2.7:8000``, ``[::1]:8000``) is always let through, as Vite's dev server does: a
    page can only send it from that address's own origin, and it is how other machines reach
    ``--host 0.0.0.0``. Starlette's TrustedHostMiddleware cuts ``[::1]:8000`` at its first
    colon, and so refused every request to an IPv6 address.

    A POST whose Origin is not this server (another site's page posting a picture or a save
    to this machine: cross-site request forgery) gets 403."""

    def __init__(self, app: Callable, hosts: list[str]) -> None:
        self.app = app
        self.hosts = {h.strip("[]").lower() for h in hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            header = headers.get(b"host", b"").decode("latin-1")
            name = host_name(header).lower()
            if name not in self.hosts and not _an_address(name):
                await PlainTextResponse("Invalid host header", 400)(scope, receive, send)
                return
            # another site's page may send a POST here (it cannot read the answer); the page's
            # own requests name this server as their origin
            origin = headers.get(b"origin")
            posted = scope.get("method", "GET") != "GET" and origin is not None
            if posted and urlsplit(origin.decode("latin-1")).netloc.lower() != header.lower():
                await PlainTextResponse("Cross-origin request refused", 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_app(folder: Path, hosts: list[str], workers: int = 1) -> Starlette:
    """The view's ASGI app.

    Args:
        folder: the run folders it lists (and never reads outside of).
        hosts: the Host names it answers (the bound address's); others get 400.
        workers: heavy jobs at once (threads off the event loop).
    """
    folder = Path(folder)
    limiter = anyio.CapacityLimiter(workers)
    few = anyio.CapacityLimiter(2)  # thumbnails made at once (each loads a run)
    admitted = [0]
    stats: Counter = Counter()  # started, finished, cancelled, refused (app.state.stats)
    jobs: OrderedDict[str, Job] = OrderedDict()  # by the page's ?job= name
    live: dict[int, Job] = {}  # every admitted request's job (app.state.cancel_all stops them)
    pictures: OrderedDict[str, tuple[bytes | None, str | None, str, bool]] = OrderedDict()
    views: OrderedDict[str, np.ndarray] = OrderedDict()  # each flow's camera, for inside
    thumbs: dict[tuple[str, float], bytes] = {}

    def keep(store: OrderedDict, key: str, value: object) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > REMEMBERED:
            store.popitem(last=False)

    async def admit(request: Request, work: Callable[[Job], Awaitable[Response]]) -> Response:
        """Run ``work`` if a place is free (else 503 with Retry-After), cancelling its job
        when the request's connection closes."""
        if admitted[0] >= workers + QUEUE:
            stats["refused"] += 1
            return JSONResponse(
                {"error": "busy: other pictures are being computed; retry in 2 s"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        admitted[0] += 1
        job = Job()
        live[id(job)] = job
        name = request.query_params.get("job", "")
        if JOB.fullmatch(name):
            keep(jobs, name, job)
        try:
            return await work(job)
        finally:
            admitted[0] -= 1
            live.pop(id(job), None)

    async def heavy(request: Request, job: Job, fn: Callable, *args: object) -> object:
        """``fn(*args, job)`` in a worker thread; None if the page went away meanwhile."""

        def run() -> object:
            job.check()
            job.running = True
            stats["started"] += 1
            use_idle_cores(workers)
            try:
                return fn(*args, job)
            finally:
                stats["finished"] += 1

        async def watch(scope: anyio.CancelScope) -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    job.cancelled.set()
                    scope.cancel()
                    return

        out, failed = None, None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            try:
                out = await anyio.to_thread.run_sync(run, limiter=limiter)
            except CancelledError:
                pass
            except Exception as e:  # raised after the task group, not wrapped by it
                failed = e
            finally:
                tg.cancel_scope.cancel()
        if job.cancelled.is_set():
            stats["cancelled"] += 1
            return None
        if failed is not None:
            raise failed
        return out

    async def answer(request: Request, job: Job, fn: Callable, *args: object) -> Response:
        try:
            out = await heavy(request, job, fn, *args)
        except FlowgifError as e:
            return _error(str(e))
        except Exception as e:  # a fault of flowgif's: one line in the page and in the log
            reason = f"{fn.__name__} failed: {type(e).__name__}: {e}".splitlines()[0]
            logging.getLogger("flowgif.view").error(reason)
            return _error(reason, 500)
        if out is None:
            return Response(status_code=499)  # nobody is listening
        if isinstance(out, (dict, list)):
            return JSONResponse(out)
        return Response(out, media_type="application/octet-stream")

    def flow_body(key: str, make: Callable[[], tuple[Scene, dict]], n: int, job: Job) -> bytes:
        scene, extra = make()
        body, camera = _scene_body(scene, n, job, extra)
        keep(views, key, camera)
        return body

    def inside(key: str, make: Callable[[], tuple[Scene, dict]], job: Job) -> bytes:
        scene, extra = make()
        if key not in views:  # forgotten: solve once more for the camera
            _, camera = _scene_body(scene, 2000, job, extra)
            keep(views, key, camera)
        return inside_body(scene, views[key], job)

    def picture_maker(pid: str) -> Callable[[], tuple[Scene, dict]]:
        data, text, ink, invert = pictures[pid]

        def make() -> tuple[Scene, dict]:
            scene, label = picture_scene(data, text, ink, invert)
            return scene, {"label": label, "id": pid, "method": "exact"}

        return make

    def run_maker(name: str, of: str) -> Callable[[], tuple[Scene, dict]]:
        def make() -> tuple[Scene, dict]:
            run = _load_run(folder, name)
            if of == "exact":
                scene = exact_scene(run.density, run.colors, run.start, run.start_colors, STEPS)
                return scene, {"label": f"the exact flow of {name}", "method": "exact"}
            method = f"{run.config.train.objective}/{run.config.train.family}"
            return run_scene(run), {"label": name, "method": method}

        return make

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def flow(request: Request) -> Response:
        try:
            n = _count(request)
            ink = _choice(request, "ink", INKS, "auto")
            invert = _choice(request, "invert", ("0", "1"), "0") == "1"
        except FlowgifError as e:
            return _error(str(e))
        text = request.query_params.get("text")
        size = request.headers.get("content-length")
        if text is None and size is not None and size.isdigit() and int(size) > MAX_UPLOAD:
            return _too_large()

        async def work(job: Job) -> Response:
            data = None
            if text is None:
                buf = io.BytesIO()
                async for chunk in request.stream():
                    buf.write(chunk)
                    if buf.tell() > MAX_UPLOAD:
                        return _too_large()
                if not buf.tell():
                    return _error("no picture was sent")
                data = buf.getvalue()
            word = text[:64] if text is not None else None
            pid = picture_id(data, word, ink, invert)
            keep(pictures, pid, (data, word, ink, invert))
            return await answer(request, job, flow_body, pid, picture_maker(pid), n)

        return await admit(request, work)

    async def picture_inside(request: Request) -> Response:
        pid = request.query_params.get("id", "")
        if pid not in pictures:
            return _error("drop the picture again")
        make = picture_maker(pid)
        return await admit(request, lambda job: answer(request, job, inside, pid, make))

    async def runs(request: Request) -> Response:
        return JSONResponse({"folder": str(folder), "runs": list_runs(folder)})

    async def a_run(request: Request) -> Response:
        try:
            name = _run_name(folder, request.path_params["name"])
            what = request.path_params["what"]
            n = _count(request)
            of = _choice(request, "of", ("run", "exact"), "run")
        except FlowgifError as e:
            return _error(str(e), 404)
        if what == "thumb":
            stamp = (folder / name / "checkpoint.pt").stat().st_mtime
            if (name, stamp) not in thumbs:
                try:
                    png = await anyio.to_thread.run_sync(
                        thumbnail, folder, name, Job(), limiter=few
                    )
                except FlowgifError as e:
                    return _error(str(e))
                thumbs[(name, stamp)] = png
            return Response(thumbs[(name, stamp)], media_type="image/png")
        if what in ("flow", "exact"):
            key = f"{what if what == 'exact' else 'run'}:{name}"
            make = run_maker(name, "exact" if what == "exact" else "run")
            return await admit(request, lambda job: answer(request, job, flow_body, key, make, n))
        if what == "inside":
            make = run_maker(name, of)
            key = f"{of}:{name}"
            return await admit(request, lambda job: answer(request, job, inside, key, make))
        return _error(f"no such thing as {what!r} of a run", 404)

    async def progress(request: Request) -> Response:
        job = jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"state": "unknown", "done": 0})
        state = "cancelled" if job.cancelled.is_set() else "running" if job.running else "waiting"
        return JSONResponse({"state": state, "done": round(job.done, 3)})

    async def save_route(request: Request) -> Response:
        q = request.query_params
        try:
            if "run" in q:
                data, text, ink, invert = None, None, "auto", False
                _run_name(folder, q["run"])
            else:
                data, text, ink, invert = pictures[q.get("id", "")]
            settings = {
                "particles": max(1000, min(300_000, int(q.get("particles", PARTICLES)))),
                "color": _choice(request, "color", COLORS, "position"),
                "background": _choice(request, "background", BACKGROUNDS, "light"),
                "pace": _choice(request, "pace", PACES, "shape"),
                "trail": int(q.get("trail", 0)),
                "format": _choice(request, "format", ("gif", "mp4"), "gif"),
                "ink": ink,
                "invert": invert,
                "run": q.get("run"),
            }
        except KeyError:
            return _error("drop the picture again, then save")
        except FlowgifError as e:
            return _error(str(e), 404) if "run" in q else _error(str(e))
        except ValueError:
            return _error("not a setting the page has")
        if settings["trail"] not in TRAILS:
            return _error("not a setting the page has")
        return await admit(
            request, lambda job: answer(request, job, save, folder, data, text, settings)
        )

    async def files(request: Request) -> Response:
        name = request.path_params["name"]
        path = folder / name
        ok = name.startswith("view-") and name.endswith((".gif", ".mp4")) and "/" not in name
        if not ok or path.is_symlink() or not path.is_file():
            return _error(f"no saved file named {name!r}", 404)
        return FileResponse(path, filename=name)

    routes = [
        Route("/", index),
        Route("/api/flow", flow, methods=["POST"]),
        Route("/api/inside", picture_inside),
        Route("/api/runs", runs),
        Route("/api/runs/{name}/{what}", a_run),
        Route("/api/progress/{job}", progress),
        Route("/api/save", save_route, methods=["POST"]),
        Route("/api/files/{name}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(_SameHost, hosts=hosts)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.stats = stats

    def cancel_all() -> None:
        """Stop all work now (the server is stopping): queued work never starts, running work
        stops at its next part, a save's command is terminated."""
        for job in list(live.values()):
            job.cancelled.set()

    app.state.cancel_all = cancel_all
    return app


def _too_large() -> Response:
    return _error(f"the picture is over {MAX_UPLOAD // (1024 * 1024)} MB", 413)
