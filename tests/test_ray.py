"""``flowgif batch --engine ray`` against a real Ray cluster: a head started as its own process.

The head runs with Ray's token authentication (the token in the environment of the head and
of the batch, as Ray documents), two CPUs, on a free port of this machine; it is stopped at
the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from flowgif.store import load_run
from tests.test_cli import SMOKE, call

RENDER = "--frames 8 --particles 400 --size 64"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """``HOST:PORT`` of a Ray head started with ``ray start`` (and its environment)."""
    ray_cli = Path(sys.executable).with_name("ray")
    assert ray_cli.is_file(), "the ray extra is not installed: pip install -e '.[test]'"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    start = [str(ray_cli), "start", "--head", "--num-cpus", "2", f"--port={port}",
             "--node-ip-address", "127.0.0.1", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True)


def pictures(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        img = Image.new("RGB", (40, 28), "white")
        ImageDraw.Draw(img).rectangle((3 + 6 * i, 3, 14 + 6 * i, 24), fill=(40 * i, 0, 0))
        img.save(folder / f"p{i}.png")
    return folder


def test_a_ray_batch_survives_a_killed_worker_reports_a_broken_file_and_reruns(
    cluster, tmp_path: Path
) -> None:
    address, env = cluster
    folder = pictures(tmp_path / "pics", 2)
    (folder / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    steps = 600  # long enough to be killed in the middle, with checkpoints every 20 steps
    command = [sys.executable, "-m", "flowgif", "batch", folder, "--out", out, "--config",
               SMOKE, "--steps", str(steps), "--engine", "ray", "--address", address,
               "--render-args", RENDER]  # fmt: skip
    batch = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-f", "ray::process_stack"], capture_output=True, text=True
            ).stdout.split()
            if found and list(out.glob("*/checkpoint.pt")):  # a picture is under way
                victim = int(found[0])
            time.sleep(0.1)
        assert victim is not None, "no Ray worker ran a picture"
        os.kill(victim, signal.SIGKILL)
        output, _ = batch.communicate(timeout=240)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 1, output  # the broken file failed; the rest did not
    items = {i["image"]: i for i in json.loads((out / "batch.json").read_text())["items"]}
    assert items["broken.png"]["status"] == "failed"
    for i in range(2):
        assert items[f"p{i}.png"]["status"] == "done", items
        run = out / f"p{i}"
        assert load_run(run).meta["step"] == steps
        assert all((run / f).is_file() for f in ("flow.gif", "eval.json", "picture.png"))
        logged = [int(line.split(",")[0]) for line in (run / "loss.csv").read_text().split()[1:]]
        assert logged == list(range(1, steps + 1))  # every step once: resumed, not repeated
        assert not [p for p in run.iterdir() if "~flowgif" in p.name]  # no temp left
    assert (out / "index.html").is_file()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 1 and again.stdout.count("skipped") >= 2, again.stdout


def test_the_ray_engine_says_how_to_install_it_when_missing(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    folder = pictures(tmp_path / "pics", 1)
    result = call("batch", folder, "--out", tmp_path / "out", "--config", SMOKE,
                  "--engine", "ray")  # fmt: skip
    assert result.exit_code == 1 and "pip install 'flowgif[ray]'" in result.output
    assert shutil.which("pgrep")  # the fault test above finds Ray's workers with it
