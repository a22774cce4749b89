"""The posterior of the straight path, in closed form on a grid: ``E[x1 | x_t]`` and ``p_t``.

For ``x_t = (1 - t) x0 + t x1`` with independent draws, the end on cells ``c`` of mass ``m_c``
and the start N(0, I), ``E[x1 | x_t = x]`` is the ratio of two Gaussian blurs (width ``1 - t``)
of the cells placed at ``t c``, and the denominator is ``p_t`` (a picture start adds one
convolution by its cells placed at ``(1 - t) c'``). :class:`Posterior` computes them for a
grid of nodes per time (:class:`_Slice`); :class:`Table` stacks a table of times for one
vectorised look-up per batch (flow matching's exact target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowgif.errors import FlowgifError
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity

__all__ = ["Posterior", "Table", "blur_matrix", "solve_times", "table_bytes"]

STEPS = 48  # solver steps, even in log(1 - t) (bench/EXACT.md: 32 to 64 measured)


def grid_size(longer: int) -> int:
    """Nodes along each axis of a time's grid for an end whose longer side has ``longer``
    cells: 1.5 x that, 128 to 384, odd (a node at the centre)."""
    return int(min(384, max(128, 1.5 * longer))) | 1


def table_bytes(longer: int, steps: int = STEPS) -> int:
    """The bytes of a :class:`Table` (its default times) for an end whose longer side has
    ``longer`` cells: ``steps + 1`` slices of mass and mean, ``3 x G^2`` float32 each
    (87 MB at G = 385, the largest grid)."""
    return (steps + 1) * (3 * grid_size(longer) ** 2 + 4) * 4


def solve_times(delta: float, steps: int = STEPS) -> np.ndarray:
    """``steps + 1`` times from 0 to ``1 - delta``, even in ``log(1 - t)``."""
    k = np.arange(steps + 1) / steps
    return 1.0 - delta**k


@dataclass
class _Slice:
    """The posterior at one time on a grid: node ``(i, j)`` sits at ``lo + (j, i) * step``.

    ``mass`` is ``p_t`` integrated over each node's cell (it sums to 1), ``mean`` the
    posterior mean times ``mass``, ``(2, G, G)``."""

    t: float
    lo: Tensor  # (2,) x and y of node (0, 0)
    step: Tensor  # (2,)
    mass: Tensor  # (Gy, Gx)
    mean: Tensor  # (2, Gy, Gx)

    def at(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior mean ``E[x1 | x_t = x]`` ``(N, 2)`` and ``p_t(x)`` ``(N,)``, by
        bilinear interpolation (points off the grid take its edge)."""
        corners = _corners(x, self.lo, self.step, self.mass.shape)
        mass = sum(w * self.mass[r, c] for (r, c), w in corners)
        mean = sum(w * self.mean[:, r, c] for (r, c), w in corners)
        tiny = torch.finfo(self.mass.dtype).tiny
        e = (mean / mass.clamp_min(tiny)).T
        far = mass <= tiny  # beyond the grid's reach: the nearest node's mean
        if far.any():
            e[far] = self._nearest_mean(x[far])
        density = mass / (self.step[0] * self.step[1])
        return e, density

    def _nearest_mean(self, x: Tensor) -> Tensor:
        """The posterior mean at the grid node with mass nearest to each point's node (a
        point where ``p_t`` underflows: far out in the start's tail)."""
        if not hasattr(self, "_nearest"):
            from scipy.ndimage import distance_transform_edt

            empty = (self.mass <= torch.finfo(self.mass.dtype).tiny).cpu().numpy()
            _, (rows, cols) = distance_transform_edt(empty, return_indices=True)
            self._nearest = torch.as_tensor(rows * empty.shape[1] + cols, device=x.device)
        gy, gx = self.mass.shape
        u = ((x - self.lo) / self.step).round().long()
        node = u[:, 1].clamp(0, gy - 1) * gx + u[:, 0].clamp(0, gx - 1)
        near = self._nearest.flatten()[node]
        return (self.mean.reshape(2, -1)[:, near] / self.mass.flatten()[near]).T


