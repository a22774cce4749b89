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
    "alive",
    "atomic_write",
    "atomic_write_text",
    "check_frames_folder",
    "os_reason",
    "printable",
    "replace_folder",
    "sweep_stale",
    "temp_folder",
    "temp_name",
    "umask",
]

TAG = "~flowgif"
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


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (this process is)."""
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
        if not match or match["host"] != host or alive(int(match["pid"])):
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
        if isinstance(err, RuntimeError) and _full(path.parent, err):
            raise FlowgifError(f"cannot write {path}: no space left on the device") from None
        raise


def _full(folder: Path, err: Exception) -> bool:
    """Whether a writer's own error (torch's ``file write failed``, its ``unexpected pos``)
    came from a full disk: the writer says so, or ``folder``'s disk has no room left."""
    text = str(err).lower()
    if "no space" in text:
        return True
    if "write failed" not in text and "unexpected pos" not in text:
        return False
    try:
        st = os.statvfs(folder)
    except OSError:
        return True
    return st.f_bavail * st.f_frsize < 1024 * 1024


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


def _digest(path: Path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _is_frames_folder(folder: Path) -> bool:
    """Empty, or holding only frames flowgif wrote there, each byte for byte as its marker
    (:data:`FRAMES_MARKER`) records it: a frame edited since, one added, a folder named like
    a frame, anything else, and a marker without the frames' hashes, prove nothing."""
    entries = [p for p in folder.iterdir() if not _STALE.search(p.name)]
    if not entries:
        return True
    try:
        record = json.loads((folder / FRAMES_MARKER).read_text(encoding="utf-8"))
        files = record["files"]
        if not isinstance(files, dict):
            return False
        for entry in entries:
            if entry.name == FRAMES_MARKER:
                continue
            if entry.is_symlink() or not entry.is_file() or not FRAME_NAME.fullmatch(entry.name):
                return False
            if files.get(entry.name) != _digest(entry):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return not (folder / FRAMES_MARKER).is_symlink()


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
            f"{out} holds files flowgif did not write there (or changed since): flowgif "
            "writes PNG frames only into a new or empty folder, or over its own unchanged "
            "frames; give a new folder"
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
    """The file that says ``folder`` holds frames flowgif wrote, with each frame's hash, so
    that a later render replaces exactly those frames and nothing a person put there since."""
    files = {p.name: _digest(p) for p in sorted(folder.iterdir()) if FRAME_NAME.fullmatch(p.name)}
    record = {"frames": frames, "files": files}
    (folder / FRAMES_MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")


def printable(name: object) -> str:
    """A path or name as text that can be printed and written anywhere: bytes that did not
    decode as UTF-8 (a file name from another system) are shown as ``\\xNN``."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
