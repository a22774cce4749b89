"""Targets beyond pictures: the classic 2D toy densities and a word set in type.

Each becomes the same piecewise-constant density as a picture (:class:`ImageDensity`) by
rasterising its density on a ``resolution``-square grid over ``[-4, 4]^2`` with the model frame
equal to the data frame (``extent = 4``), so training, rendering and ``eval`` work unchanged.
``kl`` is then measured against that rasterised density: exact for ``checkerboard`` (piecewise
constant already); for the others the density is exact at cell centres (Gaussian mixtures) or a
numerical convolution over 4,000 points of the curve (``moons``, ``rings``, ``spiral``), an
approximation within a cell of 8/resolution units.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flowgif.errors import FlowgifError

if TYPE_CHECKING:
    from flowgif.sources.picture import ImageDensity

__all__ = ["TOYS", "WINDOW", "text_image", "toy_density", "toy_picture"]

WINDOW = 4.0  # toy densities live in [-WINDOW, WINDOW]^2
TOYS = ("moons", "8gaussians", "hexagon", "rings", "checkerboard", "spiral")
ENERGIES = ("u1", "u2", "u3", "u4")  # defined in flowgif.sources.energies, fitted by reverse KL


def _curve_mixture(points: np.ndarray, sigma: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Density of "a uniform one of ``points`` plus N(0, sigma^2 I)" on the grid ``ys x xs``.

    The Gaussian factorises over the two coordinates, so the whole grid is one matrix product.
    """
    ex = np.exp(-0.5 * ((xs[:, None] - points[None, :, 0]) / sigma) ** 2)
    ey = np.exp(-0.5 * ((ys[:, None] - points[None, :, 1]) / sigma) ** 2)
    return ey @ ex.T / (len(points) * 2 * math.pi * sigma**2)


def _toy(name: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Unnormalised density of toy ``name`` on the grid ``ys x xs`` (rows follow ``ys``)."""
    m = 4000
    s = (np.arange(m) + 0.5) / m
    if name == "8gaussians":  # FFJORD's: unit-circle centres scaled by 4/sqrt(2), sd 0.5/sqrt(2)
        a = 2 * math.pi * np.arange(8) / 8
        centres = np.stack([np.cos(a), np.sin(a)], 1) * 4 / math.sqrt(2)
        return _curve_mixture(centres, 0.5 / math.sqrt(2), xs, ys)
    if name == "hexagon":  # six Gaussians (radius 1, sd 0.1), z-scored per coordinate
        a = 2 * math.pi * np.arange(6) / 6
        scale = math.sqrt(0.5 + 0.1**2)
        centres = np.stack([np.cos(a), np.sin(a)], 1) / scale
        return _curve_mixture(centres, 0.1 / scale, xs, ys)
    if name == "moons":  # sklearn's two moons, noise 0.05, then x * 2 + (-1, -0.2)
        t = math.pi * s
        upper = np.stack([np.cos(t), np.sin(t)], 1)
        lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
        pts = np.concatenate([upper, lower]) * 2 + np.array([-1.0, -0.2])
        return _curve_mixture(pts, 0.05 * 2, xs, ys)
    if name == "rings":  # four concentric rings of equal mass, radii 0.75..3, noise 0.08
        t = 2 * math.pi * s
        circle = np.stack([np.cos(t), np.sin(t)], 1)
        pts = np.concatenate([circle * r for r in (3.0, 2.25, 1.5, 0.75)])
        return _curve_mixture(pts[::4], 0.08, xs, ys)
    if name == "spiral":  # two interleaved arms, n = sqrt(u) * 3 pi, scaled by 1/3, noise 0.1
        n = np.sqrt(s) * 3 * math.pi
        arm = np.stack([-np.cos(n) * n, np.sin(n) * n], 1) / 3
        return _curve_mixture(np.concatenate([arm, -arm])[::2], 0.1, xs, ys)
    if name == "checkerboard":  # FFJORD's: 8 of the 16 squares of side 2 on [-4, 4]^2
        cx = np.floor(xs / 2).astype(int)
        cy = np.floor(ys / 2).astype(int)
        return ((cy[:, None] + cx[None, :]) % 2 == 0).astype(float)
    raise FlowgifError(f"unknown target {name!r}; choose one of: {', '.join(TOYS)}")


def toy_density(name: str, resolution: int = 256) -> ImageDensity:
    """The toy density ``name`` rasterised on a ``resolution``-square grid (see module doc)."""
    name = name.lower()
    if name not in TOYS:
        raise FlowgifError(f"unknown target {name!r}; choose one of: {', '.join(TOYS)}")
    from flowgif.sources.picture import ImageDensity  # torch: only when a density is built

    c = (np.arange(resolution) + 0.5) / resolution * 2 * WINDOW - WINDOW
    ink = _toy(name, c, c[::-1])  # row 0 is the top (largest y)
    return ImageDensity(ink, (resolution, resolution), extent=WINDOW)


def toy_picture(density: ImageDensity) -> Image.Image:
    """A grey picture of a rasterised density (dark = dense), for previews and colours."""
    p = density.probs_np / density.probs_np.max()
    return Image.fromarray((255 * (1 - p)).astype(np.uint8), mode="L")


def text_image(text: str, height: int = 256) -> Image.Image:
    """``text`` in bold black type on white, ``height`` pixels tall, with a small margin."""
    if not text.strip():
        raise FlowgifError("the word to set in type is empty; give a word, e.g. text:Ada")
    font = ImageFont.load_default(size=int(height * 0.7))
    bold = max(1, height // 40)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=font, stroke_width=bold
    )
    w, h = box[2] - box[0], box[3] - box[1]
    margin = height // 10
    img = Image.new("L", (w + 2 * margin, h + 2 * margin), 255)
    ImageDraw.Draw(img).text(
        (margin - box[0], margin - box[1]),
        text,
        fill=0,
        font=font,
        stroke_width=bold,
        stroke_fill=0,
    )
    return img
