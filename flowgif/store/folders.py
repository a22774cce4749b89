"""Run folders: claimed atomically, marked as flowgif's, named safely; the latest run.

A run folder is flowgif's when it holds :data:`MARKER`, a file only flowgif writes: its format,
a random id, what made the folder (``train``, ``batch``, ``morph``) and the hash of the picture
it was made for. The marker is created exclusively (a hard link of a finished temporary
file, which fails if the name exists), so two processes can never claim one folder; a name,
or a ``checkpoint.pt`` inside, proves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from flowgif.errors import FlowgifError
from flowgif.files import os_reason, printable, temp_name
from flowgif.owned import MARKER, MARKER_FORMAT, read_marker
from flowgif.store.checkpoint import CHECKPOINT

__all__ = [
    "MARKER",
    "adopt",
    "check_marked",
    "check_new_run_dir",
    "claim",
    "claim_marked",
    "find_latest_run",
    "hold",
    "in_use",
    "let_go",
    "new_run_dir",
    "read_marker",
    "release",
    "safe_name",
]

MAX_NAME_BYTES = (
    120  # a run name's UTF-8 bytes (file systems allow 255; -N and temp names need room)
)
_CLAIMED: set[str] = set()  # the ids of the folders this process claimed
# What reruns pick up where an earlier process left a claimed, still empty folder (a batch's
# picture, a morph's leg); ``train`` never shares a folder, even one claimed for its picture.
REUSED = ("batch", "morph")


def safe_name(name: str) -> str:
    """``name`` as a folder name that every file system takes: characters that cannot be
    encoded (undecodable bytes of a file name) written as ``_xNN``, a newline or other
    control character as ``_``, and a name over :data:`MAX_NAME_BYTES` bytes cut with a
    short hash of the whole, so that distinct long names stay distinct."""
    raw = name.encode("utf-8", "surrogateescape")
    text = printable(name).replace("\\x", "_x")
    text = "".join("_" if (c < " " or c == "\x7f" or c in "/\\") else c for c in text)
    text = text.strip() or "picture"
    data = text.encode("utf-8")
    if len(data) <= MAX_NAME_BYTES:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = data[: MAX_NAME_BYTES - 9].decode("utf-8", "ignore")
    return f"{cut}-{digest}"


def _write_marker(folder: Path, made_by: str, picture: str) -> str | None:
    """Create ``folder``'s marker exclusively; its id, or None when one is there already."""
    ident = secrets.token_hex(8)
    record = {"format": MARKER_FORMAT, "id": ident, "made_by": made_by, "picture": picture}
    tmp = temp_name(folder / MARKER)
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    try:
        os.link(tmp, folder / MARKER)  # fails if the name exists: the claim is exclusive
    except FileExistsError:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return ident


def claim_marked(folder: Path, made_by: str, picture: str = "") -> None:
    """Give a run folder flowgif made before it marked its folders its marker (the caller has
    proved every file in it flowgif's); a no-op if another process marked it meanwhile.

    Raises:
        FlowgifError: the folder cannot be written.
    """
    try:
        _write_marker(Path(folder), made_by, picture)
    except OSError as err:
        raise FlowgifError(f"cannot write to {folder}: {os_reason(err)}") from None


def claim(folder: Path, made_by: str, picture: str = "") -> bool:
    """Claim ``folder`` for a new run: create it (or take it when it is an empty folder),
    then create its marker exclusively. False when it cannot be claimed: it is a symlink, a
    file, a folder holding anything, or another process claimed it first.

    Raises:
        FlowgifError: the folder cannot be created or written (permissions, a full disk).
    """
    folder = Path(folder)
    if folder.is_symlink():
        return False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            if folder.is_symlink() or not folder.is_dir() or any(folder.iterdir()):
                return False
        ident = _write_marker(folder, made_by, picture)
        if ident is None:
            return False
    except OSError as err:
        raise FlowgifError(f"cannot write to {folder}: {os_reason(err)}") from None
    _CLAIMED.add(ident)
    return True


def claimed_here(folder: Path) -> bool:
    """Whether this process claimed ``folder`` (and nothing but the marker is in it yet)."""
    marker = read_marker(folder)
    return marker is not None and marker["id"] in _CLAIMED


