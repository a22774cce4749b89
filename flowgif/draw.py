"""Drawing particles with numpy: canvas framing, one fixed palette, index-image frames.

Every frame is an ``(H, W)`` uint8 image of indices into one 256-colour palette chosen before
the first frame, so GIF frames need no per-frame quantisation and colours never flicker.
Palette layout: index 0 is the background; index ``1 + k * L + (l - 1)`` is colour ``k`` at
brightness level ``l`` in ``1..L`` (more particles on a pixel, a stronger colour); index 254
(``KEEP``) is never drawn — a GIF frame marks the pixels it leaves unchanged with it, as its
transparent index; index 255 (``TEXT``) is for labels.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from flowgif.files import atomic_write
from flowgif.owned import SIGNATURE

__all__ = ["KEEP", "TEXT", "Canvas", "Palette", "draw_frame", "make_palette", "write_samples_png"]

BACKGROUNDS = {"light": (255, 255, 255), "dark": (14, 14, 20), "transparent": (128, 128, 128)}
TEXT = 255  # palette index of label text
KEEP = 254  # palette index no frame draws: a GIF's "unchanged since the last frame"
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
class Canvas:
    """Maps picture pixel coordinates ``(u, v)`` onto a canvas of ``width x height`` pixels.

    The canvas keeps the picture's aspect ratio, adds ``margin`` (a fraction of the longer
    side) around it and has even sides (H.264 needs them).
    """

    width: int
    height: int
    scale: float  # canvas pixels per picture pixel
    offset: tuple[float, float]

    @classmethod
    def around(cls, size: tuple[int, int], longer: int, margin: float = 0.04) -> Canvas:
        w0, h0 = size
        inner = longer / (1 + 2 * margin)
        scale = inner / max(w0, h0)
        width = max(2, 2 * round((w0 * scale + 2 * margin * inner) / 2))
        height = max(2, 2 * round((h0 * scale + 2 * margin * inner) / 2))
        return cls(width, height, scale, ((width - w0 * scale) / 2, (height - h0 * scale) / 2))

    def zoomed(self, factor: float) -> Canvas:
        """The same canvas looking ``factor`` times closer (< 1: further) at its centre."""
        cx, cy = self.width / 2, self.height / 2
        return Canvas(
            self.width,
            self.height,
            self.scale * factor,
            (cx + (self.offset[0] - cx) * factor, cy + (self.offset[1] - cy) * factor),
        )

    def flat_index(self, uv: np.ndarray, dot: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Flat canvas indices covered by ``dot x dot`` squares at the points, and the point
        each index belongs to (points off the canvas are dropped)."""
        cx = np.floor(uv[:, 0] * self.scale + self.offset[0] - (dot - 1) / 2).astype(np.int64)
        cy = np.floor(uv[:, 1] * self.scale + self.offset[1] - (dot - 1) / 2).astype(np.int64)
        idx, who = [], []
        for dy in range(dot):
            for dx in range(dot):
                x, y = cx + dx, cy + dy
                inside = np.flatnonzero((x >= 0) & (x < self.width) & (y >= 0) & (y < self.height))
                idx.append(y[inside] * self.width + x[inside])
                who.append(inside)
        return np.concatenate(idx), np.concatenate(who)


@dataclass
class Palette:
    """256 RGB colours; ``colors`` hues at ``levels`` brightness levels over a background."""

    rgb: np.ndarray  # (256, 3) uint8
    levels: int
    colors: int


