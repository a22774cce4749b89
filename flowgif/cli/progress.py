"""What a long command shows and hears while it runs: a progress bar, Ctrl-C or SIGTERM turned
into a stop at the next step boundary, and SIGUSR1 / SIGUSR2 into a pause there and its end."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from flowgif.cli.common import err_console

__all__ = ["Stop", "progress_bar", "stop_on_signals"]


PAUSE = getattr(signal, "SIGUSR1", None)  # pause at the next step boundary (POSIX)
GO_ON = getattr(signal, "SIGUSR2", None)  # continue


class Stop:
    """Whether Ctrl-C or SIGTERM asked to stop (call it between steps; while SIGUSR1 has paused
    the work, the call waits for SIGUSR2 or a stop). ``at_once``: work with no step boundary
    to stop at (the exact flow, computed whole) is cut by the first signal."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.at_once = False
        self.paused = False

    def __call__(self) -> bool:
        while self.paused and not self.asked:
            time.sleep(0.05)  # a signal's handler runs between these sleeps
        return bool(self.asked)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Ctrl-C or SIGTERM (a scheduler's kill): finish the step, save, stop; exactly resumable.

    The first signal sets a flag that training reads between steps; a second Ctrl-C (or the
    first, for work with no steps: :attr:`Stop.at_once`) stops at once, keeping the last
    checkpoint as it was. SIGUSR1 pauses training at the next step boundary (its clock stops
    with it), SIGUSR2 continues it.
    """
    stop = Stop()

    def pause(signum: int, frame: object) -> None:
        stop.paused = signum == PAUSE

    def handler(signum: int, frame: object) -> None:
        if stop.at_once or (stop.asked and signum == signal.SIGINT):
            stop.asked.append(signum)
            raise KeyboardInterrupt
        if not stop.asked:
            os.write(2, b"\nstopping after this step (Ctrl-C again to stop at once)\n")
        stop.asked.append(signum)

    handlers = {signal.SIGINT: handler, signal.SIGTERM: handler}
    handlers |= {sig: pause for sig in (PAUSE, GO_ON) if sig is not None}
    try:
        old = {sig: signal.signal(sig, fn) for sig, fn in handlers.items()}
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
