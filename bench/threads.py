"""Threads: each command quiet and beside busy processes, with its default and with 1 and 2
threads.

The commands are the installed ``flowgif`` (a subprocess each, ``OMP_NUM_THREADS`` unset so
the default is flowgif's own choice): the default render of an exact run (120 frames), a
sample of 200,000 points from a trained run, and a 30-s training (steps reached). "busy" runs
``--busy`` plain Python busy loops beside it (one: the neighbour a laptop always has). Prints a
table and writes bench/THREADS.md.

    python bench/threads.py                 # quiet and one busy neighbour, 1 round
    python bench/threads.py --rounds 3 --busy 1
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "imgs" / "flow.png"
FLOWGIF = shutil.which("flowgif") or "flowgif"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    clock = time.perf_counter()
    done = subprocess.run(
        [FLOWGIF, *args], cwd=cwd, env=_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"flowgif {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - clock, done.stdout + done.stderr


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--busy", type=int, default=1, help="busy loops beside (the busy rows)")
    parser.add_argument("--train-seconds", type=float, default=30.0)
    parser.add_argument("--only", nargs="*", default=["render", "sample", "train"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "THREADS.md")
    a = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flowgif-threads-"))
    exact, trained = work / "exact", work / "trained"
    _run(["train", "--img", str(PICTURE), "--method", "exact", "--out", str(exact)], work)
    _run(["train", "--img", str(PICTURE), "--steps", "200", "--out", str(trained)], work)
    minutes = f"{a.train_seconds / 60:.4f}"
    commands = {
        "render (exact run, 120 frames)": lambda t: _run(
            ["render", str(exact), "--out", str(work / "r.gif"), *t], work
        )[0],
        "sample 200,000": lambda t: _run(
            ["sample", str(trained), "--n", "200000", "--out", str(work / "s.npy"), "--force", *t],
            work,
        )[0],
        f"train {a.train_seconds:g} s (steps)": lambda t: _steps(
            _run(
                [
                    "train",
                    "--img",
                    str(PICTURE),
                    "--minutes",
                    minutes,
                    "--steps",
                    "1000000",
                    "--out",
                    str(work / f"t{time.monotonic_ns()}"),
                    *t,
                ],
                work,
            )[1]
        ),
    }
    commands = {k: v for k, v in commands.items() if k.split()[0] in a.only}
    modes = {"default": [], "--threads 1": ["--threads", "1"], "--threads 2": ["--threads", "2"]}
    rows = []
    for name, command in commands.items():
        for load in ("quiet", f"{a.busy} busy"):
            figures = {}
            for mode, flags in modes.items():
                values = []
                for _ in range(a.rounds):
                    neighbours = _busy(a.busy) if load != "quiet" else []
                    try:
                        time.sleep(0.3 if neighbours else 0)
                        values.append(command(flags))
                    finally:
                        for p in neighbours:
                            p.kill()
                            p.wait()
                figures[mode] = statistics.median(values)
            rows.append((name, load, figures))
            print(name, load, {k: round(v, 2) for k, v in figures.items()}, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    head = "| command | machine | default | --threads 1 | --threads 2 |\n|---|---|---|---|---|"
    lines = [
        f"| {n} | {load} | {f['default']:.1f} | {f['--threads 1']:.1f} | {f['--threads 2']:.1f} |"
        for n, load, f in rows
    ]
    table = "\n".join([head, *lines])
    print(table)
    a.out.write_text(
        "# Threads: each command quiet and beside a busy neighbour\n\n"
        f"`python bench/threads.py --rounds {a.rounds} --busy {a.busy} --only "
        f"{' '.join(a.only)}` on {platform.node()} "
        f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}); seconds "
        f"(median of {a.rounds}), train: steps reached in its time (more is better).\n\n"
        f"{table}\n"
    )


def _steps(output: str) -> float:
    found = re.search(r"(\d+) steps in", output)
    return float(found.group(1)) if found else float("nan")


if __name__ == "__main__":
    main()
