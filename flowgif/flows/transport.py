"""The optimal-transport flow: every bit of the start moves on a straight line to where the
quadratic-cost optimal transport sends it, ``x_t = (1 - t) x + t T(x)`` (McCann's displacement
interpolation): no two paths cross, the least motion there is, a crisp shape at every time.

The plan between the start and the end on grids (:mod:`flowgif.flows.sinkhorn`; N(0, I) is
laid on a grid of its own) is solved once, in seconds, at most :data:`GRID` cells along the
longer side. A particle's place in its start cell, made uniform by the start's own masses,
reads its end cell from its cell's row of the plan (:meth:`~flowgif.flows.sinkhorn.Plan.map`),
then a cell of the end's working grid within that one by the end's own masses, and what is
left of the place is where it lands in that cell. The same point always lands in the same
place, neighbours stay neighbours, and the end is reached with its own piecewise-constant law
(within the plan's marginal error), filled without tears. The plan's entropic blur (one
cell) moves each particle about a cell from the exact map.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import ndtr
from torch import Tensor

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.flows.computed import ComputedField, ComputedFlow
from flowgif.flows.ode import SolveStats
from flowgif.flows.sinkhorn import Grid, Plan, solve
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity

__all__ = ["GRID", "OTField", "OTFlow", "build", "plan_between", "pooling"]

GRID = 128  # the plan's cells along the longer side, at most (bench/OT.md)
NOISE_REACH = 4.5  # N(0, I)'s grid: +-4.5 (beyond: the edge cells), 2 of the end's cells a cell


class OTField(ComputedField):
    """The optimal-transport flow's module: no weights; the plan is computed from the run's
    ends (the checkpoint keeps both)."""

    family = "ot"
    name = "optimal-transport flow"


def build(config: Config) -> OTField:
    """The (empty) module of ``train.family = "ot"``."""
    return OTField()


def grid_of(d: ImageDensity) -> Grid:
    """A picture density's cells as a :class:`Grid` (row 0 at the top)."""
    h, w = d.grid
    xs = -d.half[0] + (np.arange(w) + 0.5) * d.cell[0]
    ys = d.half[1] - (np.arange(h) + 0.5) * d.cell[1]
    return Grid(xs, ys, d.probs_np, (d.cell[0], -d.cell[1]))


def blurred_grid(d: ImageDensity) -> Grid:
    """A blurred picture (a trained morph's start) on its grid widened by three blurs each
    side, each cell's mass the picture's blurred by a Gaussian of that width (the blur's
    wide floor, a millionth of the mass, left out)."""
    from scipy.ndimage import gaussian_filter

    h, w = d.grid
    pad = math.ceil(3 * d.blur / min(d.cell))
    mass = np.pad(d.probs_np, pad)
    mass = gaussian_filter(mass, (d.blur / d.cell[1], d.blur / d.cell[0]), mode="constant")
    xs = -d.half[0] + (np.arange(-pad, w + pad) + 0.5) * d.cell[0]
    ys = d.half[1] - (np.arange(-pad, h + pad) + 0.5) * d.cell[1]
    return Grid(xs, ys, np.maximum(mass, 0) / np.maximum(mass, 0).sum(), (d.cell[0], -d.cell[1]))


def noise_grid(cell: float) -> Grid:
    """N(0, I) on a square grid of about ``cell``, over +-:data:`NOISE_REACH` (each cell its
    exact mass, the tails beyond in the edge cells)."""
    n = max(16, math.ceil(2 * NOISE_REACH / cell))
    edges = np.linspace(-NOISE_REACH, NOISE_REACH, n + 1)
    cdf = ndtr(edges)
    cdf[0], cdf[-1] = 0.0, 1.0
    p = np.diff(cdf)
    xs = 0.5 * (edges[1:] + edges[:-1])
    step = float(edges[1] - edges[0])
    return Grid(xs, xs[::-1].copy(), np.outer(p[::-1], p), (step, -step))


