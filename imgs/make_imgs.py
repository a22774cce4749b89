"""Draw the bundled pictures with Pillow (run from the repository root to remake them)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent


def word(
    text: str, size: tuple[int, int] = (320, 160), font_size: int = 112, bold: int = 5
) -> Image.Image:
    """Black text on white, centred, thickened by a stroke of ``bold`` pixels."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    box = draw.textbbox((0, 0), text, font=font, stroke_width=bold)
    x = (size[0] - (box[2] - box[0])) / 2 - box[0]
    y = (size[1] - (box[3] - box[1])) / 2 - box[1]
    draw.text((x, y), text, fill=0, font=font, stroke_width=bold, stroke_fill=0)
    return img


def shapes(size: int = 256) -> Image.Image:
    """A ring, a triangle and a square: disconnected parts, holes and corners."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    s = size / 256
    d.ellipse([20 * s, 20 * s, 120 * s, 120 * s], fill=0)
    d.ellipse([45 * s, 45 * s, 95 * s, 95 * s], fill=255)
    d.polygon([(190 * s, 18 * s), (240 * s, 118 * s), (140 * s, 118 * s)], fill=0)
    d.rectangle([70 * s, 150 * s, 186 * s, 236 * s], fill=0)
    return img


def star(size: int = 256, points: int = 5) -> Image.Image:
    """A filled star: sharp tips."""
    img = Image.new("L", (size, size), 255)
    c, r_out, r_in = size / 2, 0.46 * size, 0.19 * size
    pts = []
    for k in range(2 * points):
        r = r_out if k % 2 == 0 else r_in
        a = math.pi / points * k - math.pi / 2
        pts.append((c + r * math.cos(a), c + r * math.sin(a)))
    ImageDraw.Draw(img).polygon(pts, fill=0)
    return img


def colour_badge(size: int = 256) -> Image.Image:
    """A colour logo on a transparent ground: three coloured discs and a dark bar."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 256
    d.ellipse([20 * s, 30 * s, 120 * s, 130 * s], fill=(220, 40, 40, 255))
    d.ellipse([136 * s, 30 * s, 236 * s, 130 * s], fill=(30, 90, 220, 255))
    d.ellipse([78 * s, 120 * s, 178 * s, 220 * s], fill=(240, 180, 20, 255))
    d.rectangle([30 * s, 228 * s, 226 * s, 244 * s], fill=(30, 30, 30, 255))
    return img


def main() -> None:
    word("flow").save(HERE / "flow.png", optimize=True)
    shapes().save(HERE / "shapes.png", optimize=True)
    star().save(HERE / "star.png", optimize=True)
    colour_badge().save(HERE / "badge.png", optimize=True)


if __name__ == "__main__":
    main()
