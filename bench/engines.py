"""The same batch by the local engine and by Ray on this machine: Ray's overhead in seconds.

Eight pictures (the four of imgs/ and four words drawn the same way), each trained for the
same steps with the same config and rendered small, first by ``--engine local --jobs N``,
then by ``--engine ray`` (a cluster Ray starts on this machine with N CPUs, one per picture),
each into a fresh folder, each timed end to end as a user runs it (a new process). Prints a
table and writes it to bench/ENGINES.md.

    python bench/engines.py --steps 300 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pictures(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "imgs"))
    from make_imgs import word

    for p in sorted((ROOT / "imgs").glob("*.png")):
        (folder / p.name).write_bytes(p.read_bytes())
    for text in ("ray", "gif", "ode", "cnf"):
        word(text).save(folder / f"{text}.png")


def run(folder: Path, out: Path, args: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "flowgif", "batch", str(folder), "--out", str(out), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    clock = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return seconds, json.loads((out / "batch.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--config", default="fast")
    a = ap.parse_args()
    render = "--frames 40 --particles 4000 --size 192"
    common = ["--config", a.config, "--steps", str(a.steps), "--render-args", render]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pics"
        folder.mkdir()
        pictures(folder)
        for name, extra in (
            (f"local, --jobs {a.jobs}", ["--jobs", str(a.jobs)]),
            ("ray, a cluster started here", ["--engine", "ray"]),
        ):
            out = Path(tmp) / name.split(",")[0]
            seconds, report = run(folder, out, common + extra)
            rows.append((name, seconds, report["done"], report["failed"]))
            print(f"{name}: {seconds:.1f} s, {report['done']} done", flush=True)
    base = rows[0][1]
    lines = [
        "# Engines: the same batch, local and on Ray (measured)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Eight pictures (imgs/ and four words), config "
        f"`{a.config}` with `--steps {a.steps}`, render `{render}`; wall time of the whole "
        "`flowgif batch` command (train, render, eval, gallery), a new process each.",
        "",
        f"Command: `python bench/engines.py --steps {a.steps} --jobs {a.jobs}`",
        "",
        "| engine | wall s | done | failed | vs local |",
        "|---|---|---|---|---|",
        *[f"| {n} | {s:.1f} | {d} | {f} | {s - base:+.1f} s |" for n, s, d, f in rows],
        "",
    ]
    (ROOT / "bench" / "ENGINES.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