class Posterior:
    """``E[x1 | x_t]`` and ``p_t`` of the straight path from ``start`` to ``end``, per time.

    Args:
        end: the end, a piecewise-constant density on cells (a picture, word or toy raster).
        start: N(0, I) or a (blurred) picture density.
        grid: nodes along each axis of a time's grid (default: 1.5 x the end's longer side,
            128 to 384).
    """

    def __init__(
        self, end: ImageDensity, start: Distribution | None = None, grid: int = 0
    ) -> None:
        self.end = end
        self.start = start if start is not None else Noise()
        if not isinstance(self.start, (Noise, ImageDensity)):
            raise FlowgifError("the exact flow starts from N(0, I) or a picture")
        self.grid = (grid | 1) if grid else grid_size(max(end.grid))
        self.device = end.device
        self.centres, self.masses = _cells(end)
        if isinstance(self.start, ImageDensity):
            self.start_centres, self.start_masses = _cells(self.start)
            cell = self.start.cell
            self.start_sd = math.sqrt(self.start.blur**2 + (cell[0] ** 2 + cell[1] ** 2) / 24)
            self.reach = torch.tensor(self.start.half, dtype=torch.float64) + 4 * self.start_sd
        else:
            self.reach = torch.full((2,), NOISE_REACH, dtype=torch.float64)
        self._cache: dict[float, _Slice] = {}

    def at(self, t: float) -> _Slice:
        """The posterior at time ``t`` in [0, 1) (cached: the solver's times repeat)."""
        key = round(float(t), 12)
        if key not in self._cache:
            if len(self._cache) > 4 * STEPS:
                self._cache.clear()
            self._cache[key] = self._compute(key)
        return self._cache[key]

    def _compute(self, t: float) -> _Slice:
        g, s = self.grid, 1.0 - t
        half = torch.tensor(self.end.half, dtype=torch.float64)
        extent = t * half + s * self.reach + 2 * torch.tensor(self.end.cell, dtype=torch.float64)
        lo, step = -extent, 2 * extent / (g - 1)
        # The end's cells, placed at t c, carry their mass and their mass times c.
        at = t * self.centres
        mass = _splat(at, self.masses, lo, step, g)
        moments = [self.masses * self.centres[:, k] for k in (0, 1)]
        mean = torch.stack([_splat(at, m, lo, step, g) for m in moments])
        if isinstance(self.start, ImageDensity):  # the start picture, placed at (1 - t) c'
            kernel_lo = -(g - 1) / 2 * step
            start = _splat(s * self.start_centres, self.start_masses, kernel_lo, step, g)
            mass = _convolve(mass, start).clamp_min(0)  # the FFT's rounding, not a mass
            mean = torch.stack([_convolve(m, start) for m in mean])  # moments may be negative
            sd = s * self.start_sd
        else:
            sd = s
        ay, ax = blur_matrix(g, float(step[1]), sd), blur_matrix(g, float(step[0]), sd)
        mass = ay @ mass @ ax.T
        mean = torch.stack([ay @ m @ ax.T for m in mean])
        dtype = torch.float32
        return _Slice(
            t,
            lo.to(self.device, dtype),
            step.to(self.device, dtype),
            mass.to(self.device, dtype),
            mean.to(self.device, dtype),
        )

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x)`` for points ``x`` ``(N, 2)`` at times ``t`` (a number, or ``(N,)`` /
        ``(N, 1)``; each distinct time its own grid: for a batch of many times, a
        :class:`Table`)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
        if t.numel() == 1:
            e, _ = self.at(float(t)).at(x)
            return (e - x) / (1 - t)
        out = torch.empty_like(x)
        for value in torch.unique(t):
            rows = t == value
            e, _ = self.at(float(value)).at(x[rows])
            out[rows] = (e - x[rows]) / (1 - value)
        return out


