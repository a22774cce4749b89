"""The particles' colours: one index per particle into one fixed palette shared by every frame
(so frames never flicker), by position, by the picture's colours, by density, or plain."""

from __future__ import annotations

import numpy as np
from PIL import Image

from flowgif.draw import BACKGROUNDS, DENSITY_STOPS, Palette, hue_colors, make_palette
from flowgif.sources.picture import ImageDensity
from flowgif.store import Run

__all__ = ["particle_colors"]


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
