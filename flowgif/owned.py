"""What flowgif can prove it wrote, and so may replace: signatures, run-folder markers, ledgers.

A name proves nothing. An output carries flowgif's signature as a whole field (a GIF comment,
a WebP XMP packet, a PNG ``Software`` text, an MP4 comment, a JSON report's or the gallery's
``generator``); a run folder carries a marker only flowgif writes (:data:`MARKER`, created
exclusively by :func:`flowgif.store.folders.claim`); a file that cannot carry a signature
(samples, ``.npy``) is recorded by the hash of its bytes in its run folder's ledger. Anything
else is the user's, and :func:`check_replaceable` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from flowgif.errors import FlowgifError
from flowgif.files import atomic_write_text

__all__ = [
    "HTML_SIGNATURE",
    "LEDGER",
    "MARKER",
    "MARKER_FORMAT",
    "SIGNATURE",
    "check_replaceable",
    "forget_written",
    "html_head",
    "html_seal",
    "made_by_flowgif",
    "mp4_boxes",
    "mp4_comment",
    "read_marker",
    "record_written",
    "recorded",
    "xmp",
]


SIGNATURE = "made with flowgif"  # in the GIF comment, WebP XMP, PNG Software, MP4 comment
HTML_SIGNATURE = (  # how every HTML page flowgif writes begins, byte for byte
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
    f'<meta name="generator" content="{SIGNATURE}">'
)


# The field each format carries the signature in, and its exact text there: one field per
# format, so that a signature in another field (a PNG ``comment``), or wrapped in something
# (a GIF comment holding an XMP packet), proves nothing.
_FIELDS = {".gif": ("GIF", "comment"), ".webp": ("WEBP", "xmp"), ".png": ("PNG", "Software")}


def html_head(title: str) -> str:
    """The first lines of every HTML page flowgif writes: a page is flowgif's only when it
    begins with exactly :data:`HTML_SIGNATURE` (a quote of it anywhere else proves nothing)."""
    return f"{HTML_SIGNATURE}\n<title>{title}</title>"


_SEAL = "<!-- flowgif: sha256 of the page above: {} -->\n"


def html_seal(text: str) -> str:
    """A page flowgif writes, with its last line the hash of all above it: the proof that the
    page is byte for byte as flowgif left it (one a person edited since is theirs to keep)."""
    text = text if text.endswith("\n") else text + "\n"
    return text + _SEAL.format(hashlib.sha256(text.encode("utf-8")).hexdigest())


def _sealed(data: bytes) -> bool:
    """Whether ``data`` begins with :data:`HTML_SIGNATURE` and ends with its own seal."""
    if not data.startswith((HTML_SIGNATURE + "\n").encode()):
        return False
    body, _, seal = data[:-1].rpartition(b"\n")
    body += b"\n"
    wanted = _SEAL.format(hashlib.sha256(body).hexdigest()).encode()
    return data.endswith(b"\n") and seal + b"\n" == wanted


def made_by_flowgif(path: Path) -> bool:
    """Whether the file at ``path`` carries flowgif's signature as a whole field: a GIF
    comment, WebP XMP packet (:func:`xmp`), PNG ``Software`` text or MP4 ``comment`` equal to
    :data:`SIGNATURE`, a JSON object whose ``generator`` is :data:`SIGNATURE`, an HTML page
    that begins with :data:`HTML_SIGNATURE` and ends with its seal, unchanged
    (:func:`html_seal`). A signature in another field, inside a longer
    text, or a file of another format under the suffix, is not flowgif's. Samples (``.npy``)
    carry no signature: they are never taken for flowgif's."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _FIELDS:
            from PIL import Image

            fmt, field = _FIELDS[suffix]
            with Image.open(path) as img:
                found, kind = img.info.get(field), img.format
            wanted = xmp(SIGNATURE) if suffix == ".webp" else SIGNATURE
            return kind == fmt and found is not None and _text(found) == wanted
        if suffix == ".mp4":
            return mp4_comment(path) == SIGNATURE
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and data.get("generator") == SIGNATURE
        if suffix == ".html":
            return _sealed(path.read_bytes())
    except Exception:  # unreadable or another format under that suffix: not flowgif's
        return False
    return False


