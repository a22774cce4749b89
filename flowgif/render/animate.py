"""Render trained runs: particles carried from the start to the picture, as GIF, MP4, WebP or PNGs.

One ODE solve gives every frame (dense output at the frame times); frames are drawn with numpy
into index images over one fixed palette (:mod:`flowgif.draw`) and streamed to the writer
chosen by the output's suffix. :func:`render` redoes the render smaller when a size budget
(``max_mb``) asks for it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowgif.draw import Canvas, Palette, draw_frame
from flowgif.errors import FlowgifError
from flowgif.files import check_frames_folder, temp_name
from flowgif.flows.computed import ComputedFlow
from flowgif.flows.model import ContinuousFlow
from flowgif.flows.ode import SolveStats
from flowgif.owned import check_replaceable
from flowgif.render.camera import camera, frame_for, frame_times_for
from flowgif.render.colors import particle_colors
from flowgif.render.compose import compose, header, to_model
from flowgif.render.options import MIN_FRAMES, MIN_SIZE, RenderOptions, RenderReport, output_format
from flowgif.render.panels import LABELS, RESERVED, Panels, reserve_colors
from flowgif.render.writers import output_size, write_gif, write_mp4, write_png_folder, write_webp
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity
from flowgif.store import Run

__all__ = ["render"]


def render(
    run: Run | list[Run],
    out: Path,
    options: RenderOptions | None = None,
    device: torch.device | str = "cpu",
    labels: list[str] | None = None,
    chain: bool = False,
) -> RenderReport:
    """Animate ``run`` into ``out`` (format by suffix, see ``FORMATS``).

    Given several runs, they play side by side from the same start points (same seed), each
    in its own panel under its label: a continuous flow beside a discrete one, or two
    budgets. With ``chain`` they play one after another in one panel instead, each run
    starting from where the last one's particles ended (the legs of a morph A -> B -> C,
    ``options.frames`` frames each). With
    ``options.max_mb`` the render is redone with fewer frames, a smaller size or fewer
    particles until the file fits; ``report.changes`` says what changed.

    Raises:
        FlowgifError: unknown suffix or option, the output cannot be written, or the budget
            cannot be met even at the smallest settings.
    """
    o = options or RenderOptions()
    budget = o.max_mb * 1e6
    if not budget:
        return _render_once(run, out, o, device, labels, chain)
    out = Path(out)
    if output_format(out) == "folder":
        raise FlowgifError(
            "render.max_mb applies to a .gif, .webp or .mp4 file, not to PNG frames"
        )
    check_replaceable(out)
    trial = temp_name(out)  # attempts go here; only one that fits replaces ``out``
    try:
        first, report = o, _render_once(run, trial, o, device, labels, chain)
        for _ in range(6):
            if report.bytes <= budget:
                os.replace(trial, out)
                report.path = out
                report.changes = [
                    f"{name} {getattr(first, name):,} -> {getattr(o, name):,}"
                    for name in ("frames", "size", "particles")
                    if getattr(first, name) != getattr(o, name)
                ]
                return report
            ratio = 0.92 * budget / report.bytes
            frames, size, particles = o.frames, o.size, o.particles
            if frames > MIN_FRAMES:
                frames = max(MIN_FRAMES, int(frames * ratio))
                ratio *= o.frames / frames
            if ratio < 1 and size > MIN_SIZE:
                size = max(MIN_SIZE, int(size * math.sqrt(ratio)))
                ratio *= (o.size / size) ** 2
            if ratio < 1:  # never more particles than asked for, nor fewer than 1,000 of them
                particles = max(min(1000, first.particles), int(particles * ratio))
            if (frames, size, particles) == (o.frames, o.size, o.particles):
                break
            o = dataclasses.replace(o, frames=frames, size=size, particles=particles)
            report = _render_once(run, trial, o, device, labels, chain)
    finally:
        trial.unlink(missing_ok=True)
    raise FlowgifError(
        f"cannot fit {out} into {o.max_mb:g} MB: at {o.frames} frames, {o.size} px and "
        f"{o.particles:,} particles it is {report.bytes / 1e6:.2f} MB; nothing was written"
    )


def _render_once(
    run: Run | list[Run],
    out: Path,
    options: RenderOptions | None = None,
    device: torch.device | str = "cpu",
    labels: list[str] | None = None,
    chain: bool = False,
) -> RenderReport:
    """One render of ``run`` into ``out`` with ``options`` as they are (see :func:`render`).

    Raises:
        FlowgifError: unknown suffix or option, or the output cannot be written.
    """
    o = options or RenderOptions()
    runs = [run] if isinstance(run, Run) else list(run)
    out = Path(out)
    kind = output_format(out)
    _check(runs, out, kind, o)
    report = RenderReport(out, 0, 0, 0, 0)
    scene = _solve(runs, o, device, chain, report)
    film = _film(scene, runs, o, labels)
    t0 = time.perf_counter()
    first = film.draw(0)  # its size is the video's
    report.seconds["draw"] = time.perf_counter() - t0
    report.height, report.width = first.shape
    report.frames = len(film.order)
    _write(out, kind, film, first, o, report)
    return report


def _check(runs: list[Run], out: Path, kind: str, o: RenderOptions) -> None:
    """Refuse, before any work, what cannot be rendered or written."""
    if o.background == "transparent" and kind == ".mp4":
        raise FlowgifError(
            "MP4 has no transparency: use a .gif or .webp with render.background transparent"
        )
    if kind == "folder":
        check_frames_folder(out)  # never replace what flowgif did not write
    else:
        check_replaceable(out)  # never over a file flowgif did not write (a source picture)
    if o.panels and (
        len(runs) != 1
        or not isinstance(runs[0].flow, (ContinuousFlow, ComputedFlow))
        or runs[0].flow.dim != 2
    ):
        raise FlowgifError(
            "render.panels shows one continuous two-dimensional flow (a vector field and its "
            "density): give one run of fm, ffjord, reverse, exact or ot without field.augment"
        )


@dataclass
class _Scene:
    """The solved paths of every panel, and what they are drawn in.

    Attributes:
        panel_runs: the runs each panel plays (one, or a morph's legs one after another).
        frames: each panel's frame (:func:`~flowgif.render.camera.frame_for`).
        canvases: each panel's canvas.
        noise: each panel's start points.
        paths: each panel's ``(T, N, 2)`` positions at the frame times.
        progress: how formed the picture is at each frame.
        legs: the frame index where each leg ends (0 first).
        extra: the ``--panels`` side panels, or None.
    """

    panel_runs: list[list[Run]]
    frames: list[ImageDensity]
    canvases: list[Canvas]
    noise: list[torch.Tensor]
    paths: list[np.ndarray]
    progress: np.ndarray
    legs: list[int]
    extra: Panels | None


def _solve(
    runs: list[Run],
    o: RenderOptions,
    device: torch.device | str,
    chain: bool,
    report: RenderReport,
) -> _Scene:
    """The frame times and every panel's paths (a chain's legs one after another)."""
    clock = time.perf_counter()
    stats = SolveStats()
    panel_runs = [runs] if chain else [[r] for r in runs]  # the runs each panel plays
    frames_d = [frame_for(rs) for rs in panel_runs]
    if o.panels and frames_d[0] is not runs[0].density:
        raise FlowgifError(
            "render.panels draws the end picture's frame, and the start picture does not fit "
            "in it: render without render.panels"
        )
    noise = [
        rs[0].flow.starts(
            o.particles, torch.Generator(device=device).manual_seed(o.seed), shown=True
        )
        for rs in panel_runs
    ]
    canvases = [Canvas.around(f.size, o.size) for f in frames_d]
    extra, paths, legs = None, [], [0]
    if chain:  # each leg starts where the last one ended, paced on its own
        z, parts, paced = noise[0], [], []
        for leg in runs:
            times, progress = frame_times_for([leg], [z], o, stats, frames_d[0])
            path = leg.flow.paths(z, times.to(device), stats)
            parts.append(path.cpu().numpy()[len(parts) > 0 :])
            paced.append(progress[len(paced) > 0 :])
            legs.append(legs[-1] + o.frames - 1)
            z = path[-1]
        paths, progress = [np.concatenate(parts)], np.concatenate(paced)
    else:
        times, progress = frame_times_for(runs, noise, o, stats)
        if o.panels:  # one solve gives the paths and their log-densities
            extra = Panels.prepare(runs[0], noise[0], times.to(device), canvases[0], stats)
            paths.append(extra.paths)
        else:
            for r, z in zip(runs, noise, strict=True):
                paths.append(r.flow.paths(z, times.to(device), stats).cpu().numpy())
        legs.append(o.frames - 1)
    report.nfe = stats.nfe
    report.pacing = progress
    report.seconds["solve"] = time.perf_counter() - clock
    return _Scene(panel_runs, frames_d, canvases, noise, paths, progress, legs, extra)


@dataclass
class _Film:
    """What to play: ``draw(q)`` makes the frame at play position ``q``; ``order`` maps play
    positions to path frames (pingpong plays some twice); ``durations`` in ms; one palette."""

    draw: Callable[[int], np.ndarray]
    order: list[int]
    durations: list[float]
    palette: Palette
    step_ms: float


def _film(scene: _Scene, runs: list[Run], o: RenderOptions, labels: list[str] | None) -> _Film:
    """Colours, camera, labels and timing around the solved paths."""
    paths, canvases, frames_d = scene.paths, scene.canvases, scene.frames
    starts = [n.cpu().numpy() for n in scene.noise]
    color, palette = particle_colors(
        [(rs[0], rs[-1]) for rs in scene.panel_runs],
        starts,
        [p[-1] for p in paths],
        o.color,
        o.background,
        RESERVED if o.panels else 0,
    )
    if o.panels:
        reserve_colors(palette, o.background == "dark")
    views = [
        camera(c, f, p, o.zoom, scene.progress, rs[0].start)
        for c, f, p, rs in zip(canvases, frames_d, paths, scene.panel_runs, strict=True)
    ]
    strips = header(labels, canvases, o.size) if len(scene.panel_runs) > 1 or labels else None
    if o.panels:
        strips = header(labels or list(LABELS), canvases * len(LABELS), o.size)
    dot = o.dot or max(1, round(o.size / 256))
    order = list(range(len(paths[0])))
    if o.loop == "pingpong":
        order += list(range(len(paths[0]) - 2, 0, -1))
    step_ms = 1000.0 / o.fps
    durations = [step_ms] * len(order)
    durations[0] += (500.0 if isinstance(runs[0].start, Noise) else 1000.0) * o.hold
    for k in scene.legs[1:]:  # the end of every leg (a morph's pictures), held as the last one
        durations[k] += 1000.0 * o.hold

    def panel(i: int, q: int) -> np.ndarray:
        """Run i at play position q: its particles over a fading trail of earlier positions."""
        view, density = views[i][order[q]], frames_d[i]
        idx, col, wts = [], [], []
        for age in range(min(o.trail, q), -1, -1):  # oldest first, so the newest shows on top
            index, who = view.flat_index(density.to_pixels(paths[i][order[q - age]]), dot)
            idx.append(index)
            col.append(color[i][who])
            wts.append(np.full(len(index), (1 - age / (o.trail + 1)) ** 2))
        weight = np.concatenate(wts) if o.trail else None
        return draw_frame(
            np.concatenate(idx), np.concatenate(col), canvases[i], palette, weight, glow=o.glow
        )

    def draw(q: int) -> np.ndarray:
        if strips is None:
            return panel(0, q)
        if scene.extra is not None:
            extra, k, view, run = scene.extra, order[q], views[0][order[q]], runs[0]
            uv = run.density.to_pixels(paths[0][k])
            beside = [
                extra.picture,
                extra.density(view, uv, k, dot),
                panel(0, q),
                extra.field(view, run, k, to_model(run.density)),
            ]
            return compose(beside, strips)
        return compose([panel(i, q) for i in range(len(scene.panel_runs))], strips)

    return _Film(draw, order, durations, palette, step_ms)


def _write(
    out: Path, kind: str, film: _Film, first: np.ndarray, o: RenderOptions, report: RenderReport
) -> None:
    """Stream the frames to the writer of ``kind``; time drawing and encoding apart."""
    order, trail = film.order, o.trail

    def frames() -> Iterator[np.ndarray]:
        cache: dict[tuple[int, ...], np.ndarray] = {tuple(order[:1]): first}
        for q in range(len(order)):
            t0 = time.perf_counter()
            key = tuple(order[max(0, q - trail) : q + 1])  # pingpong repeats some frames
            if key not in cache:
                cache = {key: film.draw(q)}  # keep one: index frames are small but many
            report.seconds["draw"] += time.perf_counter() - t0
            yield cache[key]

    clear = o.background == "transparent"
    durations, step_ms = film.durations, film.step_ms
    clock, drawn = time.perf_counter(), report.seconds["draw"]
    if kind == ".gif":
        ms = [max(20, 10 * round(d / 10)) for d in durations]
        plain = max(20, 10 * round(step_ms / 10))  # the delay of a frame that is not held
        if abs(step_ms - plain) > 1e-6:
            warnings.warn(
                f"GIF delays are whole 10 ms: {o.fps} fps plays as "
                f"{1000 / plain:.3g} fps; choose 25 or 50",
                stacklevel=3,
            )
        write_gif(out, frames(), film.palette, ms, clear)
    elif kind == ".webp":
        write_webp(out, frames(), film.palette, [round(d) for d in durations], clear)
    elif kind == ".mp4":
        repeats = [max(1, round(d / step_ms)) for d in durations]
        size = (report.width, report.height)
        write_mp4(out, frames(), film.palette, repeats, o.fps, o.quality, size)
    else:
        write_png_folder(out, frames(), film.palette, clear)
    report.seconds["encode"] = time.perf_counter() - clock - (report.seconds["draw"] - drawn)
    report.bytes = output_size(out)