def adopt(folder: Path, made_by: str, picture: str) -> bool:
    """Take over a folder that holds nothing but a marker of ``made_by`` for ``picture``
    (claimed by an earlier process that stopped before writing into it); False otherwise."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None or (marker["made_by"], marker.get("picture")) != (made_by, picture):
        return False
    if any(p.name != MARKER for p in folder.iterdir()):
        return False
    hold(folder)  # the process that claimed it may still be starting: then it is in use
    let_go(folder)  # only a test: the one who works in it holds it (open_run, a batch)
    _CLAIMED.add(marker["id"])
    return True


def release(folder: Path) -> None:
    """Remove a folder this process claimed and never wrote into (a run that failed before
    its first checkpoint); anything else is left as it is."""
    folder = Path(folder)
    if not claimed_here(folder):
        return
    if any(p.name != MARKER for p in folder.iterdir()):
        return
    (folder / MARKER).unlink(missing_ok=True)
    let_go(folder, all_holds=True)
    folder.rmdir()


def new_run_dir(root: Path, name: str, made_by: str = "train", picture: str = "") -> Path:
    """Claim ``root/name``, or ``root/name-2``, ``-3`` ... the first that can be claimed
    (:func:`claim`), so that nothing already there is overwritten and no two processes
    share one."""
    base = safe_name(name)
    path, k = Path(root) / base, 2
    while not claim(path, made_by, picture):
        path, k = Path(root) / f"{base}-{k}", k + 1
    return path


def check_new_run_dir(path: Path, made_by: str = "train", picture: str = "") -> None:
    """Claim ``path`` for a new run, or accept it when this process claimed it already.

    Raises:
        FlowgifError: ``path`` is a file or a symlink, a folder with something in it (a run
            or not), or another process claimed it first.
    """
    path = Path(path)
    if claimed_here(path) and not any(p.name != MARKER for p in path.iterdir()):
        return
    if claim(path, made_by, picture):
        return
    if made_by in REUSED and adopt(path, made_by, picture):
        return
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FlowgifError(f"{path} exists and is not a folder; choose another run folder")
    if path.is_dir() and any(p.name != MARKER for p in path.iterdir()):
        what = "a run" if (path / CHECKPOINT).exists() else "files"
        raise FlowgifError(f"{path} already holds {what}; choose another run folder, or resume it")
    raise FlowgifError(f"{path} was claimed by another flowgif at the same moment; choose another")


def check_marked(folder: Path, doing: str = "resume") -> None:
    """Refuse to write into ``folder`` unless flowgif's marker proves it made it (a
    ``checkpoint.pt`` copied beside a person's own files proves nothing).

    Raises:
        FlowgifError: no marker (or a symlink, or not flowgif's format).
    """
    if read_marker(folder) is None:
        raise FlowgifError(
            f"cannot {doing} {printable(folder)}: it is not a run folder flowgif made (it has "
            f"no {MARKER} marker), so flowgif will not write into it; copy its checkpoint.pt "
            "into a new folder of its own to go on from it"
        )


_HELD: dict[str, list[int]] = {}  # folders this process holds: [marker's open file, holds]


def hold(folder: Path) -> None:
    """Hold ``folder`` for this process alone while it works in it: an exclusive lock on its
    marker, which the system lets go when the process ends however it ends (so it is never
    stale). Holds are counted: each :func:`hold` wants one :func:`let_go`, and the lock goes
    with the last.

    Raises:
        FlowgifError: another process holds it (two batches into one folder, a resume of a
            run still training), or it has no marker.
    """
    import fcntl

    key = str(Path(folder).resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return
    try:
        fd = os.open(Path(folder) / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise FlowgifError(f"{printable(folder)} is not a run folder flowgif made") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FlowgifError(
            f"{printable(folder)} is in use by another flowgif process; run this again once "
            "it has finished"
        ) from None
    _HELD[key] = [fd, 1]


def let_go(folder: Path, all_holds: bool = False) -> None:
    """Give back one hold of ``folder`` (:func:`hold`), or every one; the lock goes with the
    last."""
    key = str(Path(folder).resolve())
    if key not in _HELD:
        return
    _HELD[key][1] -= 1
    if all_holds or _HELD[key][1] <= 0:
        os.close(_HELD.pop(key)[0])


def in_use(folder: Path) -> bool:
    """Whether another process holds ``folder`` now (a run training); False for a folder
    with no marker. (It holds the lock itself for an instant to find out.)"""
    try:
        hold(folder)
    except FlowgifError:
        return read_marker(folder) is not None
    let_go(folder)
    return False


def find_latest_run(root: Path = Path("runs")) -> Path:
    """The most recently trained run folder under ``root``."""
    ckpts = sorted(Path(root).glob(f"*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FlowgifError(
            f"no trained run under {root}/; run `flowgif train --img IMAGE` first "
            "or name a run folder"
        )
    return ckpts[-1].parent
