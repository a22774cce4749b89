"""What the page plays, computed by the library: a flow's paths, colours, camera and pacing as
one binary body, and on request what is inside it (``p_t`` and ``v`` on a grid at each time).

A body is a little-endian ``uint32`` header length, the header (JSON, padded to 4 bytes) and
the blocks it names (``header["blocks"][name] = {offset, shape, dtype}``, offsets from the end
of the header, each 4-byte aligned), so the page reads each as a typed array with no copy:

- ``paths``: ``int16`` ``(TIMES, N, 2)``, ``32767`` standing for ``header["scale"]`` model
  units (every path's reach, at least 1.25 times the frame's larger half extent: the start's
  whole round cloud is sent, never clipped into a box), ``-32768`` a position too far out to
  send (not drawn);
- ``rgb``: ``uint8`` ``(N, 3)``, each particle's colour from the picture (``--color image``);
- the header also holds the pacing tables (``pace[p]``: the flow's time at each of
  :data:`FRAMES` frames, as ``flowgif render --pace p`` spaces them), the camera at those
  frames (``view[p]``: the half extents in view, as :func:`flowgif.render.camera.camera`
  frames them), and the
  palettes of ``--color position``/``density``/``mono`` on either background.

An ``inside`` body holds ``density`` (``uint8`` ``(TIMES, G, G)``: ``p_t`` over each time's
view, ``header["box"]``, ``255`` the time's largest value) and ``field`` (``int16``
``(TIMES, F, F, 2)``: ``v`` at the centres of an ``F x F`` grid over the view, ``32767`` the
time's largest speed, listed in ``header["speed"]``).

Work here can be long (a trained network's ODE): it reports progress and stops when asked
through a :class:`Job`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from flowgif.draw import BACKGROUNDS, DENSITY_STOPS, Canvas, hue_colors
from flowgif.errors import FlowgifError
from flowgif.render.camera import camera
from flowgif.render.pacing import PACES, paced_times, positions_at, shape_progress
from flowgif.sources.base import Distribution
from flowgif.sources.picture import ImageDensity
from flowgif.view.jobs import CancelledError, Job

__all__ = ["FRAMES", "TIMES", "CancelledError", "Job", "Scene", "inside_body", "scene_body"]

TIMES = 51  # times of the paths sent, 0 to 1 (the page interpolates between them)
FRAMES = 120  # frames of a pass: ``flowgif render``'s default ``--frames``
CANVAS = 480  # the page's canvas, longer side in pixels (the camera's frame)
HUES = 12  # ``--color position``: hues by starting angle, as the renderer has them
DENSITY_GRID = 64  # p_t: cells along each side of the view
FIELD_GRID = 21  # v: arrows along each side of the view
PROBE = 3000  # particles the pacing measures (as the renderer's probe)
SEEN = 4000  # particles the camera keeps in view (as many as the renderer's camera reads)
CHUNKS = 10  # a trained flow is solved in this many parts (progress, cancellation)
REACH = 16.0  # the paths' scale is at most this many times the frame's larger half extent
OUT = -32768  # a position beyond the scale (both coordinates): the page does not draw it


@dataclass
class Scene:
    """What the page needs of one flow.

    Attributes:
        flow: the flow (``paths(z, times)``; ``starts(n, generator, shown=True)``).
        density: the end's density (the frame and the ``image`` colours' cells).
        colors: ``(h, w, 3)`` colours of the end's cells.
        start: the flow's start (N(0, I) or a picture).
        start_colors: a picture start's cell colours (``--color image`` carries them).
        frame: the frame drawn in (default: the end's).
        field: ``v(t, x)`` for the arrows (None: not a continuous flow).
        density_at: ``p_t(x)`` for the density under the particles (None: not known exactly).
        chunks: parts the solve is cut into (progress and cancellation between them).
    """

    flow: object
    density: ImageDensity
    colors: np.ndarray
    start: Distribution
    start_colors: np.ndarray | None = None
    frame: ImageDensity | None = None
    field: Callable[[float, torch.Tensor], torch.Tensor] | None = None
    density_at: Callable[[float, torch.Tensor], torch.Tensor] | None = None
    chunks: int = 1


def pack(header: dict, blocks: dict[str, np.ndarray]) -> bytes:
    """The binary body: header length, header JSON naming the blocks, the blocks."""
    layout, parts, offset = {}, [], 0
    for name, a in blocks.items():
        raw = np.ascontiguousarray(a).tobytes()
        layout[name] = {"offset": offset, "shape": list(a.shape), "dtype": a.dtype.str}
        raw += b"\0" * (-len(raw) % 4)
        parts.append(raw)
        offset += len(raw)
    text = json.dumps({**header, "blocks": layout}).encode()
    text += b" " * (-len(text) % 4)
    return struct.pack("<I", len(text)) + text + b"".join(parts)


def scene_body(scene: Scene, n: int, job: Job, extra: dict) -> tuple[bytes, np.ndarray]:
    """The body of ``n`` particles of ``scene`` from the noise of seed 0 (every flow of one
    picture starts from the same points), and the camera's half extents ``(TIMES, 2)``."""
    flow, density = scene.flow, scene.density
    z = flow.starts(n, torch.Generator().manual_seed(0), shown=True)  # type: ignore[attr-defined]
    times = torch.linspace(0.0, 1.0, TIMES, dtype=z.dtype)
    parts = []
    for zc in torch.tensor_split(z, scene.chunks):
        job.check()
        with torch.no_grad():
            parts.append(flow.paths(zc, times)[..., :2].detach().cpu().numpy())  # type: ignore[attr-defined]
        job.done = len(parts) / scene.chunks
    paths = np.concatenate(parts, axis=1).astype(np.float64)
    if not np.isfinite(paths).all():
        raise FlowgifError("the flow sent particles to infinity; this run cannot be shown")
    frame = scene.frame or density
    pace, views, by_time = _camera_and_pacing(paths, frame, scene.start)
    scale = _scale(paths, frame)
    q = np.round(paths / scale * 32767)
    q[(np.abs(q) > 32767).any(-1)] = OUT  # beyond the range: not drawn (never a clipped box)
    q = q.astype("<i2")
    rgb = _image_colors(scene, z[:, :2].cpu().numpy(), paths[-1])
    dark = [(235, 235, 245), (16, 16, 28)]  # the renderer's ink on a dark, a light ground
    header = {
        **extra,
        "times": TIMES,
        "particles": n,
        "frames": FRAMES,
        "scale": scale,
        "half": list(frame.half),
        "size": [
            Canvas.around(frame.size, CANVAS).width,
            Canvas.around(frame.size, CANVAS).height,
        ],
        "view": {k: v.round(5).tolist() for k, v in views.items()},
        "pace": {k: v.round(5).tolist() for k, v in pace.items()},
        "hues": {b: hue_colors(HUES, b == "dark").round().tolist() for b in ("light", "dark")},
        "ink": {"light": dark[1], "dark": dark[0]},
        "ground": {b: BACKGROUNDS[b] for b in ("light", "dark")},
        "heat": DENSITY_STOPS.tolist(),
        "inside": {"density": scene.density_at is not None, "field": scene.field is not None},
    }
    return pack(header, {"paths": q, "rgb": rgb}), by_time


def _scale(paths: np.ndarray, frame: ImageDensity) -> float:
    """The model units ``32767`` stands for: every path's reach (the round cloud of N(0, I)
    at the start, as the GIF shows it), at least 1.25 times the frame's larger half extent,
    at most :data:`REACH` times it (a particle a trained flow flings further is far out of
    any view: it is sent as :data:`OUT`)."""
    half = max(frame.half)
    reach = float(np.abs(paths).max())
    return float(min(max(1.25 * half, 1.001 * reach), REACH * half))


def _camera_and_pacing(
    paths: np.ndarray, frame: ImageDensity, start: Distribution
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """For each pacing, the flow's time at each frame and the half extents in view there (the
    renderer's camera: it holds while the cloud gathers, then glides in), and the half extents
    at each of the paths' times (``shape`` pacing's camera, for what is inside)."""
    grid = np.linspace(0.0, 1.0, TIMES)
    canvas = Canvas.around(frame.size, CANVAS)
    per_px = 2 * frame.half[0] / frame.size[0]  # model units per picture pixel
    progress = shape_progress(paths)
    probe = paths[:, :PROBE]

    def screen(times: np.ndarray, prog: np.ndarray) -> np.ndarray:
        seen = positions_at(probe, grid, times)
        return np.array([v.scale for v in camera(canvas, frame, seen, True, prog, start)])

    pace, views = {}, {}
    for p in PACES:
        times, _ = paced_times(grid, probe, FRAMES, p, True, screen)
        seen = positions_at(paths[:, :SEEN], grid, times)
        frames = camera(canvas, frame, seen, True, np.interp(times, grid, progress), start)
        pace[p] = times
        views[p] = (
            np.array([[v.width / 2, v.height / 2] for v in frames])
            * per_px
            / np.array([[v.scale] for v in frames])
        )
    t = pace["shape"]
    by_time = np.stack([np.interp(grid, t, views["shape"][:, a]) for a in (0, 1)], 1)
    return pace, views, by_time


def _image_colors(scene: Scene, z: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``(N, 3)`` colours: a picture start's where each particle starts, else the end's where
    it lands (the renderer's ``--color image``)."""
    start = scene.start
    if scene.start_colors is not None and isinstance(start, ImageDensity):
        return scene.start_colors.reshape(-1, 3)[start.cell_index(z)].astype(np.uint8)
    return scene.colors.reshape(-1, 3)[scene.density.cell_index(end)].astype(np.uint8)


def inside_body(scene: Scene, views: np.ndarray, job: Job) -> bytes:
    """``p_t`` and ``v`` over the camera's view at each time ``views`` ``(TIMES, 2)``
    (module docstring)."""
    grid = np.linspace(0.0, 1.0, TIMES)
    g, f = DENSITY_GRID, FIELD_GRID
    dens = np.zeros((TIMES, g, g), np.uint8)
    arrows = np.zeros((TIMES, f, f, 2), "<i2")
    speed = np.zeros(TIMES)
    for k, t in enumerate(grid):
        job.check()
        hx, hy = views[k]
        if scene.density_at is not None:
            p = scene.density_at(float(t), _nodes(g, hx, hy)).detach().cpu().numpy()
            top = p.max()
            if top > 0:
                dens[k] = np.round(255 * p / top).reshape(g, g)
        if scene.field is not None:
            with torch.no_grad():
                v = scene.field(float(t), _nodes(f, hx, hy))[:, :2].detach().cpu().numpy()
            v = np.nan_to_num(v)
            speed[k] = np.abs(v).max()
            if speed[k] > 0:
                arrows[k] = np.round(v / speed[k] * 32767).reshape(f, f, 2)
        job.done = (k + 1) / TIMES
    header = {"times": TIMES, "speed": speed.tolist(), "box": views.round(5).tolist()}
    return pack(header, {"density": dens, "field": arrows})


def _nodes(k: int, hx: float, hy: float) -> torch.Tensor:
    """Centres of a ``k x k`` grid over ``[-hx, hx] x [-hy, hy]``, row by row from the top."""
    xs = (np.arange(k) + 0.5) / k * 2 * hx - hx
    ys = hy - (np.arange(k) + 0.5) / k * 2 * hy
    xx, yy = np.meshgrid(xs, ys)
    return torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=torch.float32)


def exact_scene(
    end: ImageDensity,
    colors: np.ndarray,
    start: Distribution | None = None,
    start_colors: np.ndarray | None = None,
    steps: int | None = None,
) -> Scene:
    """The exact flow of ``end`` (from N(0, I) or a picture) as a scene, with its ``p_t``."""
    from flowgif.flows.exact import ExactFlow

    flow = ExactFlow(end, start, steps) if steps else ExactFlow(end, start)
    last = float(flow.times[-1])

    def density_at(t: float, x: torch.Tensor) -> torch.Tensor:
        if t >= last:  # the landing law: the picture's own cells
            return torch.exp(flow.log_prob(x))
        return flow.posterior.at(t).at(x)[1]

    def field(t: float, x: torch.Tensor) -> torch.Tensor:
        return flow.velocity(torch.tensor(t), x)

    return Scene(flow, end, colors, flow.start, start_colors, None, field, density_at)


def run_scene(run) -> Scene:  # noqa: ANN001
    """A run folder's flow as a scene: its field (a continuous flow's), and ``p_t`` where it is
    known exactly (the exact flow)."""
    from flowgif.flows.computed import ComputedField
    from flowgif.flows.exact import ExactFlow
    from flowgif.render.camera import frame_for

    flow = run.flow
    if isinstance(flow, ExactFlow):
        return exact_scene(run.density, run.colors, run.start, run.start_colors)
    try:
        velocity = run.field
    except FlowgifError:  # a stack of layers: no field
        velocity = None
    dim = getattr(flow, "dim", 2)
    computed = isinstance(run.model, ComputedField)

    def field(t: float, x: torch.Tensor) -> torch.Tensor:
        if dim > 2:  # the extra dimensions at their mean
            x = torch.cat([x, torch.zeros(len(x), dim - 2, dtype=x.dtype)], 1)
        x = x.double() if computed else x.float()
        return velocity(torch.tensor(t, dtype=x.dtype), x)  # type: ignore[misc]

    return Scene(
        flow,
        run.density,
        run.colors,
        run.start,
        run.start_colors,
        frame_for([run]),
        field if velocity is not None else None,
        None,
        1 if computed else CHUNKS,
    )
