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
from flowgif.flows.kernels import blur_matrix, box_blur, cells, convolve, corners, edges, splat
from flowgif.flows.window import Window
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


LATE_NODES = 1.5  # from 1 - t below this many grid nodes on, each point's window (Window)
NOISE_FORM = 0.5  # from this time on, a slice keeps the start's moment (module docstring)


@dataclass
class _Slice:
    """The posterior at one time on a grid: node ``(i, j)`` sits at ``lo + (j, i) * step``.

    ``mass`` is ``p_t`` integrated over each node's cell (it sums to 1). ``moment`` is, times
    ``mass``, the posterior mean of the end ``E[x1 | x_t]`` before :data:`NOISE_FORM`, and of
    the start's part ``E[x_t - t x1 | x_t] = (1 - t) E[x0 | x_t]`` from it on, ``(2, G, G)``:
    each the form whose velocity divides by the larger of ``1 - t`` and ``t``."""

    t: float
    lo: Tensor  # (2,) x and y of node (0, 0)
    step: Tensor  # (2,)
    mass: Tensor  # (Gy, Gx)
    moment: Tensor  # (2, Gy, Gx)

    @property
    def noise(self) -> bool:
        return self.t >= NOISE_FORM

    def at(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior mean ``E[x1 | x_t = x]`` ``(N, 2)`` and ``p_t(x)`` ``(N,)``, by
        bilinear interpolation (points off the grid take its edge)."""
        ratio, density = self._ratio(x)
        return ((x - ratio) / self.t if self.noise else ratio), density

    def velocity(self, x: Tensor) -> Tensor:
        """``v*(t, x)`` at this slice's time for points ``x`` ``(N, 2)``: ``(E[x1] - x) /
        (1 - t)`` before :data:`NOISE_FORM`, ``(x - E[x0]) / t`` from it on."""
        ratio, _ = self._ratio(x)
        if self.noise:
            return (x - ratio / (1 - self.t)) / self.t
        return (ratio - x) / (1 - self.t)

    def _ratio(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The moment over the mass at points ``x`` ``(N, 2)``, and ``p_t`` there."""
        four = corners(x, self.lo, self.step, self.mass.shape)
        mass = sum(w * self.mass[r, c] for (r, c), w in four)
        moment = sum(w * self.moment[:, r, c] for (r, c), w in four)
        tiny = torch.finfo(self.mass.dtype).tiny
        ratio = (moment / mass.clamp_min(tiny)).T
        far = mass <= tiny  # beyond the grid's reach: the nearest node's
        if far.any():
            ratio[far] = self._nearest_moment(x[far])
        return ratio, mass / (self.step[0] * self.step[1])

    def _nearest_moment(self, x: Tensor) -> Tensor:
        """The moment over the mass at the grid node with mass nearest to each point's node
        (a point where ``p_t`` underflows: far out in the start's tail), as the moment at
        the point of that node's posterior mean."""
        if not hasattr(self, "_nearest"):
            from scipy.ndimage import distance_transform_edt

            empty = (self.mass <= torch.finfo(self.mass.dtype).tiny).cpu().numpy()
            _, (rows, cols) = distance_transform_edt(empty, return_indices=True)
            self._nearest = torch.as_tensor(rows * empty.shape[1] + cols, device=x.device)
        gy, gx = self.mass.shape
        u = ((x - self.lo) / self.step).round().long()
        node = u[:, 1].clamp(0, gy - 1) * gx + u[:, 0].clamp(0, gx - 1)
        near = self._nearest.flatten()[node]
        ratio = (self.moment.reshape(2, -1)[:, near] / self.mass.flatten()[near]).T
        if self.noise:  # the node's x_t - t x1 is the node's place less t E[x1] there
            gx = self.mass.shape[1]
            place = self.lo + torch.stack([near % gx, near // gx], 1).to(x.dtype) * self.step
            ratio = x - place + ratio
        return ratio


@dataclass
class _Late:
    """The posterior at one late time, computed at each point (:class:`Window`): the same
    ``at`` and ``velocity`` as a grid's :class:`_Slice`."""

    t: float
    window: Window

    def at(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, e1, density = self.window(torch.tensor(self.t, dtype=torch.float64), x)
        return e1, density

    def velocity(self, x: Tensor) -> Tensor:
        return self.window.velocity(torch.tensor(self.t, dtype=torch.float64), x)


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
        self.probs = torch.as_tensor(end.probs_np, dtype=torch.float64)
        self.edges = edges(end)
        if isinstance(self.start, ImageDensity):
            self.start_centres, self.start_masses = cells(self.start)
            cell = self.start.cell
            self.start_sd = math.sqrt(self.start.blur**2 + (cell[0] ** 2 + cell[1] ** 2) / 24)
            self.reach = torch.tensor(self.start.half, dtype=torch.float64) + 4 * self.start_sd
        else:
            self.reach = torch.full((2,), NOISE_REACH, dtype=torch.float64)
        self.late, self.window = 1.0, None
        if isinstance(self.start, Noise):  # late, each point's window of cells, exactly
            late_s = LATE_NODES * max(
                2 * (h + 2 * c) / (self.grid - 1) for h, c in zip(end.half, end.cell, strict=True)
            )
            self.late = 1.0 - late_s
            self.window = Window(end, late_s / self.late)
        self._cache: dict[float, _Slice | _Late] = {}

    def at(self, t: float) -> _Slice | _Late:
        """The posterior at time ``t`` in [0, 1) (cached: the solver's times repeat): on a
        grid, or from :attr:`late` on, at each point from its window of cells."""
        key = round(float(t), 12)
        if key >= self.late and self.window is not None:
            return _Late(key, self.window)
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
        picture = isinstance(self.start, ImageDensity)
        sd = s * self.start_sd if picture else s
        noise = t >= NOISE_FORM
        # Per axis, what each end cell (uniform on its box, placed at t times it, blurred by
        # sd) puts in each node's cell, and the moment of x_t - t x1 there.
        (x0, x1), (y0, y1) = (
            box_blur(lo[k], step[k], g, t * self.edges[k][0], t * self.edges[k][1], sd, noise)
            for k in (0, 1)
        )
        p = self.probs
        across = y0 @ p  # (G, w): the rows blurred
        mass = across @ x0.T
        if noise:
            moment = torch.stack([across @ x1.T, y1 @ (p @ x0.T)])
        else:  # the end's mean: each cell's centre (its box's spread is below the blur's)
            cx, cy = (self.edges[k].mean(0) for k in (0, 1))
            moment = torch.stack([across @ (x0 * cx).T, (y0 * cy) @ (p @ x0.T)])
        if picture:  # the start picture, placed at (1 - t) c'
            kernel_lo = -(g - 1) / 2 * step
            at = s * self.start_centres
            start = splat(at, self.start_masses, kernel_lo, step, g)
            spread = mass
            mass = convolve(mass, start).clamp_min(0)  # the FFT's rounding, not a mass
            moment = torch.stack([convolve(m, start) for m in moment])  # may be negative
            if noise:  # x_t - t x1 also holds the start cell's own place, s c'
                for k in (0, 1):
                    placed = splat(at, self.start_masses * at[:, k], kernel_lo, step, g)
                    moment[k] += convolve(spread, placed)
        dtype = torch.float32
        return _Slice(
            t,
            lo.to(self.device, dtype),
            step.to(self.device, dtype),
            mass.to(self.device, dtype),
            moment.to(self.device, dtype),
        )

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x)`` for points ``x`` ``(N, 2)`` at times ``t`` (a number, or ``(N,)`` /
        ``(N, 1)``; each distinct time its own grid: for a batch of many times, a
        :class:`Table`)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
        if t.numel() == 1:
            return self.at(float(t)).velocity(x)
        out = torch.empty_like(x)
        for value in torch.unique(t):
            rows = t == value
            out[rows] = self.at(float(value)).velocity(x[rows])
        return out


class Table:
    """The posterior on a fixed table of times, stacked for one vectorised look-up per batch:
    ``v*(t, x)`` for any times, interpolated linearly in ``t`` between the velocities the
    table's two nearest times give at ``(t, x)`` (flow matching's exact target, and
    ``field_error``); from the posterior's :attr:`~Posterior.late` on, each point's window
    at its own time, exact up to t = 1.

    Args:
        posterior: the ends.
        times: increasing times in [0, 1) (default: the solver's, even in ``log(1 - t)``).
    """

    def __init__(self, posterior: Posterior, times: np.ndarray | None = None) -> None:
        if times is None:
            times = solve_times(0.1 * min(posterior.end.cell))
        self.window = posterior.window
        self.late = posterior.late
        grid = [float(t) for t in times if t < self.late]
        slices = [posterior.at(t) for t in grid]
        self.times = torch.as_tensor(grid, dtype=torch.float64)
        self.lo = torch.stack([s.lo for s in slices])  # (T, 2)
        self.step = torch.stack([s.step for s in slices])
        mass = torch.stack([s.mass for s in slices])  # (T, G, G)
        moment = torch.stack([s.moment for s in slices])  # (T, 2, G, G)
        self.shape = mass.shape
        # one row per node, (mass, moment x, moment y): one gather per corner
        self.nodes = torch.cat([mass[:, None], moment], 1).permute(0, 2, 3, 1).reshape(-1, 3)

    def to(self, device: torch.device | str) -> Table:
        for name in ("times", "lo", "step", "nodes"):
            setattr(self, name, getattr(self, name).to(device))
        if self.window is not None:
            self.window.to(device)
        return self

    def _velocity(self, k: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """What grid slice ``k`` of each point ``(N, 2)`` says its velocity is at ``t``."""
        _, gy, gx = self.shape
        four = corners(x, self.lo[k], self.step[k], (gy, gx))
        both = sum(w[:, None] * self.nodes[(k * gy + r) * gx + c] for (r, c), w in four)
        ratio = both[:, 1:] / both[:, :1].clamp_min(torch.finfo(x.dtype).tiny)
        tk = self.times[k].to(x.dtype)[:, None]
        t = t.to(x.dtype)[:, None]
        s = (1 - t).clamp_min(float(1 - self.times[-1]))
        noise = tk >= NOISE_FORM
        return torch.where(
            noise, (x - ratio / (1 - tk)) / t.clamp_min(NOISE_FORM), (ratio - x) / s
        )

    def between(self, k: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """Between grid slices ``k`` and ``k + 1``, linearly in ``t``."""
        w = ((t - self.times[k]) / (self.times[k + 1] - self.times[k])).clamp(0, 1)
        w = w.to(x.dtype)[:, None]
        return (1 - w) * self._velocity(k, t, x) + w * self._velocity(k + 1, t, x)

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x)`` for points ``x`` ``(N, 2)`` at times ``t`` ``(N,)`` or ``(N, 1)``
        (without a window, times past the table's last take its last slice)."""
        t = t.reshape(-1).to(torch.float64)
        last = len(self.times) - 1
        k = (torch.searchsorted(self.times, t, right=True) - 1).clamp(0, last - 1)
        out = self.between(k, t, x)  # past the last grid slice: that slice
        if self.window is None:
            return out
        late = torch.nonzero(t >= self.times[-1]).squeeze(1)
        if len(late):  # from the last grid slice to the window's first time, linearly
            tl, xl = t[late], x[late]
            w = ((tl - self.times[-1]) / (self.late - self.times[-1])).clamp(0, 1)
            w = w.to(x.dtype)[:, None]
            out[late] = (1 - w) * out[late] + w * self.window.velocity(tl, xl)
        return out


NOISE_REACH = 5.5  # the start's support, in standard deviations of N(0, I)
