"""Optimal transport between two densities on grids: entropic, multiscale, sparse, log domain.

The quadratic-cost plan between masses ``a`` on the cells ``x_i`` of one grid and ``b`` on the
cells ``y_j`` of another, regularised by entropy at ``eps``, is

    pi_ij = a_i b_j exp((f_i + g_j - |x_i - y_j|^2) / eps),

its dual potentials ``f`` and ``g`` found by Sinkhorn's updates in the log domain,
``f_i = -eps log sum_j b_j exp((g_j - |x_i - y_j|^2) / eps)`` and the same for ``g`` (Peyré
& Cuturi, "Computational Optimal Transport", 4.2), over-relaxed (Thibault et al. 2021).
``eps`` starts at the squared diameter of the two supports and shrinks to the squared cell
(epsilon scaling), on grids that refine as it shrinks, and each grid keeps only the pairs of
cells whose plan is not negligible, the children of the coarser grid's (Schmitzer,
"Stabilized sparse scaling algorithms for entropy regularized transport problems", 2019; the
multiscale annealing of GeomLoss, Feydy et al. 2019, on grids). The work per iteration is
then proportional to the plan's support, a few dozen pairs per cell, not to the product of the
grids.

:class:`Plan` maps start points to end cells by the plan's conditional ``p(j | i) = pi_ij /
a_i`` (each point's place in its cell reads its end from its cell's row): points spread over
the start as ``a`` reach the end as ``b``, up to the end marginal's error ``Stats.error`` (L1)
at which the iterations stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from flowgif.flows.grid import Grid

__all__ = ["Grid", "Plan", "Stats", "solve"]

SCALING = 0.6  # eps shrinks by this factor per annealing step
ANNEAL_OMEGA = 1.5  # ... while eps is annealed (plain again if that diverges)
OMEGA = 1.9  # over-relaxation of the updates (1 = plain Sinkhorn; bench/OT.md)
RISE = 2.0  # an error this many times the best so far: back to the best, omega lowered
PRUNE = 12.0  # a pair is kept while its plan is within e^-PRUNE of its row's or column's top
COARSEST = 16  # cells along the longer side of the first grid (all its pairs kept)
LEVEL_TOL = 1e-2  # the same on the coarser grids
BLUR = 1.0  # the final eps: (BLUR x the larger cell)^2 (bench/OT.md)
TOL = 2e-3  # L1 error of the end marginal at which the last grid stops
MAX_ITER = 600  # iterations on the last grid, at most


@dataclass
class Stats:
    """What a solve did."""

    grids: list[tuple[int, int]] = field(default_factory=list)  # (h, w) of each side's grid
    iterations: list[int] = field(default_factory=list)  # per grid
    pairs: list[int] = field(default_factory=list)  # pairs kept at the end of each grid
    eps: float = math.nan
    error: float = math.nan  # L1 error of the end marginal


class _Cells:
    """The cells of a grid that hold mass: flat indices, centres, log-masses."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        h, w = grid.mass.shape
        self.shape = (h, w)
        flat = np.flatnonzero(grid.mass.ravel() > 0)
        self.flat = flat
        rows, cols = flat // w, flat % w
        self.pos = torch.as_tensor(np.stack([grid.xs[cols], grid.ys[rows]], 1))
        self.logm = torch.as_tensor(np.log(grid.mass.ravel()[flat]))
        self.mass = self.logm.exp()
        self.index = np.full(h * w, -1)
        self.index[flat] = np.arange(len(flat))

    def __len__(self) -> int:
        return len(self.flat)

    def children(self, fine: _Cells) -> Tensor:
        """``(len(self), 4)``: each cell's children in ``fine`` (a grid pooled by 2 into this
        one), ``-1`` where a child holds no mass (kept: a grid's are asked for twice)."""
        if getattr(self, "_kids", (None,))[0] is fine:
            return self._kids[1]
        _h, w = self.shape
        fh, fw = fine.shape
        r, c = self.flat // w, self.flat % w
        out = np.full((len(self.flat), 4), -1)
        for k, (dr, dc) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            fr, fc = 2 * r + dr, 2 * c + dc
            ok = (fr < fh) & (fc < fw)
            out[ok, k] = fine.index[fr[ok] * fw + fc[ok]]
        self._kids = (fine, torch.as_tensor(out))
        return self._kids[1]


def _lse(values: Tensor, index: Tensor, n: int) -> Tensor:
    """``log sum exp`` of ``values`` grouped by ``index`` into ``n`` groups (empty: -inf)."""
    top = torch.full((n,), -math.inf, dtype=values.dtype)
    top.scatter_reduce_(0, index, values, "amax", include_self=True)
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros(n, dtype=values.dtype).index_add_(0, index, (values - safe[index]).exp())
    return total.log() + safe


