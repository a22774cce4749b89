"""Render a trained run: particles carried from N(0, I) to the picture, as GIF, MP4, WebP or PNGs.

One adaptive ODE solve gives every frame (dense output at the frame times); frames are drawn
with numpy into index images over one fixed palette (:mod:`flowgif.draw`) and streamed to the
writer chosen by the output's suffix.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image

from flowgif.density import ImageDensity
from flowgif.draw import BACKGROUNDS, Canvas, Palette, draw_frame, hue_colors, make_palette
from flowgif.errors import FlowgifError
from flowgif.ode import SolveStats
from flowgif.run import Run, atomic_write

__all__ = ["COLORS", "FORMATS", "RenderOptions", "RenderReport", "render"]

COLORS = ("position", "image", "density", "mono")
NOISE_RADIUS = 3.0  # the first frame shows N(0, I) out to this radius
FORMATS = (".gif", ".mp4", ".webp", "folder of PNG frames (no suffix)")
DENSITY_STOPS = np.array(
    [
        [0.0, 0, 0, 4],
        [0.25, 87, 16, 110],
        [0.5, 188, 55, 84],
        [0.75, 249, 142, 9],
        [1.0, 252, 255, 164],
    ]
)  # an inferno-like ramp


@dataclass
class RenderOptions:
    """How to render.

    Attributes:
        frames: frames from noise to picture.
        fps: frames per second (GIF delays are whole 10 ms, so 25 or 50 play exactly).
        particles: particles drawn.
        size: canvas pixels on the longer side (aspect of the picture kept).
        color: ``position`` (hue by starting angle), ``image`` (the picture's colour where the
            particle lands), ``density`` (heat map of particle counts) or ``mono``.
        background: ``light`` or ``dark``.
        seed: seed of the particles' noise.
        ease: slow the start and the end of the motion (a cosine time warp).
        hold: seconds the finished picture stays (half as long on the noise).
        loop: ``forward`` or ``pingpong`` (noise -> picture -> noise).
        quality: MP4 quality, 0-10.
        dot: side of each particle's square in pixels (0: one per 256 px of ``size``).
        glow: strength of a soft halo around the particles (0 = crisp dots; try 1).
        trail: earlier frames drawn as a fading trail behind each particle (0 = none).
        zoom: start zoomed out far enough to show the whole noise cloud and glide in to the
            picture's frame (a wide or tall picture's frame would crop the noise).
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

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise FlowgifError(f"--color {self.color!r} is not one of: {', '.join(COLORS)}")
        if self.background not in BACKGROUNDS:
            raise FlowgifError(f"--background {self.background!r} is not one of: light, dark")
        if self.loop not in ("forward", "pingpong"):
            raise FlowgifError(f"--loop {self.loop!r} is not one of: forward, pingpong")
        for name in ("frames", "fps", "particles", "size"):
            if getattr(self, name) < (2 if name == "frames" else 1):
                raise FlowgifError(f"--{name} must be at least {2 if name == 'frames' else 1}")
        if self.trail < 0 or self.dot < 0 or self.glow < 0:
            raise FlowgifError("--trail, --dot and --glow must be >= 0")
        if self.hold < 0:
            raise FlowgifError("--hold must be >= 0 seconds")


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


def frame_times(frames: int, ease: bool) -> torch.Tensor:
    """``frames`` times from 0 to 1, cosine-eased when ``ease``."""
    s = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(math.pi * s) if ease else s).float()