def make_palette(
    colors: np.ndarray,
    background: tuple[int, int, int],
    min_alpha: float = 0.25,
    reserve: int = 0,
) -> Palette:
    """Palette for ``K`` particle colours ``(K, 3)`` over ``background``, as many levels as fit.

    Level 1 (one particle) blends ``min_alpha`` of the colour into the background, so a lone
    dot is clearly visible; the top level is the pure colour. The ``reserve`` indices just
    below ``KEEP`` are left to the caller.
    """
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    k = len(colors)
    levels = max(1, (KEEP - 1 - reserve) // k)  # indices 1 .. KEEP - 1 - reserve
    alpha = np.linspace(min_alpha, 1.0, levels) if levels > 1 else np.ones(1)
    bg = np.asarray(background, dtype=np.float64)
    rgb = np.zeros((256, 3))
    rgb[:] = bg
    blend = bg + alpha[None, :, None] * (colors[:, None, :] - bg)  # (K, L, 3)
    rgb[1 : 1 + k * levels] = blend.reshape(-1, 3)
    rgb[TEXT] = (210, 210, 220) if bg.mean() < 128 else (60, 60, 70)
    return Palette(np.clip(np.round(rgb), 0, 255).astype(np.uint8), levels, k)


def hue_colors(k: int, dark: bool) -> np.ndarray:
    """``k`` evenly spaced hues, strong enough to read on the given background."""
    v, s = (1.0, 0.65) if dark else (0.80, 0.85)
    return np.array([colorsys.hsv_to_rgb(i / k, s, v) for i in range(k)]) * 255


def draw_frame(
    index: np.ndarray,
    color: np.ndarray,
    canvas: Canvas,
    palette: Palette,
    weight: np.ndarray | None = None,
    saturate: float = 3.0,
    glow: float = 0.0,
) -> np.ndarray:
    """One ``(H, W)`` uint8 index frame.

    Args:
        index: flat canvas index per drawn point.
        color: colour number (``0..K-1``) per point, same length; where points share a pixel
            the last one's colour shows.
        canvas: the frame geometry.
        palette: the fixed palette.
        weight: per-point weight (1 if None); trails use less for older positions.
        saturate: weight per pixel that reaches full colour; level ~ log(1 + weight).
        glow: strength of a soft halo (a blurred copy of the particles, in their colours).
    """
    n = canvas.width * canvas.height
    counts = np.bincount(index, weights=weight, minlength=n)
    top = np.zeros(n, dtype=np.int64)
    top[index] = color
    if glow > 0:
        counts, top = _add_glow(counts, top, canvas, glow)
    levels = palette.levels
    f = np.log1p(counts) / np.log1p(saturate)
    lvl = np.clip(1 + np.round((levels - 1) * f), 1, levels).astype(np.int64)
    frame = np.where(counts > 0, 1 + top * levels + lvl - 1, 0)
    return frame.astype(np.uint8).reshape(canvas.height, canvas.width)


def _add_glow(
    counts: np.ndarray, top: np.ndarray, canvas: Canvas, strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """Spread each pixel's weight with a small Gaussian; empty pixels take a neighbour's colour."""
    from scipy.ndimage import gaussian_filter, grey_dilation  # only needed for glow

    shape = (canvas.height, canvas.width)
    c = counts.reshape(shape).astype(np.float64)
    halo = gaussian_filter(c, sigma=1.5, mode="constant") * strength
    near = grey_dilation(np.where(c > 0, top.reshape(shape), -1), size=(5, 5))
    empty = (c == 0) & (near >= 0)
    top = np.where(empty, near, top.reshape(shape)).ravel()
    return (c + np.where(c > 0, 0, halo) * empty).ravel(), top


def flatten_rgb(
    img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """The picture as RGB, transparency composited over ``background``."""
    rgba = (
        img.convert("RGBA")
        if img.mode not in ("I", "I;16", "I;16B", "F")
        else (Image.fromarray(_to_8bit(np.asarray(img))).convert("RGBA"))
    )
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _to_8bit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    top = 65535.0 if a.max() > 255 else 255.0
    return np.clip(a / top * 255, 0, 255).astype(np.uint8)


def write_samples_png(
    path: Path,
    img: Image.Image,
    samples_uv: np.ndarray,
    ink: np.ndarray | None = None,
    height: int = 320,
) -> None:
    """The target, the ink map that was fitted (``ink``, the working grid) when given, and a
    histogram of model samples (pixel coordinates), side by side and upright."""
    canvas = Canvas.around(img.size, height, margin=0.0)
    size = (canvas.width, canvas.height)
    target = flatten_rgb(img).resize(size, Image.Resampling.LANCZOS)
    palette = make_palette(np.array([[20, 20, 30]]), BACKGROUNDS["light"], min_alpha=0.25)
    index, _ = canvas.flat_index(samples_uv)
    frame = draw_frame(index, np.zeros(len(index), dtype=np.int64), canvas, palette, None, 8.0)
    drawn = Image.fromarray(frame, mode="P")
    drawn.putpalette(palette.rgb.ravel().tolist())
    panels = [target]
    if ink is not None:
        level = ink / max(float(ink.max()), 1e-12)
        grey = np.round(255 * (1 - level)).astype(np.uint8)
        panels.append(Image.fromarray(grey, mode="L").resize(size, Image.Resampling.BOX))
    panels.append(drawn.convert("RGB"))
    gap = 8
    out = Image.new("RGB", (len(panels) * (canvas.width + gap) - gap, canvas.height), (200,) * 3)
    for k, panel in enumerate(panels):
        out.paste(panel.convert("RGB"), (k * (canvas.width + gap), 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SIGNATURE)
    atomic_write(path, lambda f: out.save(f, format="PNG", pnginfo=info))
