"""Render a trained run: particles carried from N(0, I) to the picture, as GIF, MP4, WebP or PNGs.

One adaptive ODE solve gives every frame (dense output at the frame times); frames are drawn
with numpy into index images over one fixed palette (:mod:`flowgif.draw`) and streamed to the
writer chosen by the output's suffix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowgif.draw import (
    BACKGROUNDS,
    DENSITY_STOPS,
    TEXT,
    Canvas,
    Palette,
    draw_frame,
    hue_colors,
    make_palette,
)
from flowgif.errors import FlowgifError
from flowgif.files import check_frames_folder, check_replaceable, temp_name
from flowgif.flows.model import ContinuousFlow
from flowgif.limits import MAX_FRAMES, MAX_HOLD, MAX_PARTICLES, MAX_PATH_POINTS, MAX_SEED
from flowgif.ode import SolveStats
from flowgif.pacing import PACES, paced_times, positions_at, shape_progress
from flowgif.panels import LABELS, RESERVED, Panels, reserve_colors
from flowgif.run import Run
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity
from flowgif.writers import output_size, write_gif, write_mp4, write_png_folder, write_webp

__all__ = ["COLORS", "FORMATS", "RenderOptions", "RenderReport", "render"]

COLORS = ("position", "image", "target", "density", "mono")
FORMATS = (".gif", ".mp4", ".webp", "folder of PNG frames (no suffix)")


@dataclass
class RenderOptions:
    """How to render.

    Attributes:
        frames: frames from noise to picture.
        fps: frames per second (GIF delays are whole 10 ms, so 25 or 50 play exactly).
        particles: particles drawn.
        size: canvas pixels on the longer side (aspect of the picture kept).
        color: ``position`` (hue by starting angle), ``image`` (the picture's colour: where the
            particle starts when a picture starts the flow, so its colours travel; else where
            it lands), ``target`` (the end picture's colour where it lands), ``density``
            (heat map of particle counts) or ``mono``.
        background: ``light``, ``dark`` or ``transparent`` (GIF and WebP: the frames sit on
            any page; PNG frames too).
        seed: seed of the particles' noise.
        ease: slow the start and the end of the motion (a cosine time warp).
        hold: seconds the finished picture stays (half as long on the noise; as long on a
            start picture and between the legs of a morph).
        loop: ``forward`` or ``pingpong`` (start -> end -> start).
        quality: MP4 quality, 0-10.
        dot: side of each particle's square in pixels (0: one per 256 px of ``size``).
        glow: strength of a soft halo around the particles (0 = crisp dots; try 1).
        trail: earlier frames drawn as a fading trail behind each particle (0 = none).
        zoom: start zoomed out far enough to show the whole noise cloud, hold that view while
            the cloud gathers, and glide in to the picture's frame as it forms (a wide or tall
            picture's frame would crop the noise).
        pace: ``shape`` spaces the frames so that the picture forms evenly over the motion
            (:mod:`flowgif.pacing`); ``time`` takes them at equal times of the flow.
        panels: beside the particles, the picture's ink, the exact density ``p_t`` where the
            particles are, and the vector field's arrows (:mod:`flowgif.panels`; one
            two-dimensional continuous flow).
        max_mb: a size budget for the file in MB (0: none): fewer frames (down to 60), then a
            smaller size (down to 256 px), then fewer particles, until it fits
            (:func:`render`'s report says what changed).
    """

    frames: int = 120
    fps: int = 25
    particles: int = 20_000
    size: int = 512
    color: str = "position"
    background: str = "light"
    seed: int = 0
    ease: bool = True
    hold: float = 1.0
    loop: str = "forward"
    quality: int = 7
    dot: int = 0
    zoom: bool = True
    trail: int = 0
    glow: float = 0.0
    pace: str = "shape"
    max_mb: float = 0.0
    panels: bool = False

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise FlowgifError(f"render.color {self.color!r} is not one of: {', '.join(COLORS)}")
        if self.background not in BACKGROUNDS:
            raise FlowgifError(
                f"render.background {self.background!r} is not one of: {', '.join(BACKGROUNDS)}"
            )
        if self.pace not in PACES:
            raise FlowgifError(f"render.pace {self.pace!r} is not one of: {', '.join(PACES)}")
        if self.loop not in ("forward", "pingpong"):
            raise FlowgifError(f"render.loop {self.loop!r} is not one of: forward, pingpong")
        for name in ("frames", "fps", "particles", "size"):
            if getattr(self, name) < (2 if name == "frames" else 1):
                raise FlowgifError(
                    f"render.{name} must be at least {2 if name == 'frames' else 1}"
                )
        if self.trail < 0 or self.dot < 0 or self.glow < 0:
            raise FlowgifError("render.trail, render.dot and render.glow must be >= 0")
        if not 0 <= self.hold <= MAX_HOLD:
            raise FlowgifError(f"render.hold must be 0 to {MAX_HOLD:g} seconds")
        if self.frames > MAX_FRAMES or self.particles > MAX_PARTICLES:
            raise FlowgifError(
                f"render.frames must be at most {MAX_FRAMES:,} and render.particles at most "
                f"{MAX_PARTICLES:,}"
            )
        if self.frames * self.particles > MAX_PATH_POINTS:
            raise FlowgifError(
                f"render.frames x render.particles = {self.frames * self.particles:,} points "
                f"is more than a render holds ({MAX_PATH_POINTS:,}); lower one of them"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise FlowgifError(f"render.seed must be 0 to {MAX_SEED}")
        if self.max_mb < 0 or not math.isfinite(self.max_mb):
            raise FlowgifError("render.max_mb must be a number of MB >= 0")
        if self.size > 4096 or self.fps > 100 or self.trail > 30 or self.dot > 16:
            raise FlowgifError(
                "render.size at most 4096, render.fps 100, render.trail 30, render.dot 16"
            )


@dataclass
class RenderReport:
    """What a render did; seconds per part."""

    path: Path
    frames: int
    nfe: int
    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: int = 0
    pacing: np.ndarray | None = None  # how formed the picture is at each motion frame
    changes: list[str] = field(default_factory=list)  # what --max-mb changed


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
    frame = frame or _frame(runs[:1])
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


def particle_colors(
    runs: list[tuple[Run, Run]],
    starts: list[np.ndarray],
    ends: list[np.ndarray],
    mode: str,
    background: str,
    reserve: int = 0,
) -> tuple[list[np.ndarray], Palette]:
    """Colour number per particle of each panel, and the one palette they share (its top
    ``reserve`` indices below ``KEEP`` left for other panels).

    Each panel is given as its first and last run (the same run, or a morph's first and last
    leg): ``image`` takes the start picture's colours where the particles start, when a
    picture starts the first run, else the end's where they land, as ``target`` does.
    """
    bg = BACKGROUNDS[background]
    dark = background == "dark"
    alpha = 0.6 if background == "transparent" else 0.25  # lone dots must read on any page
    if mode == "position":
        k = 12
        angles = [(np.arctan2(z[:, 1], z[:, 0]) / (2 * np.pi)) % 1.0 for z in starts]
        colors = [np.minimum((a * k).astype(np.int64), k - 1) for a in angles]
        return colors, make_palette(hue_colors(k, dark), bg, alpha, reserve)
    if mode in ("image", "target"):
        rgb = np.concatenate(
            [
                _colors_at(first, last, z, e, mode)
                for (first, last), z, e in zip(runs, starts, ends, strict=True)
            ]
        )
        strip = Image.fromarray(rgb[None, :, :].astype(np.uint8), mode="RGB")
        quant = strip.quantize(
            colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        used = np.asarray(quant).ravel().astype(np.int64)
        colors = np.asarray(quant.getpalette()[: 3 * 16], dtype=np.float64).reshape(-1, 3)
        split = np.split(used, np.cumsum([len(e) for e in ends])[:-1])
        return split, make_palette(colors, bg, alpha, reserve)
    ink = (235, 235, 245) if dark else (16, 16, 28)
    zeros = [np.zeros(len(z), dtype=np.int64) for z in starts]
    if mode == "mono":
        return zeros, make_palette(np.array([ink]), bg, alpha, reserve)
    # density: one colour, levels mapped through a heat ramp instead of a blend
    palette = make_palette(np.array([ink]), bg, reserve=reserve)
    s = np.linspace(0.15, 1.0, palette.levels)
    ramp = np.stack(
        [np.interp(s, DENSITY_STOPS[:, 0], DENSITY_STOPS[:, c]) for c in (1, 2, 3)], axis=1
    )
    if not dark:
        ramp = ramp[::-1]  # dense = dark on a light ground
    palette.rgb[1 : 1 + palette.levels] = np.round(ramp).astype(np.uint8)
    return zeros, palette


def _colors_at(first: Run, last: Run, z: np.ndarray, end: np.ndarray, mode: str) -> np.ndarray:
    """``(N, 3)`` colours: the start picture's at ``z`` or the end picture's at ``end``."""
    start = first.start
    if mode == "image" and first.start_colors is not None and isinstance(start, ImageDensity):
        return first.start_colors.reshape(-1, 3)[start.cell_index(z[:, :2])]
    return last.colors.reshape(-1, 3)[last.density.cell_index(end)]


def _frame(runs: list[Run]) -> ImageDensity:
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
    if _format(out) == "folder":
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
            if ratio < 1:
                particles = max(1000, int(particles * ratio))
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


MIN_FRAMES, MIN_SIZE = 60, 256  # what --max-mb may lower frames and size to


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
    kind = _format(out)
    clear = o.background == "transparent"
    if clear and kind == ".mp4":
        raise FlowgifError(
            "MP4 has no transparency: use a .gif or .webp with render.background transparent"
        )
    if kind == "folder":
        check_frames_folder(out)  # before any work: never replace what flowgif did not write
    else:
        check_replaceable(out)  # never over a file flowgif did not write (a source picture)
    if o.panels and (
        len(runs) != 1 or not isinstance(runs[0].flow, ContinuousFlow) or runs[0].flow.dim != 2
    ):
        raise FlowgifError(
            "render.panels shows one continuous two-dimensional flow (a vector field and its "
            "density): give one run of fm, ffjord or reverse without field.augment"
        )
    report = RenderReport(out, 0, 0, 0, 0)
    clock = time.perf_counter()
    stats = SolveStats()
    panel_runs = [runs] if chain else [[r] for r in runs]  # the runs each panel plays
    frames_d = [_frame(rs) for rs in panel_runs]
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
    starts = [n.cpu().numpy() for n in noise]
    ends = [p[-1] for p in paths]
    color, palette = particle_colors(
        [(rs[0], rs[-1]) for rs in panel_runs],
        starts,
        ends,
        o.color,
        o.background,
        RESERVED if o.panels else 0,
    )
    if o.panels:
        reserve_colors(palette, o.background == "dark")
    views = [
        camera(c, f, p, o.zoom, progress, rs[0].start)
        for c, f, p, rs in zip(canvases, frames_d, paths, panel_runs, strict=True)
    ]
    header = _header(labels, canvases, o.size) if len(panel_runs) > 1 or labels else None
    if o.panels:
        header = _header(labels or list(LABELS), canvases * len(LABELS), o.size)
    dot = o.dot or max(1, round(o.size / 256))
    count = len(paths[0])
    order = list(range(count))
    if o.loop == "pingpong":
        order += list(range(count - 2, 0, -1))
    step_ms = 1000.0 / o.fps
    durations = [step_ms] * len(order)
    noise_start = isinstance(runs[0].start, Noise)
    durations[0] += (500.0 if noise_start else 1000.0) * o.hold
    for k in legs[1:]:  # the end of every leg (a morph's pictures), held as the last one
        durations[k] += 1000.0 * o.hold
    report.frames = len(order)
    report.seconds["draw"] = 0.0

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
        if header is None:
            return panel(0, q)
        if extra is not None:
            k, view, run = order[q], views[0][order[q]], runs[0]
            uv = run.density.to_pixels(paths[0][k])
            beside = [
                extra.picture,
                extra.density(view, uv, k, dot),
                panel(0, q),
                extra.field(view, run, k, _to_model(run.density)),
            ]
            return _compose(beside, header)
        return _compose([panel(i, q) for i in range(len(panel_runs))], header)

    t0 = time.perf_counter()
    first = draw(0)  # its size is the video's
    report.seconds["draw"] += time.perf_counter() - t0
    report.height, report.width = first.shape

    def frames() -> Iterator[np.ndarray]:
        cache: dict[tuple[int, ...], np.ndarray] = {tuple(order[:1]): first}
        for q in range(len(order)):
            t0 = time.perf_counter()
            key = tuple(order[max(0, q - o.trail) : q + 1])  # pingpong repeats some frames
            if key not in cache:
                cache = {key: draw(q)}  # keep one: index frames are small but many
            report.seconds["draw"] += time.perf_counter() - t0
            yield cache[key]

    clock, drawn = time.perf_counter(), report.seconds["draw"]
    if kind == ".gif":
        ms = [max(20, 10 * round(d / 10)) for d in durations]
        plain = max(20, 10 * round(step_ms / 10))  # the delay of a frame that is not held
        if abs(step_ms - plain) > 1e-6:
            warnings.warn(
                f"GIF delays are whole 10 ms: {o.fps} fps plays as "
                f"{1000 / plain:.3g} fps; choose 25 or 50",
                stacklevel=2,
            )
        write_gif(out, frames(), palette, ms, clear)
    elif kind == ".webp":
        write_webp(out, frames(), palette, [round(d) for d in durations], clear)
    elif kind == ".mp4":
        repeats = [max(1, round(d / step_ms)) for d in durations]
        write_mp4(out, frames(), palette, repeats, o.fps, o.quality, (report.width, report.height))
    else:
        write_png_folder(out, frames(), palette, clear)
    report.seconds["encode"] = time.perf_counter() - clock - (report.seconds["draw"] - drawn)
    report.bytes = output_size(out)
    return report


def _to_model(density: ImageDensity) -> Callable[[Canvas, np.ndarray], np.ndarray]:
    """Canvas pixels of a view -> model coordinates."""

    def to_model(view: Canvas, px: np.ndarray) -> np.ndarray:
        uv = (px - np.asarray(view.offset)) / view.scale
        return np.asarray(density.from_pixels(uv).cpu(), dtype=np.float64)

    return to_model


def _header(labels: list[str] | None, canvases: list[Canvas], size: int) -> list[np.ndarray]:
    """One label strip per panel, drawn in the palette's text colour (index 255)."""
    from PIL import ImageDraw, ImageFont

    height = max(14, round(size * 0.06))
    font = ImageFont.load_default(size=round(height * 0.7))
    strips = []
    for i, canvas in enumerate(canvases):
        text = labels[i] if labels and i < len(labels) else ""
        strip = Image.new("L", (canvas.width, height), 0)
        ImageDraw.Draw(strip).text(
            (canvas.width / 2, height / 2), text, fill=TEXT, font=font, anchor="mm"
        )
        strips.append((np.asarray(strip) > 127).astype(np.uint8) * TEXT)
    return strips


def _compose(panels: list[np.ndarray], header: list[np.ndarray]) -> np.ndarray:
    """Panels side by side under their labels, bottom-padded to one height, with gaps."""
    height = max(p.shape[0] for p in panels)
    gap = np.zeros((height + header[0].shape[0], max(4, panels[0].shape[1] // 64)), np.uint8)
    columns = []
    for p, h in zip(panels, header, strict=True):
        p = np.pad(p, ((0, height - p.shape[0]), (0, 0)))
        columns += [np.vstack([h, p]), gap]
    return np.hstack(columns[:-1])


def _format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".gif", ".mp4", ".webp"):
        return suffix
    if suffix == "" or out.is_dir():
        return "folder"
    raise FlowgifError(f"cannot render to '{out.name}': use one of {', '.join(FORMATS)}")
