"""Writers of index-image frames over one palette: GIF, WebP, MP4 (H.264) or a folder of PNGs.

Each writes atomically: a temp file (or folder) renamed over the output at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from flowgif.draw import Palette
from flowgif.errors import FlowgifError
from flowgif.run import atomic_write, umask

__all__ = ["output_size", "write_gif", "write_mp4", "write_png_folder", "write_webp"]


def _p_image(frame: np.ndarray, palette: Palette) -> Image.Image:
    img = Image.fromarray(frame, mode="P")
    img.putpalette(palette.rgb.ravel().tolist())
    return img


def write_gif(out: Path, frames: Iterator[np.ndarray], palette: Palette, ms: list[int]) -> None:
    images = (_p_image(f, palette) for f in frames)
    first = next(images)
    atomic_write(
        out,
        lambda f: first.save(
            f,
            format="GIF",
            save_all=True,
            append_images=images,
            duration=ms,
            loop=0,
            optimize=False,
            disposal=1,
        ),
    )


def write_webp(out: Path, frames: Iterator[np.ndarray], palette: Palette, ms: list[int]) -> None:
    images = (Image.fromarray(palette.rgb[f]) for f in frames)
    first = next(images)
    atomic_write(
        out,
        lambda f: first.save(
            f,
            format="WEBP",
            save_all=True,
            append_images=images,
            duration=ms,
            loop=0,
            quality=80,
            method=4,
        ),
    )


def write_mp4(
    out: Path,
    frames: Iterator[np.ndarray],
    palette: Palette,
    repeats: list[int],
    fps: int,
    quality: int,
    size: tuple[int, int],
) -> None:
    import imageio_ffmpeg  # ships its own ffmpeg binary

    def write(f: IO[bytes]) -> None:
        # ffmpeg writes by name: let it fill the temp file that atomic_write then renames.
        writer = imageio_ffmpeg.write_frames(
            f.name,
            size,
            fps=fps,
            codec="libx264",
            quality=quality,
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        writer.send(None)
        for frame, n in zip(frames, repeats, strict=True):
            rgb = np.ascontiguousarray(palette.rgb[frame])
            for _ in range(n):
                writer.send(rgb)
        writer.close()
        f.seek(0, 2)  # ffmpeg wrote behind this handle's back; flush+fsync still apply

    atomic_write(out, write)


def write_png_folder(out: Path, frames: Iterator[np.ndarray], palette: Palette) -> None:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; give what mkdir would
    except OSError as err:
        raise FlowgifError(f"cannot write to {parent}: {err.strerror or err}") from None
    try:
        for i, frame in enumerate(frames):
            _p_image(frame, palette).save(tmp / f"frame_{i:04d}.png")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def output_size(out: Path) -> int:
    if out.is_dir():
        return sum(p.stat().st_size for p in out.iterdir())
    return out.stat().st_size
