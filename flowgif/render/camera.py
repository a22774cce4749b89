"""What is in view: the frame a panel is drawn in, the frame times (paced by how formed the
picture is), and a camera that keeps the particle cloud in sight and glides in to the picture."""

from __future__ import annotations

import numpy as np
import torch

from flowgif.draw import Canvas
from flowgif.flows.ode import SolveStats
from flowgif.render.options import RenderOptions
from flowgif.render.pacing import paced_times, positions_at, shape_progress
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity
from flowgif.store import Run

__all__ = ["camera", "frame_for", "frame_times_for"]


PROBE_TIMES = 129  # the probe solve's time grid


PROBE_PARTICLES = 3000


def frame_times_for(
    runs: list[Run],
    noise: list[torch.Tensor],
    o: RenderOptions,
    stats: SolveStats,
    frame: ImageDensity | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """The frame times (``o.pace``), and how formed the picture is at each frame (0 to 1).

    A probe solve of a few thousand of the particles on a fine time grid measures the shape's
    progress (all runs' particles together, so side-by-side panels share their frame times).
    """
    grid = np.linspace(0.0, 1.0, PROBE_TIMES)
    probes = [
        r.flow.paths(z[:PROBE_PARTICLES], torch.as_tensor(grid, dtype=torch.float32).to(z), stats)
        .cpu()
        .numpy()[..., :2]
        .astype(np.float64)
        for r, z in zip(runs, noise, strict=True)
    ]
    probe = np.concatenate(probes, axis=1)
    frame = frame or frame_for(runs[:1])
    canvas = Canvas.around(frame.size, o.size)

    def screen(times: np.ndarray, progress: np.ndarray) -> np.ndarray:
        seen = positions_at(probes[0], grid, times)
        views = camera(canvas, frame, seen, o.zoom, progress, runs[0].start)
        return np.array([v.scale for v in views])

    times, _ = paced_times(grid, probe, o.frames, o.pace, o.ease, screen)
    progress = np.interp(times, grid, shape_progress(probe))
    return torch.as_tensor(times, dtype=torch.float32), progress


def camera(
    canvas: Canvas,
    density: ImageDensity,
    paths: np.ndarray,
    zoom: bool,
    progress: np.ndarray | None = None,
    start: Distribution | None = None,
) -> list[Canvas]:
    """One view per frame that keeps the particle cloud in sight, ending on the picture's frame.

    Each frame shows 99.5 % of its particles along the canvas's longer side (at least N(0, I)
    out to its frame, 3 standard deviations, at the start); when a picture starts the flow,
    along both sides, so the start picture is seen whole. With ``progress`` (how formed the
    picture is per frame), the camera holds the opening view while the cloud gathers — so the
    viewer sees it contract — and glides in to the picture's frame from half-formed on; without, it
    follows the cloud. A sliding maximum and a smoothing make it glide and never cut the
    cloud; a discrete flow's camera also backs
    off where a layer throws the points wide.
    """
    frames = len(paths)
    if not zoom:
        return [canvas] * frames
    per_unit = canvas.scale * density.size[0] / (2 * density.half[0])  # canvas px per unit
    room = np.array([canvas.width, canvas.height]) / 2 / per_unit  # half-view in model units
    pick = paths[:, :: max(1, paths.shape[1] // 4000)]
    need = np.quantile(np.abs(pick), 0.995, axis=1)  # (T, 2) half-extent of the cloud
    if start is None or isinstance(start, Noise):
        need[0] = np.maximum(need[0], Noise.half)
        # How far to back off: the cloud's widest extent fits the canvas's longer side (a
        # round cloud over a wide picture may spill over the short side, as noise streaming in).
        log_out = np.maximum(0.0, np.log(need.max(axis=1) / room.max()))
    else:  # a picture is seen whole
        log_out = np.maximum(0.0, np.log(need / room).max(axis=1))
    if progress is not None:
        glide = np.clip((np.asarray(progress) - 0.5) / 0.5, 0.0, 1.0)
        plan = log_out[0] * (1 - glide * glide * (3 - 2 * glide))  # hold, then smoothstep in
        log_out = np.maximum(log_out, plan)
    k = max(1, frames // 12)
    padded = np.pad(log_out, k, mode="edge")
    held = np.array([padded[i : i + 2 * k + 1].max() for i in range(frames)])
    weights = np.hanning(2 * k + 3)[1:-1]
    smooth = np.convolve(np.pad(held, k, mode="edge"), weights / weights.sum(), mode="valid")
    smooth = np.maximum(smooth, log_out)  # smoothing must not cut what the maximum kept
    return [canvas.zoomed(float(np.exp(-v))) for v in smooth]


def frame_for(runs: list[Run]) -> ImageDensity:
    """The frame a panel is drawn in: the end picture's, or, when a picture starts a run or
    several runs play one after another (a morph), the smallest frame holding every
    picture's, centred as they are, in the first end picture's pixels."""
    first = runs[0].density
    halves = [r.density.half for r in runs]
    halves += [r.start.half for r in runs if isinstance(r.start, ImageDensity)]
    hx, hy = max(h[0] for h in halves), max(h[1] for h in halves)
    if (hx, hy) == tuple(first.half):
        return first
    per_unit = first.size[0] / (2 * first.half[0])
    size = (max(1, round(2 * hx * per_unit)), max(1, round(2 * hy * per_unit)))
    return ImageDensity(np.ones((1, 1)), size, extent=max(hx, hy))
