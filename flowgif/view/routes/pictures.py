"""A picture the page sends (dropped, pasted, chosen, drawn, or a typed word) and its exact
flow.

- ``POST /api/flow?ink=...&invert=1&n=...``: the picture's bytes (or ``?text=WORD`` and no
  body) -> its exact flow (:mod:`flowgif.flows.exact`, the ``--method exact`` code, with the
  CLI's ``--ink``) as a binary body (:mod:`flowgif.view.scene`).
- ``GET /api/inside?id=...``: that flow's ``p_t`` and ``v`` on a grid at each time.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from flowgif.errors import FlowgifError
from flowgif.sources.picture import ImageDensity
from flowgif.view.jobs import Job
from flowgif.view.routes.base import (
    choice,
    count,
    error,
    flow_body,
    inside,
    remember,
    state_of,
)
from flowgif.view.scene import Scene, exact_scene

__all__ = [
    "INKS",
    "RESOLUTION",
    "STEPS",
    "WORD",
    "flow",
    "load_picture",
    "picture_id",
    "picture_inside",
    "receive",
]

RESOLUTION = 256  # the working grid of a dropped picture (the exact flow: about a second)
STEPS = 32  # the exact flow's solver steps here (48 for --method exact): bench/EXACT.md
# measured 32 against 48 on github.png at 256 px: tv 0.0482 against 0.0473, on_ink 0.9993
# against 0.9994, 0.92 s against 1.38 s
INKS = ("auto", "darkness", "local", "shape")  # the CLI's --ink
WORD = 64  # characters of a typed word
PIXELS = 50_000_000  # pixels of a sent picture (decoded: at most 200 MB as RGBA)


def picture_id(
    data: bytes | None, text: str | None, ink: str = "auto", invert: bool = False
) -> str:
    """A picture's (or word's) name on this server: the start of a SHA-256 of it and how its
    ink is read."""
    raw = data if data is not None else ("text:" + (text or "")).encode()
    how = f"\0ink:{ink}" + ("\0invert" if invert else "")
    return hashlib.sha256(raw + how.encode()).hexdigest()[:12]


def check_word(text: str) -> str:
    """A typed word as the command line takes it: printable, at most :data:`WORD` characters.

    Raises:
        FlowgifError: empty, too long, or holding a control character (a NUL, a newline).
    """
    if not text.strip():
        raise FlowgifError("type a word to flow")
    if len(text) > WORD:
        raise FlowgifError(f"a word is at most {WORD} characters; this one has {len(text)}")
    if any(not c.isprintable() for c in text):
        raise FlowgifError("a word is printable characters only (no control characters)")
    return text


def _check_pixels(path: Path) -> None:
    """Refuse, before decoding, a picture over :data:`PIXELS` (its header says its size): the
    page flows it on a 256-px grid, and decoding 200 megapixels would take the server past
    2 GB (``flowgif train`` takes it).

    Raises:
        FlowgifError: too many pixels.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
    except Image.DecompressionBombError:
        raise FlowgifError(
            f"the picture has over {PIXELS:,} pixels, more than the page takes "
            "(flowgif train --img takes up to 200,000,000)"
        ) from None
    except Exception:  # not a picture Pillow reads: the loader says why
        return
    if w * h > PIXELS:
        raise FlowgifError(
            f"the picture is {w} x {h} pixels; the page takes at most {PIXELS:,} (flowgif "
            "train --img takes it)"
        )


def load_picture(
    data: bytes | None, text: str | None, ink: str, invert: bool = False
) -> tuple[ImageDensity, np.ndarray, str]:
    """A picture (its bytes) or a word on the page's grid: its density, its cells' colours,
    and its label."""
    from flowgif.config import load_config
    from flowgif.sources import load_source, spec
    from flowgif.sources.picture import ink_colors

    how = {"density.resolution": RESOLUTION, "density.ink": ink, "density.invert": invert}
    dc = load_config("default").updated(how).density
    with tempfile.TemporaryDirectory() as tmp:
        if text is not None:
            source = load_source(spec(f"text:{text}"), dc)
        else:
            path = Path(tmp) / "picture"
            path.write_bytes(data or b"")
            _check_pixels(path)
            try:
                source = load_source(spec(str(path)), dc)
            except FlowgifError as e:  # the reason, about the file the person sent
                raise FlowgifError(str(e).replace(str(path), "the file")) from None
    end = source.density
    made = end.ink.ink if getattr(end, "ink", None) is not None else None
    colors = ink_colors(source.picture, end.grid, dc.invert, made)
    return end, colors, source.label if text else "picture"


def picture_scene(
    data: bytes | None, text: str | None, ink: str, invert: bool = False
) -> tuple[Scene, str]:
    """The exact flow of a picture (its bytes) or a word as a scene, and its label."""
    end, colors, label = load_picture(data, text, ink, invert)
    return exact_scene(end, colors, steps=STEPS), label


def maker(request: Request, pid: str) -> Callable[[], tuple[Scene, dict]]:
    """What builds the scene of the remembered picture ``pid``."""
    data, text, ink, invert = state_of(request).pictures[pid]

    def make() -> tuple[Scene, dict]:
        scene, label = picture_scene(data, text, ink, invert)
        return scene, {"label": label, "id": pid, "method": "exact"}

    return make


async def receive(request: Request) -> str | Response | None:
    """The picture a request sends (its bytes, or ``?text=WORD``), its ink read as
    ``?ink=`` and ``?invert=1`` say: remembered, and its name on this server
    (:func:`picture_id`); None when nothing was sent; or the answer to give instead (a
    refusal of one line, 503 when busy)."""
    state = state_of(request)
    try:
        ink = choice(request, "ink", INKS, "auto")
        invert = choice(request, "invert", ("0", "1"), "0") == "1"
        text = request.query_params.get("text")
        if text is not None:
            check_word(text)
    except FlowgifError as e:
        return error(str(e))
    data = None
    if text is None:
        got = await state.pool.read_upload(request)
        if isinstance(got, Response):
            return got
        if not got:
            return None
        data = got
    pid = picture_id(data, text, ink, invert)
    remember(state.pictures, pid, (data, text, ink, invert))
    return pid


async def flow(request: Request) -> Response:
    state = state_of(request)
    try:
        n = count(request)
    except FlowgifError as e:
        return error(str(e))
    pid = await receive(request)
    if isinstance(pid, Response):
        return pid
    if pid is None:
        return error("no picture was sent")
    await anyio.to_thread.run_sync(state.trainings.prepare)  # Train may come next
    return await state.pool.run(request, flow_body, state, pid, maker(request, pid), n)


async def picture_inside(request: Request) -> Response:
    state = state_of(request)
    pid = request.query_params.get("id", "")
    if pid not in state.pictures:
        return error("drop the picture again")
    return await state.pool.run(request, inside, state, pid, maker(request, pid))


def warm_up() -> None:
    """Import and run once what a drop runs (a word's exact flow, a few particles), so the
    first picture a person drops flows as fast as the later ones."""
    from flowgif.view.jobs import use_idle_cores
    from flowgif.view.scene import scene_body

    try:
        use_idle_cores(1)
        scene, _ = picture_scene(None, "warm", "auto", False)
        scene_body(scene, 500, Job(), {})
    except Exception:  # only a head start: a real drop says what went wrong
        pass
