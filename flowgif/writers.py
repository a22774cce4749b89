"""Writers of index-image frames over one palette: GIF, WebP, MP4 (H.264) or a folder of PNGs.

Each writes atomically: a temp file (or folder) renamed over the output at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from flowgif.draw import Palette
from flowgif.errors import FlowgifError
from flowgif.files import (
    FRAMES_MARKER,
    SIGNATURE,
    atomic_write,
    check_frames_folder,
    os_reason,
    replace_folder,
    temp_folder,
    write_marker,
)

__all__ = [
    "mp4_problem",
    "output_size",
    "write_gif",
    "write_mp4",
    "write_png_folder",
    "write_webp",
]


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
            comment=SIGNATURE.encode(),
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
            xmp=f"<x:xmpmeta xmlns:x='adobe:ns:meta/'>{SIGNATURE}</x:xmpmeta>".encode(),
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
    """H.264 in MP4 through the ffmpeg that imageio-ffmpeg ships; checked before the rename.

    ffmpeg's exit status and the file's box structure are both checked, so a full disk or a
    killed encoder never replaces a good video with a truncated one.
    """
    import imageio_ffmpeg  # ships its own ffmpeg binary

    width, height = size
    even = (width + width % 2, height + height % 2)  # yuv420p needs even sides: pad, not scale

    def write(f: IO[bytes]) -> None:
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{even[0]}x{even[1]}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-an",
            "-vcodec",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-crf",
            str(int((1 - quality / 10) * 51)),
            "-metadata",
            f"comment={SIGNATURE}",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            f.name,  # ffmpeg writes by name: the temp file that atomic_write renames
        ]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log)
            assert proc.stdin is not None
            try:
                for frame, n in zip(frames, repeats, strict=True):
                    rgb = palette.rgb[frame]
                    if rgb.shape[:2] != (even[1], even[0]):
                        pad = ((0, even[1] - rgb.shape[0]), (0, even[0] - rgb.shape[1]), (0, 0))
                        rgb = np.pad(rgb, pad, mode="edge")
                    data = np.ascontiguousarray(rgb).tobytes()
                    for _ in range(n):
                        proc.stdin.write(data)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its status and log say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
        if code != 0:
            full = [line for line in lines if "No space left" in line]
            reason = (
                "no space left on the device"
                if full
                else lines[-1]
                if lines
                else f"exit status {code}"
            )
            raise FlowgifError(f"cannot write {out}: the video encoder failed ({reason})")
        problem = mp4_problem(Path(f.name))
        if problem:
            raise FlowgifError(f"cannot write {out}: the encoded video is damaged ({problem})")
        f.seek(0, 2)  # ffmpeg wrote behind this handle's back; flush+fsync still apply

    atomic_write(out, write)


def mp4_problem(path: Path) -> str:
    """Why ``path`` is not a complete MP4 (top-level boxes up to the end, ``moov`` and
    ``mdat`` present), or "" if it is one."""
    total = path.stat().st_size
    seen, pos = set(), 0
    with open(path, "rb") as f:
        while pos < total:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return f"a partial box header at byte {pos}"
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if size == 1:
                if len(head) < 16:
                    return f"a partial box header at byte {pos}"
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = total - pos  # the last box runs to the end
            if size < 8 or pos + size > total:
                return f"box {kind!r} at byte {pos} runs past the end of the file"
            seen.add(kind)
            pos += size
    missing = [k.decode() for k in (b"ftyp", b"moov", b"mdat") if k not in seen]
    return f"no {', '.join(missing)} box" if missing else ""


def write_png_folder(out: Path, frames: Iterator[np.ndarray], palette: Palette) -> None:
    """PNG frames into a new folder, renamed into place when all are written.

    ``out`` may be new, empty, or a frames folder flowgif wrote before (it holds the marker
    file :data:`~flowgif.files.FRAMES_MARKER`); anything else is refused and left alone.
    """
    check_frames_folder(out)
    tmp = temp_folder(out)
    try:
        count = 0
        for i, frame in enumerate(frames):
            _p_image(frame, palette).save(tmp / f"frame_{i:04d}.png")
            count += 1
        write_marker(tmp, count)
        replace_folder(tmp, out)
    except OSError as err:
        raise FlowgifError(f"cannot write {out}: {os_reason(err)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def output_size(out: Path) -> int:
    if out.is_dir():
        return sum(p.stat().st_size for p in out.iterdir() if p.name != FRAMES_MARKER)
    return out.stat().st_size
