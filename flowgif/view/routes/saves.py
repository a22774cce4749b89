"""Save GIF/MP4 and downloads.

- ``POST /api/save?id=...|run=NAME&particles=...&color=...&background=...&trail=...&pace=...
  &format=gif|mp4``: what is on screen as a file in FOLDER, made by flowgif's own commands
  (:mod:`flowgif.view.saving`); the answer names the file and the command line.
- ``GET /api/files/NAME``: a file a save wrote: ``view-*.gif`` or ``.mp4`` directly in FOLDER,
  a regular file (not a symbolic link) that carries flowgif's signature.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from flowgif.errors import FlowgifError
from flowgif.view.routes.base import PARTICLES, choice, error, state_of
from flowgif.view.routes.pictures import RESOLUTION
from flowgif.view.routes.runs import run_name
from flowgif.view.saving import save

__all__ = ["download", "save_route"]

COLORS = ("position", "image", "target", "density", "mono")  # the CLI's --color
BACKGROUNDS = ("light", "dark")
PACES = ("shape", "time")
TRAILS = ("0", "4", "8", "16")
FORMATS = ("gif", "mp4")


async def save_route(request: Request) -> Response:
    state = state_of(request)
    q = request.query_params
    try:
        if "run" in q:
            run_name(state.folder, q["run"])
    except FlowgifError as e:
        try:  # a run training before its first checkpoint: nothing to render yet
            run_name(state.folder, q["run"], training=True)
        except FlowgifError:
            return error(str(e), 404)
        return error(
            "the run has no checkpoint yet (its first comes after train.checkpoint_every "
            "steps, or when it stops); save again then"
        )
    try:
        if "run" in q:
            data, text, ink, invert = None, None, "auto", False
        elif q.get("id", "") in state.pictures:
            data, text, ink, invert = state.pictures[q["id"]]
        else:
            return error("drop the picture again, then save")
        particles = int(q.get("particles", PARTICLES))
        settings = {
            "particles": max(1000, min(300_000, particles)),
            "color": choice(request, "color", COLORS, "position"),
            "background": choice(request, "background", BACKGROUNDS, "light"),
            "pace": choice(request, "pace", PACES, "shape"),
            "trail": int(choice(request, "trail", TRAILS, "0")),
            "format": choice(request, "format", FORMATS, "gif"),
            "ink": ink,
            "invert": invert,
            "resolution": RESOLUTION,
            "id": q.get("id"),
            "run": q.get("run"),
        }
    except FlowgifError as e:
        return error(str(e))
    except ValueError:
        return error("particles is a number")
    return await state.pool.run(request, save, state.folder, data, text, settings)


async def download(request: Request) -> Response:
    from flowgif.owned import made_by_flowgif

    folder = state_of(request).folder
    name = request.path_params["name"]
    path = folder / name
    ok = name.startswith("view-") and name.endswith((".gif", ".mp4"))
    ok = ok and not any(c in name for c in "/\\\0") and len(name.encode()) <= 255
    if not ok or path.is_symlink() or not path.is_file() or not made_by_flowgif(path):
        return error(f"no saved file named {name!r}", 404)
    return FileResponse(path, filename=name)
