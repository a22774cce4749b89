"""Nothing hangs and nothing is left running: a batch's workers end with their batch, a Ray
address where something else listens is one line in seconds, and the exact flow stops at the
first signal with exit 130 and no folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import SMOKE, assert_one_line_error, call
from tests.test_ownership import box

FLOWGIF = [sys.executable, "-m", "flowgif"]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(what, seconds: float = 120.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(every)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the workers")
def test_a_batchs_workers_end_when_its_process_is_killed(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    for i in range(3):
        box(pics / f"p{i}.png", (2 + i, 2, 14, 12))
    out = tmp_path / "out"
    batch = subprocess.Popen(
        [
            *FLOWGIF,
            "batch",
            str(pics),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--config",
            SMOKE,
            "--steps",
            "100000",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Triggered by progress, not by time: both workers have written a checkpoint.
        assert _wait_for(lambda: len(list(out.glob("*/checkpoint.pt"))) >= 2)
        workers = [p for p in _children(batch.pid) if _alive(p)]
        assert len(workers) >= 2
    finally:
        batch.kill()  # SIGKILL: the batch gets no chance to tell its workers
        batch.wait()
    assert _wait_for(lambda: not any(_alive(p) for p in workers), seconds=60), workers
    for run in out.glob("p*"):  # each stopped at a step boundary: its checkpoint is whole
        if (run / "checkpoint.pt").exists():
            from flowgif.store import load_checkpoint

            assert load_checkpoint(run / "checkpoint.pt", for_resume=True)["step"] > 0


@contextlib.contextmanager
def _listener(answer: str) -> Iterator[int]:
    """A TCP server on the loopback that is not Ray: it says nothing, closes at once, or
    speaks HTTP/1."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if answer == "close":
                conn.close()
            elif answer == "http":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                held.append(conn)
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("answer", ["silent", "close", "http"])
def test_a_ray_address_where_something_else_listens_is_one_line(
    tmp_path: Path, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    from flowgif.batch import ray as engine

    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", 2.0)
    box(tmp_path / "pics" / "a.png")
    with _listener(answer) as port:
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            done = call("batch", tmp_path / "pics", "--out", tmp_path / "out", "--engine",
                        "ray", "--address", address)  # fmt: skip
            assert_one_line_error(done, "not as a Ray cluster does")
    assert not (tmp_path / "out" / "a").exists()


def test_the_exact_flow_stops_at_the_first_signal(tmp_path: Path) -> None:
    """SIGTERM while the exact flow is computed: exit 130, as promised for an interrupted
    command, and no run folder unless the flow was whole before the signal (then it is kept and
    the last line says so); triggered once it says it is computing."""
    pic = box(tmp_path / "pic.png")
    proc = subprocess.Popen(
        [
            *FLOWGIF,
            "train",
            "--img",
            str(pic),
            "--method",
            "exact",
            "--resolution",
            "2048",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = ""
    while "computing" not in line:
        line = proc.stderr.readline()
        assert line, "it ended before it began computing"
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=20)  # seconds, not the whole solve
    assert proc.returncode == 130, rest  # never "done" and 0 once a signal came
    last = rest.strip().splitlines()[-1]
    assert last.startswith("interrupted") and "saved in" not in last, rest  # cut mid-way
    assert not (tmp_path / "run").exists(), list(tmp_path.iterdir())
