"""Run folders: where a new run goes, and which folder holds the latest run."""

from __future__ import annotations

from pathlib import Path

from flowgif.errors import FlowgifError
from flowgif.store.checkpoint import CHECKPOINT

__all__ = ["check_new_run_dir", "find_latest_run", "new_run_dir"]


def new_run_dir(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3`` ... the first that is free (absent or an
    empty folder), so that nothing already there is overwritten."""
    path, k = Path(root) / name, 2
    while path.is_symlink() or (path.exists() and not (path.is_dir() and not any(path.iterdir()))):
        path, k = Path(root) / f"{name}-{k}", k + 1
    return path


def check_new_run_dir(path: Path) -> None:
    """Refuse to train a new run into ``path`` unless it is absent or an empty folder.

    Raises:
        FlowgifError: ``path`` is a file, or a folder with something in it (a run or not).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise FlowgifError(f"{path} exists and is not a folder; choose another run folder")
    if any(path.iterdir()):
        what = "a run" if (path / CHECKPOINT).exists() else "files"
        raise FlowgifError(f"{path} already holds {what}; choose another run folder, or resume it")


def find_latest_run(root: Path = Path("runs")) -> Path:
    """The most recently trained run folder under ``root``."""
    ckpts = sorted(Path(root).glob(f"*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FlowgifError(
            f"no trained run under {root}/; run `flowgif train --img IMAGE` first "
            "or name a run folder"
        )
    return ckpts[-1].parent
