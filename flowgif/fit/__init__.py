"""Fitting flows: one training loop (:mod:`~flowgif.fit.loop`) that drives a solo stepper (any
objective) or a stacked one (M flow-matching runs as one model), run folders being trained, and
morphs (one run per leg).
"""

from __future__ import annotations

from flowgif.fit.folder import RunFolder, open_run, train_opened, train_run
from flowgif.fit.loop import MAX_RETRIES, Outcome, Progress, TrainResult, lr_factor, run_loop
from flowgif.fit.solo import train
from flowgif.fit.stack import auto_stack, stack_problem, train_stack

__all__ = [
    "MAX_RETRIES",
    "Outcome",
    "Progress",
    "RunFolder",
    "TrainResult",
    "auto_stack",
    "lr_factor",
    "open_run",
    "run_loop",
    "stack_problem",
    "train",
    "train_opened",
    "train_run",
    "train_stack",
]
