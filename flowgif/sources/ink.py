"""How a picture becomes ink: the models that turn pixels into the mass a flow must carry.

- ``darkness``: ``(1 - L) * A`` (``L`` lightness, ``A`` opacity, both in [0, 1]), as the referee
  scores it: right for clean pictures on a white or transparent ground.
- ``local``: ink is how much darker a pixel is than the paper around it. The paper's lightness
  is estimated on a coarse grid (a high percentile per block, a grey closing over a few
  blocks so that shapes up to ~1/8 of the picture do not count as paper, then a smoothing),
  so uneven lighting and grey paper carry no mass; a soft threshold at a few times the paper's
  own noise keeps the grain out. For photos and scans of strokes.
- ``shape``: every pixel that differs from the background (its colour, estimated on the
  picture's border, or its transparency) is full ink: a colour logo as its silhouette.
- ``auto`` (the default): ``darkness`` for a clean picture — its paper (the border's light
  pixels, or the picture's where shapes cover the border) is near white and flat, or the
  ground is transparent, or no paper shows at all — and ``local`` otherwise. On clean
  pictures it is exactly ``darkness``.

With ``invert`` lightness is the ink (light shapes on a dark ground) and "paper" is dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["INKS", "Ink", "ink_of", "lightness_alpha"]

INKS = ("auto", "darkness", "local", "shape")
CLEAN_PAPER = 0.10  # clean: 90 % of the paper (the border's light pixels) is darker than this
BORDER = 0.03  # the border strip, as a share of the shorter side (at least 1 pixel)
BLOCKS = 64  # coarse grid of the paper estimate, on the longer side


@dataclass
class Ink:
    """An ink map and how it was made.

    Attributes:
        ink: ``(H, W)`` float64 in [0, 1].
        model: the model used (``auto`` resolved).
        reason: one line on why, for the user.
    """

    ink: np.ndarray
    model: str
    reason: str


def lightness_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lightness and opacity in [0, 1], ``(H, W)`` each.

    8-bit pictures go through Pillow's integer RGBA -> LA conversion, exactly as the referee;
    16-bit, 32-bit and float pictures are scaled first (:func:`_scaled_lightness`).
    """
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        return _scaled_lightness(a, img.mode), np.ones_like(a)
    if img.mode == "CMYK":
        img = img.convert("RGB")
    la = np.asarray(img.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0
    return la[..., 0], la[..., 1]


def _scaled_lightness(a: np.ndarray, mode: str) -> np.ndarray:
    """Lightness in [0, 1] of a 16-bit, 32-bit or float picture, from its own range.

    Float pictures whose values lie in [0, 1] are taken as they are; other pictures by the
    range their type implies (8 or 16 bits) when the values fit it, else by their own
    minimum and maximum.

    Raises:
        FlowgifError: the picture holds NaN or infinite values.
    """
    from flowgif.errors import FlowgifError

    if not np.isfinite(a).all():
        raise FlowgifError("the picture holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if mode == "F" and lo >= 0 and hi <= 1:
        return a
    for top in (255.0, 65535.0):
        if lo >= 0 and hi <= top:
            return a / top
    return (a - lo) / (hi - lo) if hi > lo else np.ones_like(a)


def ink_of(img: Image.Image, model: str = "auto", invert: bool = False) -> Ink:
    """The picture's ink under ``model`` (one of :data:`INKS`)."""
    lum, alpha = lightness_alpha(img)
    dark = lum if invert else 1.0 - lum  # darkness: 0 on white paper (or black, inverted)
    if model == "darkness":
        return Ink(dark * alpha, "darkness", "ink = darkness x opacity, as asked")
    if model == "shape":
        return Ink(_shape(img, alpha), "shape", "every pixel unlike the background is ink")
    if model == "local":
        return Ink(_local(dark) * alpha, "local", "ink = darker than the paper around it")
    border = _border(dark, alpha)
    if border is None:
        return Ink(dark * alpha, "darkness", "a transparent ground: ink = darkness x opacity")
    paper = border[border < 0.5]  # where the border is paper, not a shape that touches it
    if paper.size < 0.1 * border.size:
        whole = dark[alpha > 0.5]
        paper = whole[whole < 0.5]
    ground = "dark" if invert else "white"
    if not paper.size:
        return Ink(dark * alpha, "darkness", "no paper to be seen: every pixel is ink")
    if np.quantile(paper, 0.9) < CLEAN_PAPER:
        return Ink(dark * alpha, "darkness", f"a clean picture on a flat {ground} ground")
    light = 1 - paper
    why = (
        f"the paper is not clean (lightness {_pct(np.quantile(light, 0.05))}-"
        f"{_pct(np.quantile(light, 0.95))} of 255): ink = darker than the paper around it"
    )
    return Ink(_local(dark) * alpha, "local", why)


def _pct(v: float) -> str:
    return f"{round(255 * float(v))}"


def _border(dark: np.ndarray, alpha: np.ndarray) -> np.ndarray | None:
    """Darkness of the opaque pixels of the picture's border strip (None: it is transparent)."""
    mask = _border_mask(dark.shape)
    opaque = mask & (alpha > 0.5)
    if opaque.sum() < 0.5 * mask.sum():
        return None
    return dark[opaque]


def _border_mask(shape: tuple[int, ...]) -> np.ndarray:
    """True on the picture's border strip (:data:`BORDER` of the shorter side, >= 1 pixel)."""
    h, w = shape
    k = max(1, round(BORDER * min(h, w)))
    mask = np.zeros((h, w), dtype=bool)
    mask[:k], mask[-k:], mask[:, :k], mask[:, -k:] = True, True, True, True
    return mask


def _local(dark: np.ndarray) -> np.ndarray:
    """How much darker each pixel is than its paper, softly thresholded, in [0, 1]."""
    from scipy.ndimage import gaussian_filter, grey_closing, zoom

    h, w = dark.shape
    step = max(1, int(np.ceil(max(h, w) / BLOCKS)))
    gh, gw = -(-h // step), -(-w // step)
    light = 1.0 - dark
    padded = np.pad(light, ((0, gh * step - h), (0, gw * step - w)), mode="edge")
    blocks = padded.reshape(gh, step, gw, step).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
    coarse = np.quantile(blocks, 0.9, axis=-1)  # the paper shows through most blocks
    span = max(3, round(max(gh, gw) / 8))
    coarse = grey_closing(coarse, size=(span, span), mode="nearest")  # shapes are not paper
    coarse = gaussian_filter(coarse, sigma=1.0, mode="nearest")
    paper = zoom(coarse, (gh * step / gh, gw * step / gw), order=1, mode="nearest")[:h, :w]
    paper = np.maximum(paper, light)  # no pixel is lighter than its paper
    contrast = np.clip((paper - light) / np.maximum(paper, 0.05), 0.0, 1.0)
    low = contrast[contrast <= np.quantile(contrast, 0.5)]
    noise = 1.4826 * float(np.median(np.abs(low - np.median(low)))) if low.size else 0.0
    floor = 3.0 * noise + 0.02
    above = contrast[contrast > floor]
    top = float(np.quantile(above, 0.95)) if above.size else 1.0
    return np.clip((contrast - floor) / max(top - floor, 1e-6), 0.0, 1.0)


def _shape(img: Image.Image, alpha: np.ndarray) -> np.ndarray:
    """1 where a pixel differs from the background colour (or is opaque on a transparent
    ground), with a soft edge of the width of the anti-aliasing."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        lum, _ = lightness_alpha(img)
        rgb = np.repeat(lum[..., None], 3, axis=-1)
    else:
        rgb = np.asarray(img.convert("RGBA").convert("RGB"), dtype=np.float64) / 255.0
    mask = _border_mask(alpha.shape)
    if (alpha[mask] > 0.5).mean() < 0.5:  # a transparent ground: opacity is the shape
        return np.clip((alpha - 0.1) / 0.4, 0.0, 1.0)
    ground = np.median(rgb[mask & (alpha > 0.5)], axis=0)
    distance = np.linalg.norm(rgb - ground, axis=-1) / np.sqrt(3)
    return np.clip((distance - 0.04) / 0.08, 0.0, 1.0) * alpha
