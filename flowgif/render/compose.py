"""Panels side by side under their labels, and the canvas-to-model map the field panel uses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from flowgif.draw import TEXT, Canvas
from flowgif.sources.picture import ImageDensity

__all__ = ["compose", "header", "to_model"]


def to_model(density: ImageDensity) -> Callable[[Canvas, np.ndarray], np.ndarray]:
    """Canvas pixels of a view -> model coordinates."""

    def to_model(view: Canvas, px: np.ndarray) -> np.ndarray:
        uv = (px - np.asarray(view.offset)) / view.scale
        return np.asarray(density.from_pixels(uv).cpu(), dtype=np.float64)

    return to_model


def header(labels: list[str] | None, canvases: list[Canvas], size: int) -> list[np.ndarray]:
    """One label strip per panel, drawn in the palette's text colour (index 255)."""
    from PIL import ImageDraw, ImageFont

    height = max(14, round(size * 0.06))
    font = ImageFont.load_default(size=round(height * 0.7))
    strips = []
    for i, canvas in enumerate(canvases):
        text = labels[i] if labels and i < len(labels) else ""
        strip = Image.new("L", (canvas.width, height), 0)
        ImageDraw.Draw(strip).text(
            (canvas.width / 2, height / 2), text, fill=TEXT, font=font, anchor="mm"
        )
        strips.append((np.asarray(strip) > 127).astype(np.uint8) * TEXT)
    return strips


def compose(panels: list[np.ndarray], header: list[np.ndarray]) -> np.ndarray:
    """Panels side by side under their labels, bottom-padded to one height, with gaps."""
    height = max(p.shape[0] for p in panels)
    gap = np.zeros((height + header[0].shape[0], max(4, panels[0].shape[1] // 64)), np.uint8)
    columns = []
    for p, h in zip(panels, header, strict=True):
        p = np.pad(p, ((0, height - p.shape[0]), (0, 0)))
        columns += [np.vstack([h, p]), gap]
    return np.hstack(columns[:-1])
