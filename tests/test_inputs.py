"""Every kind of picture a user may hand over: read correctly, or refused in one line."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowgif.errors import FlowgifError
from flowgif.sources.picture import MAX_PIXELS, ImageDensity, ink_map, load_image


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (no pixel data worth decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    png_header_only(path, 30_000, 30_000)
    assert MAX_PIXELS < 30_000 * 30_000
    with pytest.raises(FlowgifError, match="at most"):
        load_image(path)


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(
        buf, format="PNG"
    )
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(FlowgifError, match=r"could not be decoded|not an image"):
        load_image(path)


def test_all_black_picture_is_a_uniform_density() -> None:
    d = ImageDensity.from_image(Image.new("L", (10, 5), 0))
    assert np.allclose(d.probs_np, 1 / 50)


@pytest.mark.parametrize("size", [(1, 1), (2, 2000), (2000, 2)])
def test_degenerate_sizes_work(size: tuple[int, int]) -> None:
    d = ImageDensity.from_image(Image.new("L", size, 0), resolution=256)
    x = d.sample(1000)
    assert np.isfinite(d.to_pixels(x)).all()
    assert float(d.log_prob(x).isfinite().float().mean()) == 1.0


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    first = Image.new("L", (8, 8), 255)
    first.paste(0, (0, 0, 4, 8))  # left half inked
    second = Image.new("L", (8, 8), 255)
    second.paste(0, (4, 0, 8, 8))  # right half inked
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100)
    img = load_image(path)
    ink = ink_map(img)
    assert ink[:, :4].mean() > 0.9 and ink[:, 4:].mean() < 0.1
    assert img.info["frames"] == 2
    from tests.test_cli import SMOKE, call

    result = call(
        "train", "--img", path, "--config", SMOKE, "--steps", 2, "--out", path.parent / "run"
    )
    assert result.exit_code == 0 and "first frame" in result.output


def test_cmyk_jpeg_and_sixteen_bit_png(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(tmp_path / "k.jpg")
    assert ink_map(load_image(tmp_path / "k.jpg")).mean() > 0.9
    a = np.zeros((8, 8), dtype=np.uint16)
    a[:, 4:] = 65535
    Image.fromarray(a).save(tmp_path / "deep.png")
    ink = ink_map(load_image(tmp_path / "deep.png"))
    assert ink[:, :4].mean() == pytest.approx(1.0) and ink[:, 4:].mean() == pytest.approx(0.0)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0] * 2 + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    img.info["transparency"] = 0  # index 0 (the right half) is see-through black
    img.save(tmp_path / "pal.png", transparency=0)
    ink = ink_map(load_image(tmp_path / "pal.png"))
    assert ink[:, :4].mean() > 0.9 and ink[:, 4:].mean() < 0.1


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    img = Image.new("L", (20, 10), 255)
    img.paste(0, (0, 0, 5, 10))  # ink on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "rot.jpg")
    assert shown.size == (10, 20)
    ink = ink_map(shown)
    assert ink[:5, :].mean() > 0.8 and ink[10:, :].mean() < 0.2  # left became top
