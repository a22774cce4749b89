"""What a render may be asked for (:class:`RenderOptions`, checked when made), what it did
(:class:`RenderReport`), and the output formats."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowgif.draw import BACKGROUNDS
from flowgif.errors import FlowgifError
from flowgif.limits import MAX_FRAMES, MAX_HOLD, MAX_PARTICLES, MAX_PATH_POINTS, MAX_SEED
from flowgif.render.pacing import PACES

__all__ = [
    "COLORS",
    "FORMATS",
    "MIN_FRAMES",
    "MIN_SIZE",
    "RenderOptions",
    "RenderReport",
    "output_format",
]


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
            (:mod:`flowgif.render.pacing`); ``time`` takes them at equal times of the flow.
        panels: beside the particles, the picture's ink, the exact density ``p_t`` where the
            particles are, and the vector field's arrows (:mod:`flowgif.render.panels`; one
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
                f"{self.frames * self.particles:,} points (render.frames x render.particles) "
                f"are more than a render holds ({MAX_PATH_POINTS:,}); lower one of them"
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


MIN_FRAMES, MIN_SIZE = 60, 256  # what --max-mb may lower frames and size to


def output_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".gif", ".mp4", ".webp"):
        return suffix
    if suffix == "" or out.is_dir():
        return "folder"
    raise FlowgifError(f"cannot render to '{out.name}': use one of {', '.join(FORMATS)}")
