"""Masses on an evenly spaced grid of cells: what the optimal-transport solver pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid"]


@dataclass
class Grid:
    """Masses on a grid of cells: ``mass[r, c]`` at ``(xs[c], ys[r])``, evenly spaced by
    ``step``, signed: ``(dx, dy)``, ``dy < 0`` when rows run down (the grid says it: one a
    single cell wide or high cannot tell it from its centres)."""

    xs: np.ndarray  # (w,)
    ys: np.ndarray  # (h,)
    mass: np.ndarray  # (h, w), non-negative, sums to 1
    step: tuple[float, float]

    @property
    def cell(self) -> float:
        """The larger of the two spacings."""
        return max(abs(self.step[0]), abs(self.step[1]))

    def pooled(self, k: int) -> Grid:
        """The grid with ``k x k`` blocks of cells summed into one (the far edges padded with
        empty cells), each block at the mean of its cells' centres."""
        if k == 1:
            return self
        h, w = self.mass.shape
        hh, ww = -(-h // k), -(-w // k)
        m = np.zeros((hh * k, ww * k))
        m[:h, :w] = self.mass
        sx, sy = self.step
        xs = self.xs[0] + sx * (np.arange(ww) * k + (k - 1) / 2)
        ys = self.ys[0] + sy * (np.arange(hh) * k + (k - 1) / 2)
        return Grid(xs, ys, m.reshape(hh, k, ww, k).sum(axis=(1, 3)), (sx * k, sy * k))