def start_grid(start: Distribution, end_cell: float) -> tuple[Grid, int]:
    """The start's grid before pooling, and the factor the plan pools it by: a picture's
    working grid (a blurred one's widened, :func:`blurred_grid`), pooled to about
    :data:`GRID` cells a side; N(0, I)'s own grid of two end cells a cell, not pooled."""
    if isinstance(start, ImageDensity):
        fine = blurred_grid(start) if start.blur > 0 else grid_of(start)
        return fine, max(1, math.ceil(max(start.grid) / GRID))  # the blur's margin: more
    if isinstance(start, Noise):
        return noise_grid(2 * end_cell), 1
    raise FlowgifError("the optimal-transport flow starts from N(0, I) or a picture")


def pooling(end: ImageDensity) -> int:
    """The factor the end's working grid is pooled by for the plan."""
    return max(1, math.ceil(max(end.grid) / GRID))


_PLANS: dict[str, Plan] = {}  # the last few plans, by the content of their grids


def plan_between(start: Distribution, end: ImageDensity) -> Plan:
    """The plan from ``start`` (N(0, I) or a picture) to ``end`` (the last eight plans are
    kept: a morph computes each leg's for its samples and again to play it)."""
    b = grid_of(end).pooled(pooling(end))
    fine, ka = start_grid(start, b.cell)
    a = fine.pooled(ka)
    key = hashlib.sha256(
        b"".join(
            np.ascontiguousarray(v).tobytes() for v in (a.xs, a.ys, a.mass, b.xs, b.ys, b.mass)
        )
    ).hexdigest()
    if key not in _PLANS:
        if len(_PLANS) >= 8:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = solve(a, b)
    return _PLANS[key]