def mp4_boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The boxes of an MP4 file between byte ``start`` and ``end``: ``(kind, where its body
    starts, where it ends)``, 64-bit and to-the-end sizes included.

    Raises:
        ValueError: a partial header, or a box that runs past ``end`` (at the box it names).
    """
    pos = start
    while pos < end:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise ValueError(f"a partial box header at byte {pos}")
        size, kind, body = int.from_bytes(head[:4], "big"), head[4:8], pos + 8
        if size == 1:
            if len(head) < 16:
                raise ValueError(f"a partial box header at byte {pos}")
            size, body = int.from_bytes(head[8:16], "big"), pos + 16
        elif size == 0:
            size = end - pos  # the last box runs to the end
        if size < body - pos or pos + size > end:
            raise ValueError(f"box {kind!r} at byte {pos} runs past the end of the file")
        yield kind, body, pos + size
        pos += size


def mp4_comment(path: Path) -> str | None:
    """The ``comment`` tag of an MP4 (``moov/udta/meta/ilst/\xa9cmt/data``, as ffmpeg writes
    it), or None."""
    try:
        with open(path, "rb") as f:
            where = (0, os.fstat(f.fileno()).st_size)
            for kind in (b"moov", b"udta", b"meta", b"ilst", b"\xa9cmt", b"data"):
                start, end = where
                if kind == b"ilst":  # meta is a full box: 4 bytes of version and flags first
                    start += 4
                found = [(b, e) for k, b, e in mp4_boxes(f, start, end) if k == kind]
                if not found:
                    return None
                where = found[0]
            start, end = where
            if end - start < 8:
                return None
            f.seek(start + 8)  # the data box: 4 bytes of type, 4 of locale, then the text
            return f.read(end - start - 8).decode("utf-8", "replace")
    except ValueError:
        return None


def xmp(text: str) -> str:
    """The XMP packet a WebP carries ``text`` in."""
    return f"<x:xmpmeta xmlns:x='adobe:ns:meta/'>{text}</x:xmpmeta>"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


MARKER = ".flowgif-run"


MARKER_FORMAT = "flowgif-run/1"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a folder flowgif made, or None (no marker, a symlink, not flowgif's
    format)."""
    path = Path(folder) / MARKER
    try:
        if Path(folder).is_symlink() or path.is_symlink():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    if not isinstance(data.get("id"), str) or not isinstance(data.get("made_by"), str):
        return None
    return data


LEDGER = ".flowgif-files"  # in a run folder: the files flowgif wrote there that carry no signature


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ledger(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / LEDGER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_written(path: Path) -> None:
    """Record a file without a signature (samples, ``.npy``) that flowgif just wrote into a run
    folder, by the hash of its bytes, so that it can later prove the file is its own."""
    path = Path(path)
    if read_marker(path.parent) is None:
        return
    ledger = {**_ledger(path.parent), path.name: _digest(path)}
    atomic_write_text(path.parent / LEDGER, json.dumps(ledger, indent=2) + "\n")


def forget_written(path: Path) -> None:
    """Remove ``path``, a file :func:`record_written` recorded (byte for byte), and its
    record; the ledger goes too when nothing else is recorded in it. Anything else is left."""
    path = Path(path)
    if not recorded(path):
        return
    path.unlink(missing_ok=True)
    ledger = {k: v for k, v in _ledger(path.parent).items() if k != path.name}
    if ledger:
        atomic_write_text(path.parent / LEDGER, json.dumps(ledger, indent=2) + "\n")
    else:
        (path.parent / LEDGER).unlink(missing_ok=True)


def recorded(path: Path) -> bool:
    """Whether ``path`` is, byte for byte, a file flowgif recorded writing into its run folder."""
    path = Path(path)
    if path.is_symlink() or read_marker(path.parent) is None:
        return False
    known = _ledger(path.parent).get(path.name)
    return known is not None and known == _digest(path)


def check_replaceable(path: Path, force: bool = False) -> None:
    """Refuse to replace an existing file at ``path`` that flowgif did not write: only a file
    carrying flowgif's whole signature (:func:`made_by_flowgif`), or one its run folder's
    ledger records byte for byte (:func:`recorded`), is replaced (a file name, or a folder
    holding a checkpoint, proves nothing); ``force`` replaces any file (never a symlink).

    Raises:
        FlowgifError: ``path`` is a folder, or a file flowgif did not write.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise FlowgifError(f"cannot write {path}: it is a folder")
    if force and not path.is_symlink():
        return
    if path.is_symlink() or not (made_by_flowgif(path) or recorded(path)):
        raise FlowgifError(
            f"{path} exists and flowgif did not write it; choose another name or move it away"
        )
