"""Trainings the page starts: each an ordinary ``flowgif train ... --live`` command, run as
its own process, at most ``workers`` at once (the rest wait in a queue of :data:`QUEUE`;
beyond it, 503).

A command starts in a flowgif process started ahead of it (``python -m flowgif.cli.ready``:
torch and training already imported), so that its first step comes a second after Train
rather than three; one such process is kept ready. It trains with ``--threads`` leaving one
core of this machine to the page and its server.

Pause and continue are SIGUSR1 and SIGUSR2 (the command pauses at a step boundary, its clock
stopped); stop is SIGTERM (it stops at the next step boundary with its checkpoint, as Ctrl-C
does). A training no page has watched for :data:`GRACE` seconds (its tab closed) is stopped
so, unless the page asked it to keep training. How it ended is the command's own: its exit
status and its last line (``done: ...``, ``interrupted: ...``, ``error: ...``); killed by a
signal (SIGKILL) it is said so, and its folder resumes from its last checkpoint.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowgif.files import printable

__all__ = ["GRACE", "QUEUE", "BusyError", "Training", "Trainings", "threads_for"]

QUEUE = 4  # trainings that may wait for a place; beyond them, 503
KEPT = 64  # ended trainings whose state is still answered
GRACE = 5.0  # seconds a training may go unwatched before it is stopped (keep: never)
RUNNING = ("starting", "training", "paused", "stopping")


class BusyError(Exception):
    """Every place and the queue are taken."""


def threads_for(workers: int) -> int:
    """Torch threads per training: the cores less one (the page's), shared, at least one."""
    return max(1, ((os.cpu_count() or 1) - 1) // workers)


@dataclass
class Training:
    """One training the page started.

    ``state``: ``queued``, ``starting`` (the command opens the run), ``training``,
    ``paused``, ``stopping``, then ``done``, ``stopped`` (a checkpoint kept), ``failed``,
    ``killed`` or ``cancelled`` (never started)."""

    name: str
    folder: Path
    args: list[str]
    keep: bool = False
    state: str = "queued"
    line: str = ""
    code: int | None = None
    proc: subprocess.Popen | None = None
    seen: float = field(default_factory=time.monotonic)
    watchers: int = 0
    started: float = 0.0
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))

    @property
    def command(self) -> str:
        return "flowgif " + " ".join(shlex.quote(a) for a in self.args)

    def status(self) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "line": self.line,
            "command": self.command,
            "keep": self.keep,
        }


