"""Batches: every picture of a folder trained, rendered and evaluated, resumable.

``scan`` sorts the folder out, ``work`` processes one stack of pictures (skip, resume or redo
each; never raises for a bad picture), the engines run the stacks (``local``: this machine's
processes; ``ray``: a Ray cluster), and ``runner`` ties them together with ``batch.json`` and
the gallery.
"""

from __future__ import annotations

from flowgif.batch.runner import ENGINES, STATUSES, run_batch, summary, write_summary
from flowgif.batch.scan import PICTURE_SUFFIXES, Scan, run_names, scan
from flowgif.batch.work import BatchItem, EngineOptions, process_stack, write_thumbnail

__all__ = [
    "ENGINES",
    "PICTURE_SUFFIXES",
    "STATUSES",
    "BatchItem",
    "EngineOptions",
    "Scan",
    "process_stack",
    "run_batch",
    "run_names",
    "scan",
    "summary",
    "write_summary",
    "write_thumbnail",
]
