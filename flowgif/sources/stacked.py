"""M pictures' densities placed together, for stacked training: one operation per kind of work
instead of one per picture."""

from __future__ import annotations

import torch

from flowgif.sources.picture import ImageDensity, blur_points, place_cells

__all__ = ["StackedPictures"]


class StackedPictures:
    """M pictures' densities placed together: ``place`` takes each picture's own
    :meth:`ImageDensity.draws` (or None for a picture that draws nothing this time) and gives
    ``(M, n, 2)`` points, each row exactly what that picture's ``sample`` gives."""

    def __init__(self, densities: list[ImageDensity]) -> None:
        self.densities = densities
        device = densities[0].device
        longest = max(len(d.cdf) for d in densities)
        self.cdf = torch.full((len(densities), longest), torch.inf, dtype=torch.float64)
        for m, d in enumerate(densities):
            self.cdf[m, : len(d.cdf)] = d.cdf.cpu()
        self.cdf = self.cdf.to(device)

        def column(values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)[:, None]

        self.cells = column([d.grid[0] * d.grid[1] for d in densities], torch.int64)
        self.width = column([d.grid[1] for d in densities], torch.int64)
        self.half = [column([d.half[i] for d in densities]) for i in (0, 1)]
        self.cell = [column([d.cell[i] for d in densities]) for i in (0, 1)]
        self.blurred = any(d.blur > 0 for d in densities)
        self.blur = column([d.blur for d in densities], torch.float32)[..., None]
        self.wide_half = column([d.half_extent for d in densities], torch.float32)[..., None]

    def place(self, draws: list[list[torch.Tensor] | None], n: int) -> torch.Tensor:
        """``(M, n, 2)`` points from each picture's ``n`` draws (None: it drew nothing, and
        its row is filler)."""
        full = [self._filled(mine, n) for mine in draws]
        parts = [torch.stack(part) for part in zip(*full, strict=True)]
        cells = parts[0]
        out = place_cells(
            self.cdf, self.cells, self.width, self.half, self.cell, cells[..., 0], cells[..., 1:]
        )
        if self.blurred:
            out = blur_points(out, self.blur, self.wide_half, *parts[1:])
        return out

    def _filled(self, mine: list[torch.Tensor] | None, n: int) -> list[torch.Tensor]:
        """One picture's draws in the stack's shape: zeros for one that drew nothing; in a
        stack with blurred pictures, no offset and no floor for a sharp one."""
        device = self.cdf.device
        if mine is None:
            mine = [torch.zeros(n, 3, dtype=torch.float64, device=device)]
        if self.blurred and len(mine) == 1:
            mine = [*mine, torch.zeros(n, 4, device=device), torch.ones(n, device=device)]
        return mine
