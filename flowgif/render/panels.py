"""``render --panels``: the picture, the learned density at time t, and the vector field, drawn
beside the particles into the same index frames.

The density panel shows the flow's exact ``p_t`` where the particles are: each particle carries
its log-density along its path (the instantaneous change of variables, integrated with the
path), drawn in a heat ramp scaled per frame. The field panel shows ``v(t, x)`` as arrows on a
grid of the frame's view. The palette's top indices are reserved for them (:data:`RESERVED`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from flowgif.draw import DENSITY_STOPS, KEEP, Canvas, Palette

__all__ = ["LABELS", "RESERVED", "Panels", "reserve_colors"]

GREYS, HEAT = 16, 32
RESERVED = GREYS + HEAT + 1  # palette indices the panels take, just below KEEP
ARROW = KEEP - 1
HEAT0 = ARROW - HEAT  # HEAT0 .. ARROW - 1
GREY0 = HEAT0 - GREYS  # GREY0 .. HEAT0 - 1
LABELS = ("picture", "density p_t", "particles", "field v(t, x)")


def reserve_colors(palette: Palette, dark: bool) -> None:
    """Fill the reserved indices: ink greys, the heat ramp, the arrow colour."""
    bg = palette.rgb[0].astype(np.float64)
    ink = np.array([235.0, 235, 245]) if dark else np.array([20.0, 20, 30])
    a = np.linspace(0.12, 1.0, GREYS)[:, None]
    palette.rgb[GREY0:HEAT0] = np.round(bg + a * (ink - bg)).astype(np.uint8)
    s = np.linspace(0.15, 1.0, HEAT)
    ramp = np.stack([np.interp(s, DENSITY_STOPS[:, 0], DENSITY_STOPS[:, c]) for c in (1, 2, 3)], 1)
    palette.rgb[HEAT0:ARROW] = np.round(ramp if dark else ramp[::-1]).astype(np.uint8)
    palette.rgb[ARROW] = (200, 200, 210) if dark else (50, 50, 64)


@dataclass
class Panels:
    """What the three extra panels need, solved once for all frames.

    Attributes:
        canvas: the panel geometry (each panel has the particles' canvas).
        picture: the static picture panel, ``(H, W)`` palette indices.
        paths: ``(T, N, 2)`` the particles at the frame times.
        logp: ``(T, N)`` log-density of each particle at each frame time.
        times: ``(T,)`` frame times.
    """

    canvas: Canvas
    picture: np.ndarray
    paths: np.ndarray
    logp: np.ndarray
    times: np.ndarray

    @classmethod
    def prepare(
        cls,
        run: object,
        z: torch.Tensor,
        times: torch.Tensor,
        canvas: Canvas,
        stats: object = None,
    ) -> Panels:
        """Solve the particles' paths with their log-densities; draw the picture's ink."""
        flow = run.flow  # type: ignore[attr-defined]
        paths, logp = flow.paths_with_log_prob(z, times, stats)
        return cls(
            canvas,
            _ink_panel(run, canvas),
            paths.cpu().numpy(),
            logp.cpu().numpy(),
            times.cpu().numpy(),
        )

    def density(self, view: Canvas, uv: np.ndarray, k: int, dot: int) -> np.ndarray:
        """Frame ``k``'s particles coloured by ``p_t`` (heat ramp; the densest 1 % at the top)."""
        p = np.exp(self.logp[k] - self.logp[k].max())
        level = np.clip(p / max(np.quantile(p, 0.99), 1e-30), 0, 1)
        index, who = view.flat_index(uv, dot + 1)
        value = np.zeros(self.canvas.width * self.canvas.height, dtype=np.int64)
        np.maximum.at(value, index, 1 + np.round(level[who] * (HEAT - 1)).astype(np.int64))
        frame = np.where(value > 0, HEAT0 + value - 1, 0)
        return frame.astype(np.uint8).reshape(self.canvas.height, self.canvas.width)

    def field(
        self, view: Canvas, run: object, k: int, to_model: object, columns: int = 16
    ) -> np.ndarray:
        """Arrows of ``v(t_k, x)`` on a grid over the view (longest arrow: one grid cell)."""
        c = self.canvas
        step = c.width / columns
        xs = (np.arange(columns) + 0.5) * step
        ys = (np.arange(max(1, round(c.height / step))) + 0.5) * (
            c.height / round(c.height / step)
        )
        px = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
        x = to_model(view, px)  # type: ignore[operator]
        field = run.flow.field  # type: ignore[attr-defined]
        with torch.no_grad():
            t = torch.tensor(float(self.times[k]))
            v = field(t, torch.as_tensor(x, dtype=torch.float32)).numpy()[:, :2]
        v_px = v * np.array([1.0, -1.0])  # y points up in the model, down on screen
        length = np.linalg.norm(v_px, axis=1)
        tip = px + v_px * (0.9 * step / max(float(length.max()), 1e-9))
        img = Image.new("P", (c.width, c.height), 0)
        draw = ImageDraw.Draw(img)
        for (x0, y0), (x1, y1) in zip(px, tip, strict=True):
            draw.line([(x0, y0), (x1, y1)], fill=ARROW, width=1)
            d = np.array([x1 - x0, y1 - y0])
            n = np.linalg.norm(d)
            if n > 3:
                d = d / n * min(4.0, 0.4 * n)
                for turn in (0.5, -0.5):
                    r = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
                    back = r @ d
                    draw.line([(x1, y1), (x1 - back[0], y1 - back[1])], fill=ARROW, width=1)
        return np.asarray(img, dtype=np.uint8)


def _ink_panel(run: object, view: Canvas) -> np.ndarray:
    """The ink the flow was asked to draw, in greys, in the picture's own frame."""
    density = run.density  # type: ignore[attr-defined]
    h, w = density.grid
    ink = density.probs_np / density.probs_np.max()
    rows, cols = np.mgrid[0 : view.height, 0 : view.width]
    u = (cols + 0.5 - view.offset[0]) / view.scale  # picture pixel coordinates
    v = (rows + 0.5 - view.offset[1]) / view.scale
    inside = (u >= 0) & (u < density.size[0]) & (v >= 0) & (v < density.size[1])
    col = np.clip((u / density.size[0] * w).astype(np.int64), 0, w - 1)
    row = np.clip((v / density.size[1] * h).astype(np.int64), 0, h - 1)
    level = np.where(inside, ink[row, col], 0.0)
    grey = np.where(level > 0.02, GREY0 + np.round(level * (GREYS - 1)).astype(np.int64), 0)
    return grey.astype(np.uint8)