class _Problem:
    """One grid's pairs: the sparse cost and the updates."""

    def __init__(self, a: _Cells, b: _Cells, ia: Tensor, jb: Tensor) -> None:
        self.a, self.b, self.ia, self.jb = a, b, ia, jb
        self.cost = (a.pos[ia] - b.pos[jb]).pow(2).sum(1)

    def f_of(self, g: Tensor, eps: float) -> Tensor:
        v = self.b.logm[self.jb] + (g[self.jb] - self.cost) / eps
        return -eps * _lse(v, self.ia, len(self.a))

    def g_of(self, f: Tensor, eps: float) -> Tensor:
        v = self.a.logm[self.ia] + (f[self.ia] - self.cost) / eps
        return -eps * _lse(v, self.jb, len(self.b))

    def error(self, f: Tensor, g: Tensor, eps: float) -> float:
        """L1 error of the end marginal of the plan whose rows are exact (``f`` from ``g``)."""
        g2 = self.g_of(f, eps)
        return float((self.b.mass * ((g - g2) / eps).exp() - self.b.mass).abs().sum())

    def log_plan(self, f: Tensor, g: Tensor, eps: float) -> Tensor:
        return (
            self.a.logm[self.ia]
            + self.b.logm[self.jb]
            + (f[self.ia] + g[self.jb] - self.cost) / eps
        )

    def pruned(self, f: Tensor, g: Tensor, eps: float) -> _Problem:
        """The pairs whose plan is within ``e^-PRUNE`` of its row's or its column's top."""
        lp = self.log_plan(f, g, eps)
        row = torch.full((len(self.a),), -math.inf, dtype=lp.dtype)
        row.scatter_reduce_(0, self.ia, lp, "amax")
        col = torch.full((len(self.b),), -math.inf, dtype=lp.dtype)
        col.scatter_reduce_(0, self.jb, lp, "amax")
        keep = (lp >= row[self.ia] - PRUNE) | (lp >= col[self.jb] - PRUNE)
        return _Problem(self.a, self.b, self.ia[keep], self.jb[keep])

    def extended(self, f: Tensor, b: _Cells, eps: float) -> Tensor:
        """The end potential on the finer grid ``b``: the soft-min of ``f`` over each end
        cell's parent's pairs (the c-transform extends a potential to any point)."""
        kids = self.b.children(b)[self.jb]  # (P, 4)
        ia = self.ia[:, None].expand(-1, 4).reshape(-1)
        jb = kids.reshape(-1)
        ok = jb >= 0
        ia, jb = ia[ok], jb[ok]
        cost = (self.a.pos[ia] - b.pos[jb]).pow(2).sum(1)
        v = self.a.logm[ia] + (f[ia] - cost) / eps
        return -eps * _lse(v, jb, len(b))

    def refined(self, a: _Cells, b: _Cells) -> _Problem:
        """The children of every pair on the finer grids ``a`` and ``b``."""
        ca, cb = self.a.children(a)[self.ia], self.b.children(b)[self.jb]  # (P, 4)
        ia = ca[:, :, None].expand(-1, 4, 4).reshape(-1)
        jb = cb[:, None, :].expand(-1, 4, 4).reshape(-1)
        ok = (ia >= 0) & (jb >= 0)
        return _Problem(a, b, ia[ok], jb[ok])


def _iterate(
    p: _Problem, f: Tensor, g: Tensor, eps: float, n: int, omega: float
) -> tuple[Tensor, Tensor]:
    for _ in range(n):
        g = (1 - omega) * g + omega * p.g_of(f, eps)
        f = (1 - omega) * f + omega * p.f_of(g, eps)
    return f, g


def _anneal(
    p: _Problem, f: Tensor, g: Tensor, eps: float, floor: float, omega: float
) -> tuple[Tensor, Tensor, float, _Problem, int]:
    """Shrink ``eps`` to ``floor`` by :data:`SCALING`, two iterations at each, pruning the
    pairs as the plan sharpens."""
    count = 0
    while True:
        f, g = _iterate(p, f, g, eps, 2, omega)
        count += 2
        if eps <= floor:
            return f, g, eps, p, count
        eps = max(floor, eps * SCALING)
        if len(p.ia) > 8 * (len(p.a) + len(p.b)):
            p = p.pruned(f, g, eps)


