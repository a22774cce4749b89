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

from flowgif.draw import KEEP, Palette
from flowgif.errors import FlowgifError
from flowgif.files import (
    FRAMES_MARKER,
    atomic_write,
    check_frames_folder,
    os_reason,
    replace_folder,
    temp_folder,
    write_marker,
)
from flowgif.owned import SIGNATURE, mp4_boxes, xmp

__all__ = [
    "mp4_problem",
    "output_size",
    "write_gif",
    "write_mp4",
    "write_png_folder",
    "write_webp",
]


def _p_image(frame: np.ndarray, palette: Palette, transparent: bool = False) -> Image.Image:
    img = Image.fromarray(frame, mode="P")
    img.putpalette(palette.rgb.ravel().tolist())
    if transparent:
        img.info["transparency"] = 0
    return img


def write_gif(
    out: Path,
    frames: Iterator[np.ndarray],
    palette: Palette,
    ms: list[int],
    transparent: bool = False,
) -> None:
    """A looping GIF over the one global palette, each frame storing only what changed.

    A frame is cropped to the box where it differs from the one before, and inside the box
    the pixels that did not change may be the transparent index :data:`~flowgif.draw.KEEP`
    (disposal "leave in place"), which LZW packs into long runs — whichever encoding is
    smallest (:func:`_smallest`): the decoded frames are exactly the frames given. With
    ``transparent`` the background (index 0) is see-through instead: each frame then
    replaces the last (disposal "restore to background"), cropped to its particles.
    """

    def write(f: IO[bytes]) -> None:
        first = True
        prev: np.ndarray | None = None
        for frame, delay in zip(frames, ms, strict=True):
            if first:
                height, width = frame.shape
                f.write(b"GIF89a" + _u16(width) + _u16(height) + bytes([0xF7, 0, 0]))
                f.write(palette.rgb.astype(np.uint8).tobytes())
                f.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + _u16(0) + b"\x00")  # loop forever
                note = SIGNATURE.encode()
                f.write(b"!\xfe" + bytes([len(note)]) + note + b"\x00")
                first = False
            if transparent:
                box = _box(frame != 0) or (0, 0, 1, 1)
                part = frame[box[1] : box[3], box[0] : box[2]]
                params = {"duration": delay, "transparency": 0, "disposal": 2}
            else:
                box = (0, 0, frame.shape[1], frame.shape[0])
                if prev is not None:
                    box = _box(frame != prev) or (0, 0, 1, 1)
                part = frame[box[1] : box[3], box[0] : box[2]]
                params = {"duration": delay, "transparency": KEEP, "disposal": 1}
            if transparent or prev is None:
                f.write(_encoded(part, box, params))
            else:
                f.write(_smallest(part, prev[box[1] : box[3], box[0] : box[2]], box, params))
            prev = frame
        f.write(b";")

    atomic_write(out, write)


def _encoded(part: np.ndarray, box: tuple[int, int, int, int], params: dict) -> bytes:
    """One GIF frame (control extension, descriptor, LZW data) of index pixels at ``box``."""
    from PIL import GifImagePlugin

    image = Image.fromarray(np.ascontiguousarray(part), mode="P")
    return b"".join(GifImagePlugin.getdata(image, offset=box[:2], **params))


def _smallest(
    part: np.ndarray, before: np.ndarray, box: tuple[int, int, int, int], params: dict
) -> bytes:
    """The smallest of three encodings that decode alike: unchanged pixels left as they are,
    all marked :data:`KEEP`, or only the unchanged particles marked (background runs stay
    long). Which wins depends on how much of the box changed."""
    same = part == before
    kept = np.where(same, KEEP, part).astype(np.uint8)
    dots = np.where(same & (part != 0), KEEP, part).astype(np.uint8)
    return min((_encoded(p, box, params) for p in (part, kept, dots)), key=len)


def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the True pixels, or None."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def write_webp(
    out: Path,
    frames: Iterator[np.ndarray],
    palette: Palette,
    ms: list[int],
    transparent: bool = False,
) -> None:
    """An animated WebP; with ``transparent`` the background is alpha 0."""

    def rgb(f: np.ndarray) -> Image.Image:
        if not transparent:
            return Image.fromarray(palette.rgb[f])
        alpha = np.where(f == 0, 0, 255).astype(np.uint8)[..., None]
        return Image.fromarray(np.concatenate([palette.rgb[f], alpha], axis=-1), mode="RGBA")

    images = (rgb(f) for f in frames)
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
            xmp=xmp(SIGNATURE).encode(),
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
    width, height = size
    even = (width + width % 2, height + height % 2)  # yuv420p needs even sides: pad, not scale

    def write(f: IO[bytes]) -> None:
        cmd = _ffmpeg_command(even, fps, quality, f.name)
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log)
            _feed(proc, frames, palette, repeats, even)
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


def _ffmpeg_command(size: tuple[int, int], fps: int, quality: int, name: str) -> list[str]:
    """ffmpeg reading raw RGB frames of ``size`` on stdin and writing H.264 MP4 to ``name``
    (by name: the temp file that atomic_write renames), signed in its comment."""
    import imageio_ffmpeg  # ships its own ffmpeg binary

    crf = str(int((1 - quality / 10) * 51))
    return [
        *(imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error"),
        *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}"),
        *("-r", str(fps), "-i", "-", "-an"),
        *("-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", crf),
        *("-metadata", f"comment={SIGNATURE}", "-movflags", "+faststart", "-f", "mp4", name),
    ]


def _feed(
    proc: subprocess.Popen,
    frames: Iterator[np.ndarray],
    palette: Palette,
    repeats: list[int],
    even: tuple[int, int],
) -> None:
    """Each palette frame as RGB, padded to even sides, ``repeats`` times, into ffmpeg."""
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


def mp4_problem(path: Path) -> str:
    """Why ``path`` is not a complete MP4 (top-level boxes up to the end, ``moov`` and
    ``mdat`` present), or "" if it is one."""
    try:
        with open(path, "rb") as f:
            seen = {kind for kind, _, _ in mp4_boxes(f, 0, path.stat().st_size)}
    except ValueError as err:
        return str(err)
    missing = [k.decode() for k in (b"ftyp", b"moov", b"mdat") if k not in seen]
    return f"no {', '.join(missing)} box" if missing else ""


def write_png_folder(
    out: Path, frames: Iterator[np.ndarray], palette: Palette, transparent: bool = False
) -> None:
    """PNG frames into a new folder, renamed into place when all are written.

    ``out`` may be new, empty, or a frames folder flowgif wrote before (it holds the marker
    file :data:`~flowgif.files.FRAMES_MARKER`); anything else is refused and left alone.
    """
    check_frames_folder(out)
    tmp = temp_folder(out)
    try:
        count = 0
        for i, frame in enumerate(frames):
            image = _p_image(frame, palette, transparent)
            image.save(tmp / f"frame_{i:04d}.png", **({"transparency": 0} if transparent else {}))
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