class Table:
    """The posterior on a fixed table of times, stacked for one vectorised look-up per batch:
    ``v*(t, x)`` for any times, the posterior mean interpolated linearly in ``t`` between
    the table's two nearest times (flow matching's exact target, and ``field_error``).

    Args:
        posterior: the ends.
        times: increasing times in [0, 1) (default: the solver's, even in ``log(1 - t)``).
    """

    def __init__(self, posterior: Posterior, times: np.ndarray | None = None) -> None:
        if times is None:
            times = solve_times(0.1 * min(posterior.end.cell))
        slices = [posterior.at(float(t)) for t in times]
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.lo = torch.stack([s.lo for s in slices])  # (T, 2)
        self.step = torch.stack([s.step for s in slices])
        self.mass = torch.stack([s.mass for s in slices])  # (T, G, G)
        self.mean = torch.stack([s.mean for s in slices])  # (T, 2, G, G)

    def to(self, device: torch.device | str) -> Table:
        for name in ("times", "lo", "step", "mass", "mean"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _mean(self, k: Tensor, x: Tensor) -> Tensor:
        """The posterior mean at slice ``k`` of each point ``(N, 2)``."""
        corners = _corners(x, self.lo[k], self.step[k], self.mass.shape[1:])
        mass = sum(w * self.mass[k, r, c] for (r, c), w in corners)
        mean = sum(w[:, None] * self.mean[k, :, r, c] for (r, c), w in corners)
        return mean / mass.clamp_min(torch.finfo(x.dtype).tiny)[:, None]

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x)`` for points ``x`` ``(N, 2)`` at times ``t`` ``(N,)`` or ``(N, 1)``
        (times past the table's last take its last)."""
        t = t.reshape(-1).to(torch.float64)
        last = len(self.times) - 1
        k = (torch.searchsorted(self.times, t, right=True) - 1).clamp(0, last - 1)
        w = ((t - self.times[k]) / (self.times[k + 1] - self.times[k])).clamp(0, 1)
        w = w.to(x.dtype)[:, None]
        e = (1 - w) * self._mean(k, x) + w * self._mean(k + 1, x)
        s = (1 - t.clamp_max(float(self.times[-1]))).to(x.dtype)[:, None]
        return (e - x) / s


def _corners(
    x: Tensor, lo: Tensor, step: Tensor, shape: tuple[int, ...]
) -> list[tuple[tuple[Tensor, Tensor], Tensor]]:
    """Bilinear interpolation on a grid of ``shape`` ``(Gy, Gx)`` with node ``(0, 0)`` at ``lo``
    and ``step`` apart (one grid, or one per point): the four corner nodes ``(row, col)`` of
    each point and their weights; points off the grid take its edge."""
    gy, gx = shape
    top = torch.tensor([gx - 1, gy - 1], device=x.device, dtype=x.dtype)
    u = torch.minimum(((x - lo) / step).clamp_min(0), top)
    i0 = torch.minimum(u.floor(), top - 1).long()  # the last node is a cell's far corner
    f = u - i0
    ix, iy = i0[:, 0], i0[:, 1]
    fx, fy = f[:, 0], f[:, 1]
    return [
        ((iy, ix), (1 - fx) * (1 - fy)),
        ((iy, ix + 1), fx * (1 - fy)),
        ((iy + 1, ix), (1 - fx) * fy),
        ((iy + 1, ix + 1), fx * fy),
    ]


def _cells(d: ImageDensity) -> tuple[Tensor, Tensor]:
    """The centres ``(K, 2)`` and masses ``(K,)`` of a density's cells that hold mass."""
    probs = torch.as_tensor(d.probs_np, dtype=torch.float64)
    rows, cols = torch.nonzero(probs > 0, as_tuple=True)
    x = -d.half[0] + (cols.double() + 0.5) * d.cell[0]
    y = d.half[1] - (rows.double() + 0.5) * d.cell[1]
    return torch.stack([x, y], 1), probs[rows, cols]


def _splat(x: Tensor, mass: Tensor, lo: Tensor, step: Tensor, g: int) -> Tensor:
    """Masses at points ``x`` ``(K, 2)`` shared bilinearly among a ``(g, g)`` grid's nodes."""
    u = ((x - lo) / step).clamp(0, g - 1)
    i0 = u.floor().clamp_max(g - 2).long()
    f = u - i0
    out = torch.zeros(g * g, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
            out.index_add_(0, (i0[:, 1] + dy) * g + i0[:, 0] + dx, w * mass)
    return out.reshape(g, g)


def blur_matrix(g: int, step: float, sd: float) -> Tensor:
    """``(g, g)`` matrix of a 1-D Gaussian blur of ``sd`` on nodes ``step`` apart: each
    column holds the mass N(0, sd^2) gives each node's cell, so it stays exact (a plain
    shift) when ``sd`` is far below ``step``."""
    j = torch.arange(-(g - 1), g, dtype=torch.float64)
    if sd <= 1e-12:
        kernel = (j == 0).double()
    else:
        z = step / (sd * math.sqrt(2))
        kernel = 0.5 * (torch.erf((j + 0.5) * z) - torch.erf((j - 0.5) * z))
    idx = torch.arange(g)
    return kernel[(idx[:, None] - idx[None, :]) + g - 1]


def _convolve(a: Tensor, kernel: Tensor) -> Tensor:
    """``a`` convolved with a centred ``kernel`` of the same size (zero outside), by FFT."""
    g = a.shape[0]
    n = 2 * g
    f = torch.fft.rfft2(a, s=(n, n)) * torch.fft.rfft2(kernel, s=(n, n))
    full = torch.fft.irfft2(f, s=(n, n))
    off = (g - 1) // 2
    return full[off : off + g, off : off + g]


NOISE_REACH = 5.5  # the start's support, in standard deviations of N(0, I)