def _converge(
    p: _Problem, f: Tensor, g: Tensor, eps: float, tol: float
) -> tuple[Tensor, Tensor, float, int]:
    """Iterate at ``eps`` until the end marginal's error is within ``tol``. Over-relaxation
    is fast but can diverge: the error is checked every 5 iterations, and a rise (or a
    non-finite error) brings back the best potentials and halves ``omega - 1``; at
    ``omega = 1`` Sinkhorn's iterations converge."""
    omega, count = OMEGA, 0
    error = p.error(f, g, eps)
    best = (error, f, g)
    while error > tol and count < MAX_ITER:
        f, g = _iterate(p, f, g, eps, 5, omega)
        count += 5
        error = p.error(f, g, eps)
        if not math.isfinite(error) or error > RISE * best[0]:
            error, f, g = best
            omega = 1 + (omega - 1) / 2 if omega > 1.05 else 1.0
        elif error < best[0]:
            best = (error, f, g)
    return f, g, error, count


def solve(a: Grid, b: Grid, eps: float | None = None, tol: float = TOL) -> Plan:
    """The entropic optimal-transport plan from ``a`` to ``b``.

    Args:
        a, b: the start and end masses, each on its own evenly spaced grid.
        eps: the final regularisation, squared model units (default: the larger cell,
            squared).
        tol: the L1 error of the end marginal at which the iterations stop.
    """
    eps_end = eps if eps is not None else (BLUR * max(a.cell, b.cell)) ** 2
    longest = max(*a.mass.shape, *b.mass.shape)
    ks = [1]
    while longest / ks[-1] > COARSEST:
        ks.append(2 * ks[-1])
    # the pooled grids, coarsest first; pooling by powers of two keeps each a parent of the next
    levels = [(_Cells(a.pooled(k)), _Cells(b.pooled(k))) for k in reversed(ks)]
    ca, cb = levels[0]
    ia = torch.arange(len(ca)).repeat_interleave(len(cb))
    jb = torch.arange(len(cb)).repeat(len(ca))
    p = _Problem(ca, cb, ia, jb)
    lo = torch.minimum(ca.pos.min(0).values, cb.pos.min(0).values)
    hi = torch.maximum(ca.pos.max(0).values, cb.pos.max(0).values)
    e = float((hi - lo).pow(2).sum())
    f = torch.zeros(len(ca), dtype=torch.float64)
    g = torch.zeros(len(cb), dtype=torch.float64)
    stats = Stats(eps=eps_end)
    for n, (ca, cb) in enumerate(levels):
        last = n == len(levels) - 1
        if n:  # the next grid: each pair's children, the potentials carried by the soft-min
            g = p.extended(f, cb, e)
            p = p.refined(ca, cb)
            f = p.f_of(g, e)
        level_start = (p, f, g, e)
        cell = max(ca.grid.cell, cb.grid.cell)
        floor = eps_end if last else max(eps_end, cell**2)
        f, g, e, p, count = _anneal(p, f, g, e, floor, ANNEAL_OMEGA)
        if not (torch.isfinite(f).all() and torch.isfinite(g).all()):
            f, g, e, p, count = _anneal(*level_start, floor, 1.0)
        want = tol if last else LEVEL_TOL
        f, g, stats.error, more = _converge(p, f, g, e, want)
        count += more
        p = p.pruned(f, g, e)
        stats.grids.append(ca.shape)
        stats.iterations.append(count)
        stats.pairs.append(len(p.ia))
    f = p.f_of(g, e)  # rows exact
    return Plan(p, f, g, e, stats)


