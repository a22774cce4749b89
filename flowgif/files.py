"""Writing files without losing any: temp names, atomic renames, stale temps, frame folders.

Every output is written under a temporary name beside its target and renamed over it only once
it is complete and checked, so a failure at any point (a full disk, a killed process, a failed
encoder) leaves the previous file whole. Temporary names say who made them,
``.NAME.~flowgif@HOST@PID@XXXX[.suffix]``, so that a later run can remove the ones left by a
process that is gone, and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from flowgif.errors import FlowgifError

__all__ = [
    "FRAMES_MARKER",
    "SIGNATURE",
    "atomic_write",
    "atomic_write_text",
    "check_frames_folder",
    "check_replaceable",
    "made_by_flowgif",
    "os_reason",
    "replace_folder",
    "sweep_stale",
    "temp_folder",
    "temp_name",
    "umask",
]

TAG = "~flowgif"
SIGNATURE = "made with flowgif"  # in the GIF comment, WebP XMP, PNG Software, MP4 comment
FRAMES_MARKER = ".flowgif-frames"  # a PNG-frames folder that flowgif wrote holds this file
FRAME_NAME = re.compile(r"frame_\d{4,}\.png")
_STALE = re.compile(rf"\.{re.escape(TAG)}@(?P<host>[^@/]*)@(?P<pid>\d+)@")


def umask() -> int:
    """The process umask (to give temp files the permissions a plain open() would)."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def os_reason(err: OSError) -> str:
    """A short reason for an OS error ("No space left on device")."""
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or str(err)


def _host() -> str:
    return socket.gethostname().replace("@", "_").replace("/", "_")


def _prefix(path: Path) -> str:
    return f".{path.name}.{TAG}@{_host()}@{os.getpid()}@"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: Path, name: str | None = None) -> int:
    """Remove temporaries in ``folder`` left by dead flowgif processes of this host.

    Args:
        folder: where to look.
        name: only the temporaries of this output name (all of them when None).

    Returns:
        How many were removed.
    """
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    host = _host()
    for entry in entries:
        if not entry.name.startswith(f".{name}.{TAG}@" if name else "."):
            continue
        match = _STALE.search(entry.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], suffix: str = "") -> None:
    """Write ``path`` through ``write(file)`` into a temp file, fsync, then rename over it.

    A crash at any point leaves either the old file or the new one, never half of one; the
    temp file's name keeps the target's suffix (writers that go by name need it).

    Raises:
        FlowgifError: the folder cannot be made or written (a full disk, no permission), or
            ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise FlowgifError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(
            prefix=_prefix(path), suffix=suffix or path.suffix, dir=path.parent
        )
    except OSError as err:
        raise FlowgifError(f"cannot write to {path.parent}: {os_reason(err)}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give what open() would
        with open(tmp, "wb") as f:  # f.name is the temp path, for writers that need a name
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise FlowgifError(f"cannot write {path}: {os_reason(err)}") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def temp_name(target: Path) -> Path:
    """A temporary name beside ``target`` (same suffix) that :func:`sweep_stale` knows."""
    import secrets

    return target.parent / f"{_prefix(target)}{secrets.token_hex(4)}{target.suffix}"


def temp_folder(target: Path) -> Path:
    """A new empty folder beside ``target`` with a temporary name (usual permissions)."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), dir=parent))
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; give what mkdir would
    except OSError as err:
        raise FlowgifError(f"cannot write to {parent}: {os_reason(err)}") from None
    return tmp


def _is_frames_folder(folder: Path) -> bool:
    """Empty, or holding only what flowgif writes into a frames folder (marker present)."""
    names = [p.name for p in folder.iterdir() if not _STALE.search(p.name)]
    if not names:
        return True
    return FRAMES_MARKER in names and all(
        n == FRAMES_MARKER or FRAME_NAME.fullmatch(n) for n in names
    )


def check_frames_folder(out: Path) -> None:
    """Refuse a PNG-frames output that would replace something flowgif did not write.

    ``out`` may be new, an empty folder, or a frames folder flowgif wrote before.

    Raises:
        FlowgifError: ``out`` is a file, the current folder (or holds it), or a folder with
            other files in it.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise FlowgifError(
            f"{out} exists and is not a folder: PNG frames go into a new folder; give "
            "another name (or a .gif, .mp4 or .webp file)"
        )
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise FlowgifError(
            f"{out} is the current folder (or holds it): PNG frames go into a new folder of "
            "their own; give its name"
        )
    if not _is_frames_folder(out):
        raise FlowgifError(
            f"{out} is a folder with other files in it: flowgif writes PNG frames only into "
            "a new or empty folder, or over frames it wrote there before; give a new folder"
        )


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing a frames folder flowgif wrote.

    The old folder is moved aside first and removed only once the new one is in place, and
    only if it still holds nothing but frames.
    """
    check_frames_folder(out)
    try:
        if out.exists():
            old = temp_folder(out)
            os.replace(out, old / "old")
            os.replace(tmp, out)
            if _is_frames_folder(old / "old"):
                shutil.rmtree(old)
            else:  # something appeared there meanwhile: keep it, beside the output
                keep, k = out.with_name(f"{out.name}.previous"), 2
                while keep.exists():
                    keep, k = out.with_name(f"{out.name}.previous-{k}"), k + 1
                os.replace(old / "old", keep)
                old.rmdir()
        else:
            os.replace(tmp, out)
    except OSError as err:
        raise FlowgifError(f"cannot write {out}: {os_reason(err)}") from None


def write_marker(folder: Path, frames: int) -> None:
    """The file that says ``folder`` holds frames flowgif wrote (and may replace)."""
    (folder / FRAMES_MARKER).write_text(json.dumps({"frames": frames}) + "\n", encoding="utf-8")


def made_by_flowgif(path: Path) -> bool:
    """Whether the file at ``path`` is one flowgif writes: a GIF, WebP, PNG or MP4 carrying
    :data:`SIGNATURE`, samples (an ``(N, 2)`` float32 ``.npy``), flowgif's JSON reports or
    its gallery page (an HTML ``generator`` meta tag)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".gif", ".webp", ".png"):
            from PIL import Image

            with Image.open(path) as img:
                found = [img.info.get("comment"), img.info.get("xmp"), img.info.get("Software")]
            return any(SIGNATURE in _text(v) for v in found)
        if suffix == ".mp4":
            with open(path, "rb") as f:
                head = f.read(1 << 20)  # faststart: the metadata is in the first boxes
            return SIGNATURE.encode() in head
        if suffix == ".npy":
            import numpy as np

            a = np.load(path, mmap_mode="r", allow_pickle=False)
            return a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 2
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and ("items" in data or "kl" in data)
        if suffix == ".html":
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
            return f'<meta name="generator" content="{SIGNATURE}">' in head
    except Exception:  # unreadable or another format under that suffix: not flowgif's
        return False
    return False


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def check_replaceable(path: Path) -> None:
    """Refuse to replace an existing file at ``path`` that flowgif did not write.

    Files inside a run folder (one holding ``checkpoint.pt``) are flowgif's to replace.

    Raises:
        FlowgifError: ``path`` is a folder, or a file flowgif did not write.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise FlowgifError(f"cannot write {path}: it is a folder")
    if (path.parent / "checkpoint.pt").is_file() and not path.is_symlink():
        return
    if path.is_symlink() or not made_by_flowgif(path):
        raise FlowgifError(
            f"{path} exists and flowgif did not write it; choose another name or move it away"
        )