class Trainings:
    """The trainings of one server (module docstring).

    Args:
        workers: trainings at once.
        queue: trainings that may wait; beyond them :class:`BusyError`.
    """

    def __init__(self, workers: int = 1, queue: int = QUEUE) -> None:
        self.workers, self.queue = workers, queue
        self.lock = threading.RLock()
        self.all: dict[str, Training] = {}  # by run name, the latest of each
        self.ready: subprocess.Popen | None = None
        self.closed = False
        self._watcher: threading.Thread | None = None

    def start(self, name: str, folder: Path, args: list[str], keep: bool) -> Training:
        """Start (or queue) ``flowgif ARGS`` training the run ``folder`` named ``name``.

        Raises:
            BusyError: every place and the queue are taken.
        """
        with self.lock:
            running = sum(t.state in RUNNING for t in self.all.values())
            queued = sum(t.state == "queued" for t in self.all.values())
            if running >= self.workers and queued >= self.queue:
                raise BusyError
            t = Training(name, folder, args, keep)
            self.all[name] = t
            ended = [k for k, u in self.all.items() if u.state not in (*RUNNING, "queued")]
            for k in ended[: max(0, len(ended) - KEPT)]:  # the oldest ended are forgotten
                del self.all[k]
            self._watch()
            self._advance()
            return t

    def prepare(self) -> None:
        """Start the process the next training will run in (a picture is on a page: Train
        may come), unless one is ready."""
        with self.lock:
            if self.ready is None and not self.closed:
                self.ready = _ready_process()

    def get(self, name: str) -> Training | None:
        return self.all.get(name)

    def position(self, t: Training) -> int:
        """How many queued trainings are ahead of ``t`` (0: next)."""
        with self.lock:
            queued = [u for u in self.all.values() if u.state == "queued"]
            return queued.index(t) if t in queued else 0

    def signal(self, t: Training, what: str) -> None:
        """``pause``, ``continue`` or ``stop`` the training ``t`` (a queued one is dropped)."""
        with self.lock:
            if what == "stop" and t.state == "queued":
                t.state, t.line = "cancelled", "stopped before it started"
                return
            if t.proc is None or t.proc.poll() is not None:
                return
            if what == "pause" and t.state == "training":
                t.proc.send_signal(signal.SIGUSR1)
                t.state = "paused"
            elif what == "continue" and t.state == "paused":
                t.proc.send_signal(signal.SIGUSR2)
                t.state = "training"
            elif what == "stop" and t.state in ("starting", "training", "paused"):
                t.proc.send_signal(signal.SIGTERM)
                t.state = "stopping"

    def seen_by(self, t: Training, watching: int) -> None:
        """A page starts (``+1``) or ends (``-1``) watching ``t``."""
        with self.lock:
            t.watchers += watching
            t.seen = time.monotonic()

    def close(self) -> None:
        """The server is stopping: queued trainings never start, each running one stops with
        its checkpoint unless it was asked to keep training, and the ready process goes."""
        with self.lock:
            self.closed = True
            for t in self.all.values():
                if t.state == "queued":
                    t.state = "cancelled"
                elif t.state in RUNNING and not t.keep:
                    self.signal(t, "stop")
            if self.ready is not None:
                self.ready.kill()
                self.ready.wait()
                self.ready = None
        for t in list(self.all.values()):
            if t.proc is not None and not t.keep:
                try:
                    t.proc.wait(30)
                except subprocess.TimeoutExpired:
                    t.proc.kill()

    def _watch(self) -> None:
        """Start the thread that reaps ended trainings, starts queued ones and stops
        unwatched ones (every 0.1 s)."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._loop, daemon=True, name="trainings")
            self._watcher.start()

    def _loop(self) -> None:
        while not self.closed:
            time.sleep(0.1)
            with self.lock:
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        for t in self.all.values():
            unwatched = t.watchers <= 0 and now - t.seen > GRACE and not t.keep
            if t.state == "queued" and unwatched:
                t.state, t.line = "cancelled", "the page went away before it started"
            elif t.state in ("starting", "training", "paused") and unwatched:
                self.signal(t, "stop")
            if t.proc is not None and t.state in RUNNING:
                if t.state == "starting" and (t.folder / "live.pt").exists():
                    t.state = "training"
                code = t.proc.poll()
                if code is not None:
                    self._ended(t, code)
        self._advance()

    def _ended(self, t: Training, code: int) -> None:
        """Say how the command ended: its exit status and its last line."""
        t.code = code
        lines = [line for line in t.lines if line.strip() and line.strip() != "ready"]
        last = printable(lines[-1].strip()) if lines else ""
        if code == 0:
            t.state, t.line = "done", last or "done"
        elif code == 130:
            t.state, t.line = "stopped", last.removeprefix("interrupted: ") or "stopped"
        elif code < 0:
            from flowgif.owned import forget_written
            from flowgif.store import CHECKPOINT, LIVE

            name = signal.Signals(-code).name
            forget_written(t.folder / LIVE)  # what the killed command wrote for the page
            kept = (
                "its folder resumes from its last checkpoint (flowgif train --resume)"
                if (t.folder / CHECKPOINT).is_file()
                else "it was killed before its first checkpoint: there is nothing to resume"
            )
            t.state, t.line = "killed", f"the training was killed ({name}); {kept}"
        else:
            t.state, t.line = "failed", last.removeprefix("error: ") or f"exit status {code}"

    def _advance(self) -> None:
        """Start queued trainings while places are free; keep one process ready."""
        if self.closed:
            return
        running = sum(t.state in RUNNING for t in self.all.values())
        for t in self.all.values():
            if running >= self.workers:
                break
            if t.state == "queued":
                self._launch(t)
                running += 1
        if self.ready is None and running < self.workers + 1:
            self.ready = _ready_process()

    def _launch(self, t: Training) -> None:
        proc, self.ready = self.ready or _ready_process(), None
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(t.args) + "\n")
            proc.stdin.close()
        except OSError:  # the ready process is gone: a fresh one
            proc = _ready_process()
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(t.args) + "\n")
            proc.stdin.close()
        t.proc, t.state, t.started = proc, "starting", time.monotonic()
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=_read, args=(stream, t.lines), daemon=True).start()


def _ready_process() -> subprocess.Popen:
    """A flowgif process waiting for its command (:mod:`flowgif.cli.ready`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowgif.cli.ready"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # Ctrl-C in the server's terminal is the server's alone
    )


def _read(stream, lines: collections.deque) -> None:  # noqa: ANN001
    """Keep the last lines a command writes (read to the end, so it never blocks)."""
    for line in stream:
        lines.append(line.rstrip("\n"))
