"""The exact flow: the field flow matching trains toward, computed in closed form on a grid.

With ``x_t = (1 - t) x0 + t x1`` (independent pairs) the marginal velocity is
``v*(t, x) = (E[x1 | x_t = x] - x) / (1 - t)``. With the end given as cells ``c`` of mass
``m_c`` (a picture, a word, a toy raster) and the start N(0, I),

    E[x1 | x_t = x] = sum_c m_c c N(x; t c, (1-t)^2 I) / sum_c m_c N(x; t c, (1-t)^2 I),

a ratio of two Gaussian blurs of the cells placed at ``t c``, and the denominator is the exact
density ``p_t``. A picture start (blurred) adds one more convolution: the start's cells placed
at ``(1 - t) c'``. :class:`Posterior` computes both blurs for every grid node at once, per
time, sized to ``p_t``'s support (a separable blur as two matrix products; the picture start
by FFT), and interpolates them at the particles.

:class:`ExactFlow` solves the flow with steps even in ``log(1 - t)`` (the field sharpens near
``t = 1``) by an exponential integrator, exact for a constant posterior mean and second order
with a Heun correction: ``x' = E + (x - E)(1 - t') / (1 - t)``. It stops at ``1 - delta``,
``delta`` a tenth of a cell, where each particle's posterior is one cell: the last step puts it
there, uniformly within the cell, so its samples have the picture's piecewise-constant law.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowgif.config import Config
from flowgif.flows.computed import ComputedField, ComputedFlow
from flowgif.flows.kernels import nearest_inked
from flowgif.flows.ode import SolveStats
from flowgif.flows.posterior import STEPS, Posterior, blur_matrix, solve_times
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity

__all__ = ["ExactField", "ExactFlow", "build"]

LATE = 4  # solver steps from the posterior's late time to the landing (its window, exact)


class ExactField(ComputedField):
    """The exact flow's module: no weights. The field is computed from the run's ends (the
    checkpoint keeps both), so a run folder of the exact flow holds no trained tensor."""

    family = "exact"
    name = "exact flow"


def build(config: Config) -> ExactField:
    """The (empty) module of ``train.family = "exact"``."""
    return ExactField()


class ExactFlow(ComputedFlow):
    """The exact flow from ``start`` to ``end`` behind the :class:`Flow` interface.

    Args:
        end: the end density.
        start: N(0, I) or a picture density (default N(0, I)).
        steps: solver steps, even in ``log(1 - t)``.
    """

    name = "exact flow"

    def __init__(
        self, end: ImageDensity, start: Distribution | None = None, steps: int = STEPS
    ) -> None:
        self.end = end
        # A picture start is the picture itself: its blur only keeps a trained flow's
        # likelihood finite, and the points drawn are the sharp picture's (``shown``).
        start = start if start is not None else Noise()
        self.start = start.sharp() if isinstance(start, ImageDensity) else start
        if isinstance(self.start, ImageDensity) and steps == STEPS:
            steps = 2 * STEPS  # a picture's kernel sharpens near t = 1 too (bench/EXACT.md)
        self.module = ExactField()
        self.dim = 2
        self.posterior = Posterior(end, self.start)
        self.delta = 0.1 * min(end.cell)
        self.times = solve_times(self.delta, steps)
        late = self.posterior.late
        if late < 1:  # past the grid, each point's window is exact: a few long steps
            window = 1 - (1 - late) * (self.delta / (1 - late)) ** np.linspace(0, 1, LATE + 1)
            self.times = np.concatenate([self.times[self.times < late], window])
        self._nearest = nearest_inked(end.probs_np)

    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor:
        """Points ``(T, N, 2)`` at ``times``: the solve's steps with dense output (the
        integrator's own interpolant), the last step into the cells."""
        wanted = times.detach().double().cpu().numpy()
        out = torch.empty(len(wanted), *z.shape, dtype=z.dtype, device=z.device)
        x, grid = z[:, :2].clone(), self.times
        done = np.zeros(len(wanted), dtype=bool)
        for k in range(len(grid) - 1):
            t0, t1 = grid[k], grid[k + 1]
            e = self._step_mean(x, t0, t1)
            inside = ~done & (wanted <= t1)
            for i in np.flatnonzero(inside):
                w = float((1 - wanted[i]) / (1 - t0))
                out[i] = x if w >= 1 else e + (x - e) * w
                done[i] = True
            x = e + (x - e) * float((1 - t1) / (1 - t0))
            if stats is not None:
                stats.nfe += 2
        if not done.all():
            end = self._land(x)
            for i in np.flatnonzero(~done):
                w = float((wanted[i] - grid[-1]) / (1 - grid[-1]))
                out[i] = x + min(1.0, max(0.0, w)) * (end - x)
        return out

    def _step_mean(self, x: Tensor, t0: float, t1: float) -> Tensor:
        """The posterior mean that carries ``x`` from ``t0`` to ``t1`` (Heun: the mean at the
        start and at a first-order prediction, averaged)."""
        e0, _ = self.posterior.at(t0).at(x)
        guess = e0 + (x - e0) * float((1 - t1) / (1 - t0))
        e1, _ = self.posterior.at(t1).at(guess)
        return 0.5 * (e0 + e1)

    def _land(self, x: Tensor) -> Tensor:
        """The last step: each particle into the cell its posterior mean is in (the nearest
        cell with mass when that one has none), uniformly within it."""
        e, _ = self.posterior.at(float(self.times[-1])).at(x)
        cells = self._nearest[self.end.cell_index(e)]
        return self._in_cells(cells, x.device, x.dtype)

    def _in_cells(self, cells: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
        d = self.end
        w = d.grid[1]
        gen = torch.Generator().manual_seed(len(cells))
        u = torch.rand(len(cells), 2, generator=gen, dtype=torch.float64)
        col = torch.as_tensor(cells % w, dtype=torch.float64)
        row = torch.as_tensor(cells // w, dtype=torch.float64)
        x = -d.half[0] + (col + 0.001 + 0.998 * u[:, 0]) * d.cell[0]
        y = d.half[1] - (row + 0.001 + 0.998 * u[:, 1]) * d.cell[1]
        return torch.stack([x, y], 1).to(device, dtype)

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x)``, the field flow matching trains toward (at ``1 - delta`` past it)."""
        t = torch.as_tensor(t, dtype=x.dtype).clamp(max=float(self.times[-1]))
        return self.posterior.velocity(t, x[:, :2])

    def paths_with_log_prob(
        self, z: Tensor, times: Tensor, stats: SolveStats | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paths ``(T, N, 2)`` and the exact ``log p_t`` at each point ``(T, N)``: the
        posterior's own density (the blur's denominator); at ``t = 1`` the landing law's."""
        paths = self.paths(z, times, stats)
        logp = torch.empty(paths.shape[:2], dtype=paths.dtype, device=paths.device)
        for i, t in enumerate(times.tolist()):
            if t >= float(self.times[-1]):
                logp[i] = self.log_prob(paths[i])
            else:
                _, density = self.posterior.at(t).at(paths[i])
                logp[i] = torch.log(density.clamp_min(1e-30))
        return paths, logp

    def landing(self) -> np.ndarray:
        """The mass the flow puts in each cell of the end, ``(h * w,)``: ``p`` at the last
        solver time ``1 - delta`` — the end's cells at ``(1 - delta) c``, each blurred by the
        start scaled by ``delta`` (its standard deviation; N(0, I): 1) — on a grid with one
        node per cell, gathered by the cell each node's posterior picks. What leaks into a
        neighbour is the blur's tail past half a cell."""
        d, t = self.end, float(self.times[-1])
        h, w = d.grid
        pad = 4
        mass = np.zeros((h + 2 * pad, w + 2 * pad))
        mass[pad:-pad, pad:-pad] = d.probs_np
        start = self.posterior.start
        sd = (1 - t) * (self.posterior.start_sd if isinstance(start, ImageDensity) else 1.0)
        g = torch.as_tensor(mass)
        ay = blur_matrix(h + 2 * pad, t * d.cell[1], sd)
        ax = blur_matrix(w + 2 * pad, t * d.cell[0], sd)
        blurred = (ay @ g @ ax.T).numpy()
        rows, cols = np.indices(blurred.shape)
        rows, cols = np.clip(rows - pad, 0, h - 1), np.clip(cols - pad, 0, w - 1)
        cells = self._nearest[(rows * w + cols).ravel()]
        out = np.bincount(cells, weights=blurred.ravel(), minlength=h * w)
        return out / out.sum()

    def push(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = self.paths(z, torch.tensor([0.0, 1.0], device=z.device))[-1]
        return x, self.log_prob(x)