class Plan:
    """The solved plan, sparse, and the map it gives start points.

    Attributes:
        start, end: the two grids.
        stats: what the solve did.
    """

    def __init__(self, p: _Problem, f: Tensor, g: Tensor, eps: float, stats: Stats) -> None:
        self.start, self.end, self.eps, self.stats = p.a.grid, p.b.grid, eps, stats
        self._a, self._b = p.a, p.b
        self._nearest = torch.as_tensor(_nearest(self.start.mass, p.a.index))
        # pairs in the order the map reads them: by start cell, end column, end row
        h, w = self.end.mass.shape
        end_flat = torch.as_tensor(p.b.flat)[p.jb]
        col, row = end_flat % w, end_flat // w
        order = torch.argsort((p.ia * w + col) * h + row)
        self.ia, self.jb = p.ia[order], p.jb[order]
        self.cond = (p.log_plan(f, g, eps)[order] - p.a.logm[self.ia]).exp()  # rows sum to 1
        self._col = col[order]
        self._cum = torch.cumsum(self.cond, 0) - self.cond  # each pair's start in the sums
        counts = torch.bincount(self.ia, minlength=len(p.a))
        self.first = torch.cumsum(counts, 0) - counts
        self.count = counts
        # the column groups: pairs of one start cell and one end column, in the same order
        key = self.ia * w + self._col
        new = torch.ones(len(key), dtype=torch.bool)
        new[1:] = key[1:] != key[:-1]
        self._group_first = torch.nonzero(new)[:, 0]
        group = torch.cumsum(new.long(), 0) - 1
        self._group_mass = torch.zeros(len(self._group_first), dtype=torch.float64)
        self._group_mass.index_add_(0, group, self.cond)
        self._group_cum = torch.cumsum(self._group_mass, 0) - self._group_mass
        starts = self.ia[self._group_first]
        self._group_of_row = torch.searchsorted(starts, torch.arange(len(p.a)))
        self._groups_in_row = torch.bincount(self.ia[self._group_first], minlength=len(p.a))

    def end_mass(self) -> np.ndarray:
        """The mass the plan brings to each end cell ``(h, w)`` (``b`` within ``error``)."""
        mass = torch.zeros(len(self._b), dtype=torch.float64)
        mass.index_add_(0, self.jb, self.cond * self._a.mass[self.ia])
        out = np.zeros(self.end.mass.size)
        out[self._b.flat] = mass.numpy()
        return out.reshape(self.end.mass.shape)

    def barycentres(self, x: Tensor) -> Tensor:
        """The plan's mean end point ``(N, 2)`` for start points ``x`` (their cells' rows):
        the barycentric map, the optimal map up to the entropic blur."""
        i, _ = self.start_cell(x)
        ends = self._b.pos[self.jb] * self.cond[:, None]
        sums = torch.zeros(len(self._a), 2, dtype=ends.dtype).index_add_(0, self.ia, ends)
        return sums[i]

    def start_cell(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The start cell of each point ``(N, 2)`` (an index among the cells with mass: the
        one it is in, or the nearest that has mass) and the point's place in that cell
        ``(N, 2)`` in [0, 1)^2 (x to the right, y down the rows)."""
        grid = self.start
        x = x.detach().to("cpu", torch.float64)
        h, w = grid.mass.shape
        sx = (grid.xs[-1] - grid.xs[0]) / (w - 1) if w > 1 else grid.cell or 1.0
        sy = (grid.ys[-1] - grid.ys[0]) / (h - 1) if h > 1 else -(grid.cell or 1.0)
        u = (x[:, 0] - grid.xs[0]) / sx + 0.5
        v = (x[:, 1] - grid.ys[0]) / sy + 0.5
        c = u.floor().long().clamp(0, w - 1)
        r = v.floor().long().clamp(0, h - 1)
        place = torch.stack([u - c, v - r], 1).clamp(0.0, 1.0 - 1e-9)
        return self._nearest[r * w + c], place

    def map(self, x: Tensor, place: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Where start points ``x`` ``(N, 2)`` go: an end cell each (flat ``row * w + col``
        of the end grid) and a place in it ``(N, 2)`` in [0, 1)^2.

        Within its start cell a point's place picks its end from the cell's row of the plan
        by the row's Knothe rearrangement: its x place picks the end column by the row's
        masses per column, its y place the end row within that column, and what is left of
        each is its place in the end cell. Points spread uniformly over a start cell are
        sent with exactly the plan's conditional law, and neighbours in a cell stay
        neighbours. ``place`` (default: where each point is in its cell) may be given: a
        place that is uniform in [0, 1)^2 for the start's own law within its cells.
        """
        i, where = self.start_cell(x)
        place = where if place is None else place.to(where)
        eps = 1e-12
        # the end column: the row's column groups, by their cumulative masses
        g0, gn = self._group_of_row[i], self._groups_in_row[i]
        base = self._group_cum[g0]
        target = base + place[:, 0] * (1 - eps)
        g = torch.searchsorted(self._group_cum, target, right=True) - 1
        g = torch.minimum(torch.maximum(g, g0), g0 + gn - 1)
        mass = self._group_mass[g].clamp_min(1e-300)
        rx = ((target - self._group_cum[g]) / mass).clamp(0, 1 - 1e-9)
        # the end row within that column
        first = self._group_first[g]
        last = (
            torch.where(
                g + 1 < len(self._group_first),
                self._group_first[(g + 1).clamp_max(len(self._group_first) - 1)],
                torch.full_like(g, len(self.cond)),
            )
            - 1
        )
        target = self._cum[first] + place[:, 1] * (1 - eps) * mass
        k = torch.searchsorted(self._cum, target, right=True) - 1
        k = torch.minimum(torch.maximum(k, first), last)
        ry = ((target - self._cum[k]) / self.cond[k].clamp_min(1e-300)).clamp(0, 1 - 1e-9)
        cell = torch.as_tensor(self._b.flat)[self.jb[k]]
        return cell, torch.stack([rx, ry], 1)


def _nearest(mass: np.ndarray, index: np.ndarray) -> np.ndarray:
    """For every cell of a grid, the index (among cells with mass) of itself when it holds
    mass, else of the nearest cell that does."""
    from scipy.ndimage import distance_transform_edt

    empty = mass <= 0
    if not empty.any():
        return index
    _, (rows, cols) = distance_transform_edt(empty, return_indices=True)
    return index[(rows * mass.shape[1] + cols).ravel()]
