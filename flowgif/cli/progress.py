"""What a long command shows and hears while it runs: a progress bar, and Ctrl-C or SIGTERM
turned into a stop at the next step boundary."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from flowgif.cli.common import err_console

__all__ = ["Stop", "progress_bar", "stop_on_signals"]


class Stop:
    """Whether Ctrl-C or SIGTERM asked to stop (call it). ``at_once``: work with no step
    boundary to stop at (the exact flow, computed whole) is cut by the first signal."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.at_once = False

    def __call__(self) -> bool:
        return bool(self.asked)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Ctrl-C or SIGTERM (a scheduler's kill): finish the step, save, stop; exactly resumable.

    The first signal sets a flag that training reads between steps; a second Ctrl-C (or the
    first, for work with no steps: :attr:`Stop.at_once`) stops at once, keeping the last
    checkpoint as it was.
    """
    stop = Stop()

    def handler(signum: int, frame: object) -> None:
        if stop.at_once or (stop.asked and signum == signal.SIGINT):
            stop.asked.append(signum)
            raise KeyboardInterrupt
        if not stop.asked:
            os.write(2, b"\nstopping after this step (Ctrl-C again to stop at once)\n")
        stop.asked.append(signum)

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


class progress_bar:  # noqa: N801 - used as a context manager, reads like a function
    """A rich progress bar on a terminal; silent otherwise (loss.csv has everything)."""

    def __enter__(self) -> Callable[[Any], None]:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = None
        if not err_console.is_terminal:
            return lambda p: None
        self.bar = Progress(
            TextColumn("step {task.fields[step]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} it/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.bar.start()
        task = self.bar.add_task("train", total=1.0, step=0, loss=float("nan"), rate=0.0)

        def update(p: Any) -> None:
            self.bar.update(
                task,
                completed=p.fraction,
                step=p.step,
                loss=p.loss,
                rate=p.step / max(p.seconds, 1e-9),
            )

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