def camera(canvas: Canvas, density: ImageDensity, paths: np.ndarray, zoom: bool) -> list[Canvas]:
    """One view per frame that keeps the particle cloud in sight, ending on the picture's frame.

    Each frame needs to show 99.5 % of its particles (at least N(0, I) out to NOISE_RADIUS at the
    start); the zoom follows that need through a sliding maximum and a smoothing, so it glides
    and never cuts the cloud. A continuous flow's camera pulls in from the noise to the picture;
    a discrete flow's also backs off where a layer throws the points wide.
    """
    frames = len(paths)
    if not zoom:
        return [canvas] * frames
    per_unit = canvas.scale * density.size[0] / (2 * density.half[0])  # canvas px per unit
    room = np.array([canvas.width, canvas.height]) / 2 / per_unit  # half-view in model units
    pick = paths[:, :: max(1, paths.shape[1] // 4000)]
    need = np.quantile(np.abs(pick), 0.995, axis=1)  # (T, 2) half-extent of the cloud
    need[0] = np.maximum(need[0], NOISE_RADIUS)
    log_out = np.maximum(0.0, np.log(need / room).max(axis=1))  # how far to back off
    k = max(1, frames // 12)
    padded = np.pad(log_out, k, mode="edge")
    held = np.array([padded[i : i + 2 * k + 1].max() for i in range(frames)])
    weights = np.hanning(2 * k + 3)[1:-1]
    smooth = np.convolve(np.pad(held, k, mode="edge"), weights / weights.sum(), mode="valid")
    smooth = np.maximum(smooth, log_out)  # smoothing must not cut what the maximum kept
    return [canvas.zoomed(float(np.exp(-v))) for v in smooth]


def particle_colors(
    run: Run, z: np.ndarray, end: np.ndarray, mode: str, background: str
) -> tuple[np.ndarray, Palette]:
    """Colour number per particle and the palette, for a colour mode."""
    bg = BACKGROUNDS[background]
    dark = background == "dark"
    if mode == "position":
        k = 12
        angle = (np.arctan2(z[:, 1], z[:, 0]) / (2 * np.pi)) % 1.0
        return np.minimum((angle * k).astype(np.int64), k - 1), make_palette(
            hue_colors(k, dark), bg
        )
    if mode == "image":
        rgb = run.colors.reshape(-1, 3)[run.density.cell_index(end)]
        strip = Image.fromarray(rgb[None, :, :].astype(np.uint8), mode="RGB")
        quant = strip.quantize(
            colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        used = np.asarray(quant).ravel().astype(np.int64)
        colors = np.asarray(quant.getpalette()[: 3 * 16], dtype=np.float64).reshape(-1, 3)
        return used, make_palette(colors, bg)
    ink = (235, 235, 245) if dark else (16, 16, 28)
    if mode == "mono":
        return np.zeros(len(z), dtype=np.int64), make_palette(np.array([ink]), bg)
    # density: one colour, levels mapped through a heat ramp instead of a blend
    palette = make_palette(np.array([ink]), bg)
    s = np.linspace(0.15, 1.0, palette.levels)
    ramp = np.stack(
        [np.interp(s, DENSITY_STOPS[:, 0], DENSITY_STOPS[:, c]) for c in (1, 2, 3)], axis=1
    )
    if not dark:
        ramp = ramp[::-1]  # dense = dark on a light ground
    palette.rgb[1 : 1 + palette.levels] = np.round(ramp).astype(np.uint8)
    return np.zeros(len(z), dtype=np.int64), palette


def render(
    run: Run, out: Path, options: RenderOptions | None = None, device: torch.device | str = "cpu"
) -> RenderReport:
    """Animate ``run`` into ``out`` (format by suffix, see ``FORMATS``).

    Raises:
        FlowgifError: unknown suffix or option, or the output cannot be written.
    """
    o = options or RenderOptions()
    out = Path(out)
    kind = _format(out)
    report = RenderReport(out, 0, 0, 0, 0)
    clock = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(o.seed)
    z = run.flow.noise(o.particles, gen)
    stats = SolveStats()
    paths = run.flow.paths(z, frame_times(o.frames, o.ease).to(device), stats).cpu().numpy()
    report.nfe = stats.nfe
    report.seconds["solve"] = time.perf_counter() - clock
    color, palette = particle_colors(run, paths[0], paths[-1], o.color, o.background)
    canvas = Canvas.around(run.density.size, o.size)
    views = camera(canvas, run.density, paths, o.zoom)
    dot = o.dot or max(1, round(o.size / 256))
    report.width, report.height = canvas.width, canvas.height
    order = list(range(o.frames))
    if o.loop == "pingpong":
        order += list(range(o.frames - 2, 0, -1))
    step_ms = 1000.0 / o.fps
    durations = [step_ms] * len(order)
    durations[0] += 500.0 * o.hold
    durations[o.frames - 1] += 1000.0 * o.hold
    report.frames = len(order)
    report.seconds["draw"] = 0.0

    def draw(q: int) -> np.ndarray:
        """Frame at play position q: its particles over a fading trail of earlier positions."""
        view = views[order[q]]
        idx, col, wts = [], [], []
        for age in range(min(o.trail, q), -1, -1):  # oldest first, so the newest shows on top
            index, who = view.flat_index(run.density.to_pixels(paths[order[q - age]]), dot)
            idx.append(index)
            col.append(color[who])
            wts.append(np.full(len(index), (1 - age / (o.trail + 1)) ** 2))
        weight = np.concatenate(wts) if o.trail else None
        return draw_frame(
            np.concatenate(idx), np.concatenate(col), canvas, palette, weight, glow=o.glow
        )

    def frames() -> Iterator[np.ndarray]:
        cache: dict[tuple[int, ...], np.ndarray] = {}
        for q in range(len(order)):
            t0 = time.perf_counter()
            key = tuple(order[max(0, q - o.trail) : q + 1])  # pingpong repeats some frames
            if key not in cache:
                cache = {key: draw(q)}  # keep one: index frames are small but many
            report.seconds["draw"] += time.perf_counter() - t0
            yield cache[key]

    clock = time.perf_counter()
    if kind == ".gif":
        ms = [max(20, 10 * round(d / 10)) for d in durations]
        if abs(step_ms - ms[1 if len(ms) > 1 else 0]) > 1e-6:
            warnings.warn(
                f"GIF delays are whole 10 ms: {o.fps} fps plays as "
                f"{1000 / ms[1]:.3g} fps; choose 25 or 50",
                stacklevel=2,
            )
        _write_gif(out, frames(), palette, ms)
    elif kind == ".webp":
        _write_webp(out, frames(), palette, [round(d) for d in durations])
    elif kind == ".mp4":
        repeats = [max(1, round(d / step_ms)) for d in durations]
        _write_mp4(out, frames(), palette, repeats, o.fps, o.quality, canvas)
    else:
        _write_png_folder(out, frames(), palette)
    report.seconds["encode"] = time.perf_counter() - clock - report.seconds["draw"]
    report.bytes = _size(out)
    return report


def _format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".gif", ".mp4", ".webp"):
        return suffix
    if suffix == "" or out.is_dir():
        return "folder"
    raise FlowgifError(f"cannot render to '{out.name}': use one of {', '.join(FORMATS)}")


def _p_image(frame: np.ndarray, palette: Palette) -> Image.Image:
    img = Image.fromarray(frame, mode="P")
    img.putpalette(palette.rgb.ravel().tolist())
    return img


def _write_gif(out: Path, frames: Iterator[np.ndarray], palette: Palette, ms: list[int]) -> None:
    images = (_p_image(f, palette) for f in frames)
    first = next(images)
    atomic_write(
        out,
        lambda f: first.save(
            f,
            format="GIF",
            save_all=True,
            append_images=images,
            duration=ms,
            loop=0,
            optimize=False,
            disposal=1,
        ),
    )


def _write_webp(out: Path, frames: Iterator[np.ndarray], palette: Palette, ms: list[int]) -> None:
    images = (Image.fromarray(palette.rgb[f]) for f in frames)
    first = next(images)
    atomic_write(
        out,
        lambda f: first.save(
            f,
            format="WEBP",
            save_all=True,
            append_images=images,
            duration=ms,
            loop=0,
            quality=80,
            method=4,
        ),
    )


def _write_mp4(
    out: Path,
    frames: Iterator[np.ndarray],
    palette: Palette,
    repeats: list[int],
    fps: int,
    quality: int,
    canvas: Canvas,
) -> None:
    import imageio_ffmpeg  # ships its own ffmpeg binary

    def write(f: IO[bytes]) -> None:
        # ffmpeg writes by name: let it fill the temp file that atomic_write then renames.
        writer = imageio_ffmpeg.write_frames(
            f.name,
            (canvas.width, canvas.height),
            fps=fps,
            codec="libx264",
            quality=quality,
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        writer.send(None)
        for frame, n in zip(frames, repeats, strict=True):
            rgb = np.ascontiguousarray(palette.rgb[frame])
            for _ in range(n):
                writer.send(rgb)
        writer.close()
        f.seek(0, 2)  # ffmpeg wrote behind this handle's back; flush+fsync still apply

    atomic_write(out, write)


def _write_png_folder(out: Path, frames: Iterator[np.ndarray], palette: Palette) -> None:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as err:
        raise FlowgifError(f"cannot write to {parent}: {err.strerror or err}") from None
    try:
        for i, frame in enumerate(frames):
            _p_image(frame, palette).save(tmp / f"frame_{i:04d}.png")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _size(out: Path) -> int:
    if out.is_dir():
        return sum(p.stat().st_size for p in out.iterdir())
    return out.stat().st_size
