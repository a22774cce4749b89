"""The posterior of the straight path exactly, cell by cell, in a window around each point.

Late in the flow (``1 - t`` below a couple of grid nodes) a grid can no longer hold the
posterior: given ``x_t = x`` the end ``x1`` is N(x / t, ((1 - t) / t)^2 I) restricted to the
picture's cells, narrower than a node. :class:`Window` computes it at each point instead, from
the cells within 5 standard deviations of ``x / t``. Each cell is uniform on its box, so per
axis its weight is a difference of normal CDFs and its mean a truncated normal's, in closed
form; the sum runs in log space, so it stays exact down to t = 1 and far off the ink.

For the start N(0, I), with ``x_t = t x1 + (1 - t) x0``: ``E[x0 | x_t = x] = -R`` averaged over
the cells, ``R = (phi(a) - phi(b)) / (Phi(b) - Phi(a))`` the truncated normal's offset in its
standard deviations (``a``, ``b`` a cell's edges in them), and ``v* = (x - E[x0 | x]) / t``: it
stays bounded as ``t -> 1``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from flowgif.flows.kernels import nearest_inked
from flowgif.sources.picture import ImageDensity

__all__ = ["Window"]

S_MIN = 1e-6  # 1 - t at t = 1 (model units: a thousandth of a 4,096-px picture's cell)
CHUNK = 4096  # points per pass (a 15 x 15 window: 7 MB a tensor in float64)
REACH = 5.0  # the window's half-width, in the posterior's standard deviations
_LOG_ROOT_2PI = 0.5 * math.log(2 * math.pi)


class Window:
    """``E[x0 | x_t]``, ``E[x1 | x_t]`` and ``p_t`` of N(0, I) -> ``end``, exactly, for times
    whose posterior spread ``(1 - t) / t`` is at most ``spread`` (model units).

    Args:
        end: the end, uniform on each cell.
        spread: the widest posterior it serves; the window spans its ``REACH`` standard
            deviations (at least one cell) on each side of the point's own cell.
    """

    def __init__(self, end: ImageDensity, spread: float) -> None:
        self.half = end.half
        self.cell = end.cell
        self.shape = end.grid  # (h, w)
        self.nearest = torch.as_tensor(nearest_inked(end.probs_np), device=end.device)
        self.reach = math.ceil(REACH * spread / min(end.cell)) + 1
        # the cells' masses with a margin of empty cells as wide as the window
        self.padded = torch.as_tensor(
            np.pad(end.probs_np, self.reach), dtype=torch.float32, device=end.device
        )

    def to(self, device: torch.device | str) -> Window:
        self.padded = self.padded.to(device)
        self.nearest = self.nearest.to(device)
        return self

    def __call__(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """At times ``t`` ``(N,)`` (or one) and points ``x`` ``(N, 2)``: ``E[x0 | x_t = x]``
        ``(N, 2)``, ``E[x1 | x_t = x]`` ``(N, 2)`` and ``p_t(x)`` ``(N,)``, in ``x``'s dtype
        (in chunks of :data:`CHUNK` points: a window's cells take memory per point)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        t = (t.expand(len(x)) if t.numel() == 1 else t).clamp(max=1.0)  # a solver may look past 1
        # in full precision even inside a training step's bf16 autocast (a teacher is exact)
        with torch.autocast(x.device.type, enabled=False):
            if len(x) <= CHUNK:
                return self._chunk(t, x)
            parts = [
                self._chunk(t[i : i + CHUNK], x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)
            ]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def _chunk(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xd = x.double()
        s = (1 - t).clamp_min(S_MIN)
        mu = xd / t[:, None]
        sd = (s / t)[:, None]
        h, w = self.shape
        col = torch.floor((mu[:, 0] + self.half[0]) / self.cell[0]).long()
        row = torch.floor((self.half[1] - mu[:, 1]) / self.cell[1]).long()
        own = row.clamp(0, h - 1) * w + col.clamp(0, w - 1)
        near = self.nearest[own]  # where no ink is in reach, the window moves to the nearest
        far = ((near // w - row).abs() > self.reach) | ((near % w - col).abs() > self.reach)
        row = torch.where(far, near // w, row).clamp(0, h - 1)  # off the picture, its edge:
        col = torch.where(far, near % w, col).clamp(0, w - 1)  # the same cells in reach
        noise, lse = self._sums(mu, sd, row, col)
        e1 = mu - sd * noise  # the truncated normals' means: x / t + sd R
        lost = ~torch.isfinite(e1).all(1)  # so far from the ink that even the nearest cell's
        if lost.any():  # weight underflows: its limit, the nearest point of that cell
            cell = self.nearest[own[lost]]
            r, c = (cell // w).double(), (cell % w).double()
            lo_x = -self.half[0] + c * self.cell[0]
            lo_y = self.half[1] - (r + 1) * self.cell[1]
            e1[lost] = torch.stack([
                torch.minimum(torch.maximum(mu[lost, 0], lo_x), lo_x + self.cell[0]),
                torch.minimum(torch.maximum(mu[lost, 1], lo_y), lo_y + self.cell[1]),
            ], 1)  # fmt: skip
            noise[lost] = (xd[lost] - t[lost, None] * e1[lost]) / s[lost, None]
            lse[lost] = -math.inf
        density = torch.exp(lse) / (t * t * self.cell[0] * self.cell[1])
        dtype = x.dtype
        return noise.to(dtype), e1.to(dtype), density.to(dtype)

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """``v*(t, x) = (x - E[x0 | x_t = x]) / t``."""
        noise, _, _ = self(t, x)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return (x - noise) / t

    def _sums(self, mu: Tensor, sd: Tensor, row: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
        """``E[x0 | x]`` ``(N, 2)`` and the log of the cells' summed weight ``(N,)``."""
        widest = float(sd.max()) / min(self.cell)  # the window these times need, in cells
        reach = min(self.reach, math.ceil(REACH * widest) + 1)
        j = torch.arange(-reach, reach + 1, device=mu.device)
        cols, rows = col[:, None] + j, row[:, None] + j  # (N, n)
        cell = torch.tensor(self.cell, dtype=mu.dtype, device=mu.device)[None, :, None]
        lower = torch.stack(  # each window cell's lower edge: x left to right, y bottom up
            [cols * self.cell[0] - self.half[0], self.half[1] - (rows + 1) * self.cell[1]], 1
        )
        a = (lower - mu[:, :, None]) / sd[:, :, None]
        log_z, r = _truncated(a, a + cell / sd[:, :, None])  # (N, 2, n)
        top = log_z.amax(2, keepdim=True)  # each axis scaled to its largest cell: no underflow
        z = torch.exp(log_z - top)  # (N, 2, n)
        pw = self.padded.shape[1]  # the window's cells (in the margin when off the picture)
        base = (row * pw + col + self.reach * (pw + 1)).int()
        flat = base[:, None, None] + (j[:, None] * pw + j[None, :]).int()
        p = self.padded.flatten()[flat]  # (N, n rows, n cols), float32
        z32 = z.float()  # weights at most 1: float32 sums lose nothing the blur keeps
        by_row = torch.bmm(p, z32[:, 0, :, None]).squeeze(2).double()  # (N, n): rows' sums
        by_col = torch.bmm(z32[:, 1, None, :], p).squeeze(1).double()
        mass = (by_row * z[:, 1]).sum(1)
        noise_x = -(by_col * z[:, 0] * r[:, 0]).sum(1) / mass
        noise_y = -(by_row * z[:, 1] * r[:, 1]).sum(1) / mass
        return torch.stack([noise_x, noise_y], 1), torch.log(mass) + top[:, 0, 0] + top[:, 1, 0]


def _truncated(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """For a standard normal between ``a < b``: ``log(Phi(b) - Phi(a))`` and the mean
    ``(phi(a) - phi(b)) / (Phi(b) - Phi(a))``, both without cancelling in either tail."""
    upper = a > 0  # both in the upper tail: mirror, Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    hi = torch.where(upper, -a, b)
    lo = torch.where(upper, -b, a)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    log_z = log_hi + torch.log(-torch.expm1(log_lo - log_hi))
    mean = torch.exp(-0.5 * a * a - _LOG_ROOT_2PI - log_z) - torch.exp(
        -0.5 * b * b - _LOG_ROOT_2PI - log_z
    )
    return log_z, mean
