"""The picture as a probability density: ink map, sampling, exact log-density and entropy.

Frames:
    *Pixel coordinates* ``(u, v)`` of the original picture: ``u`` is the column in ``[0, W)``,
    ``v`` the row in ``[0, H)``, row 0 at the top; pixel ``(row i, column j)`` covers
    ``[j, j+1) x [i, i+1)``. Samples handed to users (``flowgif sample``) are in this frame.

    *Model coordinates* ``(x, y)``, where the flow lives: the picture is centred on the origin,
    ``y`` points up (row 0 is the top), the aspect ratio is kept and the longer side spans
    ``[-extent, extent]`` (default 2, which suits N(0, I)).

The density is piecewise constant: uniform inside each cell of the working grid (the picture
area-averaged to ``resolution`` pixels on its longer side) and proportional to the cell's ink.
Ink is darkness x opacity, ``(1 - L/255) * A/255``, as the referee scores it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from flowgif.errors import FlowgifError
from flowgif.sources.base import Distribution
from flowgif.sources.ink import Ink, ink_of
from flowgif.sources.reading import MAX_PIXELS, image_hash, load_image

__all__ = [
    "MAX_PIXELS",
    "ImageDensity",
    "blur_points",
    "image_hash",
    "ink_colors",
    "ink_map",
    "load_image",
    "place_cells",
]

FLOOR = 1e-6  # mass of the wide Gaussian floor of a blurred picture (so log p is finite)


def ink_map(img: Image.Image, invert: bool = False) -> np.ndarray:
    """Ink in ``[0, 1]`` per pixel, ``(H, W)`` float64: darkness x opacity, as the referee
    scores it (:mod:`flowgif.sources.ink` has the other models)."""
    return ink_of(img, "darkness", invert).ink


def ink_colors(
    img: Image.Image, grid: tuple[int, int], invert: bool = False, ink: np.ndarray | None = None
) -> np.ndarray:
    """Ink-weighted mean colour of each working-grid cell, ``(h, w, 3)`` uint8.

    Weighting by ink keeps a logo's colour at its anti-aliased edges instead of fading it into
    the paper; cells with no ink get the colour of the nearest cell with ink.
    """
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F", "CMYK"):
        img = (
            img.convert("RGB")
            if img.mode == "CMYK"
            else Image.fromarray((ink_map(img, not invert) * 255).astype(np.uint8))
        )
    ink = (ink_map(img, invert) if ink is None else ink).astype(np.float32)
    rgb = np.asarray(img.convert("RGBA").convert("RGB"), dtype=np.float32)
    h, w = grid

    def shrink(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a, mode="F").resize((w, h), Image.Resampling.BOX))

    weight = shrink(ink)
    out = np.stack([shrink(rgb[..., c] * ink) for c in range(3)], axis=-1)
    inked = weight > 1e-6
    if not inked.any():
        return np.zeros((h, w, 3), dtype=np.uint8)
    mean = out / np.maximum(weight, 1e-6)[..., None]
    # A cell without ink (where a stray particle may land) takes its nearest inked cell's colour.
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~inked, return_indices=True)
    return np.clip(np.round(mean[rows, cols]), 0, 255).astype(np.uint8)


def _blank_reason(img: Image.Image, invert: bool) -> str:
    """Why a picture has no ink, and what would help."""
    if "A" in img.getbands() and not np.asarray(img.getchannel("A")).any():
        return "the picture is fully transparent: it has no ink to fit"
    if invert:
        return (
            "the picture has no light pixels, and density.invert takes lightness as ink; "
            "try without density.invert"
        )
    return (
        "the picture has no ink (it is blank white); for light shapes on a dark "
        "background use density.invert"
    )


class ImageDensity(Distribution):
    """Piecewise-constant density proportional to a picture's ink (frames: module docstring).

    As the *start* of a flow a picture is blurred (``blur`` > 0): a point of the piecewise-
    constant density plus N(0, blur^2 I), mixed with a wide floor of mass ``FLOOR``,
    N(0, (2 extent)^2 I). Its log-density is then finite everywhere (the backward solve of a
    flow that is not perfect lands a little off the ink) and still exact: the blur factorises
    over the two axes into differences of normal CDFs per cell.

    Args:
        ink: ``(h, w)`` non-negative array on the working grid (row 0 at the top).
        size: ``(W, H)`` of the original picture, for the pixel-coordinate maps.
        extent: half the longer side in model units.
        device: where sampling and ``log_prob`` run.
        blur: standard deviation of the blur in model units (0: none).

    Example:
        >>> d = ImageDensity(np.array([[1.0, 0.0], [0.0, 1.0]]), size=(2, 2))
        >>> d.sample(4).shape
        torch.Size([4, 2])
        >>> round(d.entropy(), 4)  # two cells of area 4 each, half the mass in each
        2.0794
    """

    def __init__(
        self,
        ink: np.ndarray,
        size: tuple[int, int],
        extent: float = 2.0,
        device: torch.device | str = "cpu",
        blur: float = 0.0,
    ) -> None:
        ink = np.asarray(ink, dtype=np.float64)
        total = ink.sum()
        if not np.isfinite(total) or total <= 0:
            raise FlowgifError(
                "the picture has no ink (it is blank); try density.invert for light "
                "shapes on a dark background"
            )
        self.size = size
        self.grid = ink.shape  # (h, w)
        w0, h0 = size
        scale = 2.0 * extent / max(w0, h0)
        self.half = (0.5 * w0 * scale, 0.5 * h0 * scale)  # half width, half height (model units)
        h, w = self.grid
        self.cell = (2 * self.half[0] / w, 2 * self.half[1] / h)
        self.cell_area = self.cell[0] * self.cell[1]
        self.probs_np = ink / total
        self.blur = float(blur)
        self.device = torch.device(device)
        self.ink: Ink | None = None  # how a picture's ink was made (from_image sets it)
        self.probs = torch.as_tensor(
            self.probs_np.ravel(), dtype=torch.float32, device=self.device
        )
        cdf = np.cumsum(self.probs_np.ravel())
        self.cdf = torch.as_tensor(cdf / cdf[-1], dtype=torch.float64, device=self.device)

    @classmethod
    def from_image(
        cls,
        img: Image.Image,
        resolution: int = 256,
        invert: bool = False,
        ink_floor: float = 0.0,
        extent: float = 2.0,
        device: torch.device | str = "cpu",
        ink_model: str = "darkness",
    ) -> ImageDensity:
        """Density of a picture, area-averaged to ``resolution`` pixels on its longer side.

        ``ink_model`` is one of :data:`flowgif.sources.ink.INKS`; the result's ``ink``
        attribute keeps the :class:`~flowgif.sources.ink.Ink` it used (the full-resolution
        map, the model and why).
        """
        made = ink_of(img, ink_model, invert)
        ink = made.ink
        if ink.sum() <= 0:
            raise FlowgifError(_blank_reason(img, invert))
        if ink_floor > 0:
            ink = np.clip((ink - ink_floor) / (1.0 - ink_floor), 0.0, 1.0)
            if ink.sum() <= 0:
                raise FlowgifError(
                    f"no ink is left above the ink floor {ink_floor:g}; lower density.ink_floor"
                )
        w0, h0 = img.info.get("size", img.size)  # the file's own size (see load_image)
        f = min(1.0, resolution / max(w0, h0))
        w, h = max(1, round(w0 * f)), max(1, round(h0 * f))
        if ink.shape != (h, w):
            ink = np.asarray(
                Image.fromarray(ink.astype(np.float32), mode="F").resize(
                    (w, h), Image.Resampling.BOX
                ),
                dtype=np.float64,
            )
        density = cls(np.clip(ink, 0.0, None), (w0, h0), extent, device)
        density.ink = made
        return density

    def cell_index(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Row-major working-grid cell of each model point, clamped to the grid."""
        h, w = self.grid
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        col = np.clip(np.floor((x[:, 0] + self.half[0]) / self.cell[0]), 0, w - 1)
        row = np.clip(np.floor((self.half[1] - x[:, 1]) / self.cell[1]), 0, h - 1)
        return (row * w + col).astype(np.int64)

    def to(self, device: torch.device | str) -> ImageDensity:
        """The same density with its tensors on ``device``."""
        return ImageDensity(self.probs_np, self.size, self.half_extent, device, self.blur)

    def sharp(self) -> ImageDensity:
        """This density without its blur (the picture itself)."""
        if self.blur == 0:
            return self
        out = ImageDensity(self.probs_np, self.size, self.half_extent, self.device)
        out.ink = self.ink
        return out

    def blurred(self, cells: float) -> ImageDensity:
        """This density blurred by ``cells`` working-grid cells (the longer cell side)."""
        out = ImageDensity(
            self.probs_np, self.size, self.half_extent, self.device, cells * max(self.cell)
        )
        out.ink = self.ink
        return out

    @property
    def half_extent(self) -> float:
        return max(self.half)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples, ``(n, 2)`` float32 in model coordinates."""
        return self.place(self.draws(n, generator))

    def draws(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One call per kind of number (on a GPU, every call is a kernel per picture of a
        stack): ``(n, 3)`` uniforms, the first picking each point's cell and two placing it in
        the cell; with a blur, ``(n, 4)`` normals (the offset, the floor's wide point) and the
        floor's coins."""
        out = [torch.rand(n, 3, dtype=torch.float64, device=self.device, generator=generator)]
        if self.blur > 0:
            out.append(torch.randn(n, 4, device=self.device, generator=generator))
            out.append(torch.rand(n, device=self.device, generator=generator))
        return out

    def place(self, draws: list[torch.Tensor]) -> torch.Tensor:
        h, w = self.grid
        cells = draws[0]
        out = place_cells(self.cdf, h * w, w, self.half, self.cell, cells[..., 0], cells[..., 1:])
        if self.blur > 0:
            out = blur_points(out, self.blur, self.half_extent, *draws[1:])
        return out

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density at model points ``(N, 2)``; without blur ``-inf`` off the ink or
        the frame."""
        if self.blur > 0:
            return torch.cat([self._blurred_log_prob(part) for part in x.split(16384)])
        h, w = self.grid
        col = torch.floor((x[:, 0] + self.half[0]) / self.cell[0]).long()
        row = torch.floor((self.half[1] - x[:, 1]) / self.cell[1]).long()
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        p = torch.zeros(len(x), dtype=torch.float32, device=x.device)
        idx = (row * w + col)[inside]
        p[inside] = self.probs.to(x.device)[idx]
        return torch.log(p / self.cell_area)

    def _blurred_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p`` of the blurred density: per point, the cells within 5 blurs of it."""
        h, w = self.grid
        cw, ch = self.cell
        x64 = x.to(torch.float64)
        k = int(np.ceil(5 * self.blur / min(cw, ch))) + 1
        off = torch.arange(-k, k + 1, device=x.device)
        col = torch.floor((x64[:, 0] + self.half[0]) / cw).long()[:, None] + off  # (N, K)
        row = torch.floor((self.half[1] - x64[:, 1]) / ch).long()[:, None] + off
        normal = torch.distributions.Normal(0.0, 1.0)
        left = -self.half[0] + col * cw  # cell column c spans [left, left + cw)
        wx = normal.cdf((left + cw - x64[:, :1]) / self.blur) - normal.cdf(
            (left - x64[:, :1]) / self.blur
        )
        top = self.half[1] - row * ch  # cell row r spans (top - ch, top]
        wy = normal.cdf((top - x64[:, 1:]) / self.blur) - normal.cdf(
            (top - ch - x64[:, 1:]) / self.blur
        )
        ok_c, ok_r = (col >= 0) & (col < w), (row >= 0) & (row < h)
        probs = torch.as_tensor(self.probs_np, device=x.device)
        mass = probs[row.clamp(0, h - 1)[:, :, None], col.clamp(0, w - 1)[:, None, :]]
        mass = mass * (ok_r[:, :, None] & ok_c[:, None, :])
        p = torch.einsum("nr,nrc,nc->n", wy, mass, wx) / self.cell_area
        s = 2 * self.half_extent  # the floor: N(0, s^2 I)
        log_floor = -0.5 * (x64 / s).pow(2).sum(1) - np.log(2 * np.pi * s * s)
        out = torch.logaddexp(torch.log((1 - FLOOR) * p), np.log(FLOOR) + log_floor)
        return out.to(x.dtype)

    def entropy(self) -> float:
        """Exact differential entropy in nats: ``-sum p_i log(p_i / cell_area)`` (unblurred)."""
        if self.blur > 0:
            raise ValueError("the entropy of a blurred picture has no closed form")
        p = self.probs_np[self.probs_np > 0]
        return float(-(p * np.log(p / self.cell_area)).sum())

    def to_pixels(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Model ``(N, 2)`` -> pixel coordinates ``(u, v)`` of the original picture."""
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        w0, h0 = self.size
        u = (x[:, 0] + self.half[0]) / (2 * self.half[0]) * w0
        v = (self.half[1] - x[:, 1]) / (2 * self.half[1]) * h0
        return np.stack([u, v], axis=1)

    def from_pixels(self, p: np.ndarray) -> torch.Tensor:
        """Pixel ``(u, v)`` ``(N, 2)`` -> model coordinates, float32."""
        p = np.asarray(p, dtype=np.float64)
        w0, h0 = self.size
        x = p[:, 0] / w0 * (2 * self.half[0]) - self.half[0]
        y = self.half[1] - p[:, 1] / h0 * (2 * self.half[1])
        return torch.as_tensor(np.stack([x, y], axis=1), dtype=torch.float32)


def place_cells(
    cdf: Any, cells: Any, width: Any, half: Any, cell: Any, u: Any, jitter: Any
) -> Any:
    """Points in the cells that uniforms ``u`` pick by the cumulative probabilities ``cdf``,
    at ``jitter`` within each; for one picture (``cdf`` ``(K,)``, numbers) or a stack of them
    (``cdf`` ``(M, K)``, every other number ``(M, 1)``): the same operations either way."""
    idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=cells - 1)
    row, col = idx // width, idx % width
    # Keep a hair off the cell borders so float32 rounding cannot move a point into the
    # neighbouring (possibly ink-free) cell.
    jitter = 1e-3 + 0.998 * jitter
    x = -half[0] + (col + jitter[..., 0]) * cell[0]
    y = half[1] - (row + jitter[..., 1]) * cell[1]
    return torch.stack([x, y], dim=-1).float()


def blur_points(out: Any, blur: Any, wide_half: Any, normals: Any, coin: Any) -> Any:
    """A blurred picture's points: Gaussian offsets, and the wide floor for a few."""
    out = out + blur * normals[..., :2]
    return torch.where((coin < FLOOR)[..., None], normals[..., 2:] * 2 * wide_half, out)
