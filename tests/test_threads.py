"""Threads by measurement: each command uses the cores that are idle now (at least one), never
torch's every-core default, which a busy neighbour slows down (bench/THREADS.md); ``--threads``
and ``OMP_NUM_THREADS`` still decide when given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowgif import device
from tests.conftest import ROOT
from tests.test_cli import call


def test_the_idle_cores_decide_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert device.pick_threads(idle=0.0) == 1  # all busy: one thread, never none
    assert device.pick_threads(idle=0.6) == 1  # a core shared with a neighbour is not free
    assert device.pick_threads(idle=1.8) == 2
    assert device.pick_threads(idle=7.9) == 8


def test_omp_num_threads_is_the_users_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert device.pick_threads(idle=0.0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert device.pick_threads(idle=0.0) == 1


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="measures /proc/stat")
def test_busy_cores_are_measured_as_busy() -> None:
    """With a busy loop on every core this process may use, the measurement finds less than
    one idle core, so the default is one thread (a real measurement, no stand-in)."""
    cores = len(os.sched_getaffinity(0))
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from flowgif.device import idle_cores, pick_threads; "
                "print(idle_cores(0.5), pick_threads())",
            ],
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    idle, picked = done.stdout.split()
    assert float(idle) < 0.75 and int(picked) == 1, done.stdout


@pytest.mark.parametrize(("idle", "want"), [(0.3, 1), (2.0, 2)])
def test_every_command_takes_the_measured_default(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idle: float, want: int
) -> None:
    """The commands that let torch pick (render, sample, eval, plot) now take the measured
    count; ``--threads`` overrides it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "idle_cores", lambda window=0.1: idle)
    before = torch.get_num_threads()
    try:
        for args in (
            ("render", tiny_run, "--out", tmp_path / "a.gif", "--frames", 3, "--size", 48),
            ("sample", tiny_run, "--n", 100, "--out", tmp_path / "s.npy", "--force"),
            ("plot", tiny_run, "--kind", "loss", "--out", tmp_path / "p.png"),
        ):
            torch.set_num_threads(7)
            result = call(*args)
            assert result.exit_code == 0, result.output
            assert torch.get_num_threads() == want, args[0]
        torch.set_num_threads(7)
        assert call("sample", tiny_run, "--n", 100, "--out", tmp_path / "s.npy", "--force",
                    "--threads", 3).exit_code == 0  # fmt: skip
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
