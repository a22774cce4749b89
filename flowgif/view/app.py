"""The view's ASGI app: the route table, the guard in front of it, the pool behind it.

Each route lives in a module named for what it serves (:mod:`flowgif.view.routes`); what a
request may do at all is decided once, in :mod:`flowgif.view.guard`; heavy work goes through
one :class:`~flowgif.view.jobs.Pool`.

====================================  ========================================================
``GET /``, ``/static/...``            the page: HTML, CSS, JavaScript modules (in the package)
``POST /api/flow``                    a picture or word -> its exact flow (routes.pictures)
``GET /api/inside``                   ``p_t`` and ``v`` of that flow (routes.pictures)
``GET /api/runs``                     the run folders of FOLDER (routes.runs)
``GET /api/runs/NAME/WHAT``           a run's thumb, flow, exact flow, inside (routes.runs)
``GET /api/progress/JOB``             how far the work named ``?job=JOB`` has come
``POST /api/morph``                   pictures on screen, one into the next (routes.morph)
``POST /api/train``                   train a picture, a morph or a run, live (routes.train)
``GET /api/train/NAME/next``          the network as it learns, when it changes
``POST /api/train/NAME/WHAT``         pause, continue or stop a training
``POST /api/save``                    Save GIF/MP4 into FOLDER (routes.saves)
``GET /api/files/NAME``               a saved file (routes.saves)
====================================  ========================================================
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowgif.view import saving
from flowgif.view.guard import Guard
from flowgif.view.jobs import Pool
from flowgif.view.routes import morph, pictures, runs, saves, train
from flowgif.view.routes.base import State, state_of
from flowgif.view.routes.pictures import warm_up
from flowgif.view.training import Trainings

__all__ = ["MAX_UPLOAD", "make_app", "warm_up"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 16 * 1024 * 1024  # bytes of one uploaded picture


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def progress(request: Request) -> Response:
    return JSONResponse(state_of(request).pool.progress(request.path_params["job"]))


ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/api/flow", pictures.flow, methods=["POST"]),
    Route("/api/inside", pictures.picture_inside, methods=["GET"]),
    Route("/api/runs", runs.runs, methods=["GET"]),
    Route("/api/runs/{name}/{what}", runs.a_run, methods=["GET"]),
    Route("/api/progress/{job}", progress, methods=["GET"]),
    Route("/api/morph", morph.morph, methods=["POST"]),
    Route("/api/train", train.start, methods=["POST"]),
    Route("/api/train/{name}/next", train.next_update, methods=["GET"]),
    Route("/api/train/{name}/{what}", train.act, methods=["POST"]),
    Route("/api/save", saves.save_route, methods=["POST"]),
    Route("/api/files/{name}", saves.download, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


async def not_found(request: Request, exc: Exception) -> Response:
    """Any path or method the table does not have: one line of JSON, as every refusal."""
    status = getattr(exc, "status_code", 404)
    line = "no such page" if status == 404 else f"{request.method} is not answered here"
    return JSONResponse({"error": line}, status_code=status)


def make_app(folder: Path, hosts: list[str], workers: int = 1) -> Starlette:
    """The view's ASGI app.

    Args:
        folder: the run folders it lists (and never reads outside of); saves go here.
        hosts: the Host names it answers besides addresses (the bound address's); others
            get 400.
        workers: heavy jobs at once (threads off the event loop), and trainings at once
            (processes).
    """
    caps = {"/api/flow": MAX_UPLOAD, "/api/morph": MAX_UPLOAD}  # uploads: a picture each
    guard = Middleware(Guard, hosts=hosts, caps=caps)
    handlers = {404: not_found, 405: not_found}
    app = Starlette(routes=ROUTES, middleware=[guard], exception_handlers=handlers)
    pool = Pool(workers)
    trainings = Trainings(workers)
    app.state.view = State(Path(folder), pool, trainings=trainings)
    app.state.stats = pool.stats

    def cancel_all() -> None:
        """Stop all work now (the server is stopping): queued work never starts, running work
        stops at its next part, a save's commands are stopped (they clean after themselves),
        trainings stop with their checkpoints (but those asked to keep training)."""
        pool.cancel_all()
        saving.stop_children()
        trainings.close()

    app.state.cancel_all = cancel_all
    return app