class OTFlow(ComputedFlow):
    """The optimal-transport flow from ``start`` to ``end`` behind the :class:`Flow`
    interface.

    Args:
        end: the end density.
        start: N(0, I) or a picture density (default N(0, I)).
        sharp: a picture start is the sharp picture (its blur only keeps a trained flow's
            likelihood finite); False keeps the blur (a trained morph learning the map from
            the start it draws its points from).
    """

    name = "optimal-transport flow"

    def __init__(
        self, end: ImageDensity, start: Distribution | None = None, sharp: bool = True
    ) -> None:
        self.end = end
        start = start if start is not None else Noise()
        if sharp and isinstance(start, ImageDensity):
            start = start.sharp()
        self.start = start
        self.module = OTField()
        self.dim = 2
        self.k = pooling(end)
        self._fine, self._ka = start_grid(self.start, grid_of(end).pooled(self.k).cell)
        self._start_blocks = _blocks(self._fine.mass, self._ka)
        self._blocks = _blocks(end.probs_np, self.k)
        self._coarse_width = -(-end.grid[1] // self.k)

    @functools.cached_property
    def plan(self) -> Plan:
        """The plan, solved on first use (a run's checkpoint is written without it)."""
        return plan_between(self.start, self.end)

    def ends(self, x0: Tensor) -> Tensor:
        """Where each start point ``(N, 2)`` lands (a map: the same point, the same end):
        its end cell from the plan (:meth:`~flowgif.flows.sinkhorn.Plan.map`), then a cell of
        the end's working grid within it by the end's masses (the same rearrangement: a
        column by the x place, a row within it by the y place), and what is left of the
        place as its place in that cell."""
        coarse, place = self.plan.map(x0[:, :2], self._place(x0[:, :2]))
        k, (h, w) = self.k, self.end.grid
        blocks = self._blocks[coarse]  # (N, k, k) masses, rows then columns
        cols = blocks.sum(1)  # (N, k)
        col, rx = _pick(cols, place[:, 0])
        rows = blocks[torch.arange(len(col)), :, col]  # (N, k)
        row, ry = _pick(rows, place[:, 1])
        row = ((coarse // self._coarse_width) * k + row).clamp_max(h - 1)
        col = ((coarse % self._coarse_width) * k + col).clamp_max(w - 1)
        d = self.end
        x = -d.half[0] + (col + 0.001 + 0.998 * rx) * d.cell[0]
        y = d.half[1] - (row + 0.001 + 0.998 * ry) * d.cell[1]
        return torch.stack([x, y], 1).to(x0.device, x0.dtype)

    def _place(self, x0: Tensor) -> Tensor:
        """Each start point's place in its pooled start cell ``(N, 2)``, made uniform in
        [0, 1)^2 by the start's own law (its Rosenblatt transform: x by the cell's masses per
        column, y by the masses down the point's column; N(0, I) by its normal CDFs), so
        that the plan's map sends each cell's points with the plan's law exactly."""
        g, k = self._fine, self._ka
        x = x0.detach().to("cpu", torch.float64)
        xs, ys = torch.as_tensor(g.xs), torch.as_tensor(g.ys)
        sx, sy = g.step  # sy < 0: rows run down
        u = (x[:, 0] - xs[0]) / sx + 0.5
        v = (x[:, 1] - ys[0]) / sy + 0.5
        h, w = g.mass.shape
        if isinstance(self.start, Noise):  # one cell a cell: the normal CDFs within it
            c = u.floor().clamp(0, w - 1)
            r = v.floor().clamp(0, h - 1)
            lo_x, lo_y = xs[0] + (c - 0.5) * sx, ys[0] + (r - 0.5) * sy
            fx = _cdf_place(ndtr, x[:, 0], lo_x, lo_x + sx)
            fy = _cdf_place(ndtr, -x[:, 1], -lo_y, -(lo_y + sy))
            return torch.stack([fx, fy], 1)
        fc = u.floor().long().clamp(0, w - 1)
        fr = v.floor().long().clamp(0, h - 1)
        fx, fy = (u - fc).clamp(0, 1), (v - fr).clamp(0, 1)
        ww = -(-w // k)
        blocks = self._start_blocks[(fr // k) * ww + fc // k]  # (N, k, k)
        j, i = fc % k, fr % k
        n = torch.arange(len(x))
        cols = blocks.sum(1)  # (N, k)
        total = cols.sum(1).clamp_min(1e-300)
        before = torch.cumsum(cols, 1) - cols
        px = (before[n, j] + fx * cols[n, j]) / total
        col = blocks[n, :, j]  # (N, k) down the column
        above = torch.cumsum(col, 1) - col
        py = (above[n, i] + fy * col[n, i]) / cols[n, j].clamp_min(1e-300)
        empty = cols[n, j] <= 0  # a point off the start's mass: where it is
        px = torch.where(empty, (j + fx) / k, px)
        py = torch.where(empty, (i + fy) / k, py)
        return torch.stack([px, py], 1).clamp(0, 1 - 1e-9)

    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor:
        """Points ``(T, N, 2)`` at ``times`` on the straight lines from ``z`` to their ends."""
        x0 = z[:, :2]
        x1 = self.ends(x0)
        t = times.to(x0.device, x0.dtype).clamp(0, 1)[:, None, None]
        return (1 - t) * x0[None] + t * x1[None]

    def push(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = self.ends(z[:, :2])
        return x, self.log_prob(x)

    def landing(self) -> np.ndarray:
        """The mass the flow puts in each cell of the end's working grid ``(h * w,)``: the
        plan's mass in each of its cells, shared within by the end's own masses."""
        k, (h, w) = self.k, self.end.grid
        coarse = self.plan.end_mass()
        b = self.plan.end.mass
        ratio = np.where(b > 0, coarse / np.where(b > 0, b, 1.0), 0.0)
        fine = np.kron(ratio, np.ones((k, k)))[:h, :w] * self.end.probs_np
        return (fine / fine.sum()).ravel()

    def _cloud(self) -> tuple[Tensor, Tensor]:
        """Start points and their ends, 100,000 of them (the field and ``p_t`` are read
        from them)."""
        if not hasattr(self, "_pairs"):
            gen = torch.Generator().manual_seed(0)
            x0 = self.start.sample(100_000, gen).double()
            self._pairs = (x0, self.ends(x0))
        return self._pairs

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """The velocity at ``(t, x)``: ``T(x0) - x0`` of the particles nearest ``x`` at time
        ``t`` (the eight nearest of 100,000, averaged)."""
        from scipy.spatial import cKDTree

        x0, x1 = self._cloud()
        s = float(torch.as_tensor(t).reshape(-1)[0])
        at = ((1 - s) * x0 + s * x1).numpy()
        _, idx = cKDTree(at).query(x.detach().cpu().double().numpy(), k=8)
        v = (x1 - x0).numpy()[idx].mean(1)
        return torch.as_tensor(v, dtype=x.dtype, device=x.device)

    def paths_with_log_prob(
        self, z: Tensor, times: Tensor, stats: SolveStats | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paths ``(T, N, 2)`` and ``log p_t`` at each point ``(T, N)``: at ``t = 0`` the
        start's, at ``t = 1`` the landing law's, between them a histogram of 100,000
        particles on the end's grid (smoothed by one cell)."""
        from scipy.ndimage import gaussian_filter

        paths = self.paths(z, times, stats)
        logp = torch.empty(paths.shape[:2], dtype=paths.dtype, device=paths.device)
        x0, x1 = self._cloud()
        d = self.end
        for i, t in enumerate(times.tolist()):
            if t <= 0:
                logp[i] = self.start.log_prob(paths[i])
            elif t >= 1:
                logp[i] = self.log_prob(paths[i])
            else:
                at = ((1 - t) * x0 + t * x1).float()
                h, w = d.grid
                idx = torch.as_tensor(d.cell_index(at))
                inside = (at[:, 0].abs() <= d.half[0]) & (at[:, 1].abs() <= d.half[1])
                hist = np.bincount(idx[inside].numpy(), minlength=h * w).reshape(h, w)
                dens = gaussian_filter(hist / len(at), 1.0) / d.cell_area
                q = torch.as_tensor(np.log(np.maximum(dens, 1e-30)).ravel(), dtype=paths.dtype)
                logp[i] = q[d.cell_index(paths[i])].to(paths.device)
        return paths, logp


def _pick(masses: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """For rows of masses ``(N, k)`` and places ``u`` ``(N,)`` in [0, 1): the index whose
    share of its row's total holds ``u`` (only indices with mass), and ``u``'s place in it."""
    total = masses.sum(1, keepdim=True).clamp_min(1e-300)
    cum = torch.cumsum(masses / total, 1)
    idx = (u[:, None] >= cum).sum(1).clamp_max(masses.shape[1] - 1)
    ok = masses[torch.arange(len(idx)), idx] > 0
    if not ok.all():  # rounding at a boundary: the last index with mass
        last = masses.shape[1] - 1 - (masses.flip(1) > 0).long().argmax(1)
        idx = torch.where(ok, idx, last)
    lo = torch.where(idx > 0, cum.gather(1, (idx - 1).clamp_min(0)[:, None])[:, 0], 0.0)
    share = (masses[torch.arange(len(idx)), idx] / total[:, 0]).clamp_min(1e-300)
    return idx, ((u - lo) / share).clamp(0, 1 - 1e-9)


def _blocks(mass: np.ndarray, k: int) -> Tensor:
    """``(cells, k, k)``: the masses of each ``k x k`` block of a grid (padded at the far
    edges), blocks in row-major order, each block's rows then columns."""
    h, w = mass.shape
    hh, ww = -(-h // k), -(-w // k)
    fine = np.zeros((hh * k, ww * k))
    fine[:h, :w] = mass
    blocks = fine.reshape(hh, k, ww, k).transpose(0, 2, 1, 3).reshape(hh * ww, k, k)
    return torch.as_tensor(blocks, dtype=torch.float64)


def _cdf_place(cdf: Callable, x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``x``'s place between ``lo`` and ``hi`` by the law of ``cdf``, in [0, 1]."""
    a, b = cdf(lo.numpy()), cdf(hi.numpy())
    c = cdf(x.numpy())
    width = np.maximum(b - a, 1e-300)
    out = np.where(b - a > 1e-12, (c - a) / width, ((x - lo) / (hi - lo)).numpy())
    return torch.as_tensor(np.clip(out, 0.0, 1.0 - 1e-9))
