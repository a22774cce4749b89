"""What a batch reports and how wide it runs: one item per file of the folder, the engines'
options, a stack of pictures as the engines pass it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BatchItem", "Chunk", "EngineOptions", "chunk_items"]


@dataclass
class EngineOptions:
    """Where and how wide a batch runs.

    Attributes:
        jobs: the local engine's worker processes (1: this process).
        address: the ray engine's cluster: ``None`` (start one here), ``auto`` (the one this
            machine belongs to) or ``ray://HOST:PORT`` / ``HOST:PORT``.
        cpus: CPUs each of Ray's tasks asks for (and the torch threads it uses).
        gpus: GPUs each of Ray's tasks asks for; a fraction lets several share one device.
    """

    jobs: int = 1
    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class BatchItem:
    """The outcome for one file of the folder.

    Attributes:
        image: the file's path relative to the batch folder.
        run: its run folder ("" when it has none).
        status: one of :data:`STATUSES`.
        reason: why it failed or was ignored, or a note ("resumed").
        seconds: time spent on it.
    """

    image: str
    run: str
    status: str
    reason: str = ""
    seconds: float = 0.0


Chunk = list[tuple[Path, Path, str]]  # a stack's ``(picture, run folder, label)`` s


def chunk_items(chunk: Chunk, status: str, reason: str) -> list[BatchItem]:
    """One item per picture of ``chunk``, all with ``status`` and ``reason`` (a stack whose
    worker died or that was never started)."""
    return [BatchItem(label, str(run), status, reason) for _, run, label in chunk]
