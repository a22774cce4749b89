"""Train several methods on the same targets for the same wall-clock budget, then render each
run alone and all of them side by side from the same noise, and print their figures.

    python bench/compare.py --targets moons --methods default realnvp --seconds 60
    python bench/compare.py --targets moons checkerboard u1 img:imgs/star.png \\
        --methods default realnvp planar radial --seconds 60 --out docs/gallery

A target is a toy or energy name (``flowgif train --target``), ``img:PATH`` or ``text:WORD``;
a method is a config name (configs/NAME.toml). Each run trains in its own process with one
thread (``--jobs`` at once). Writes OUT/<target>.gif (all methods side by side, from the same
noise; with ``--each`` also OUT/<target>-<method>.gif) and prints a markdown table (steps, kl,
tv, on_ink, and kl_reverse for energies).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
RENDER = ["--size", "200", "--frames", "60", "--particles", "5000", "--dot", "1"]


def flowgif(*args: str) -> None:
    cmd = [sys.executable, "-m", "flowgif", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"failed: flowgif {' '.join(args)}\n{out.stderr[-1500:]}")


def name_of(target: str) -> str:
    kind, _, value = target.partition(":")
    return Path(value).stem if kind == "img" else value if kind == "text" else target


def source(target: str) -> list[str]:
    kind, _, value = target.partition(":")
    return {"img": ["--img", value], "text": ["--text", value]}.get(kind, ["--target", target])


def train_one(target: str, method: str, seconds: float, runs: Path, reuse: bool) -> Path:
    run = runs / f"{name_of(target)}-{method}"
    if not (reuse and (run / "eval.json").exists()):
        flowgif(
            "train", *source(target), "--config", str(ROOT / "configs" / f"{method}.toml"),
            "--minutes", f"{seconds / 60}", "--threads", "1", "--out", str(run),
        )  # fmt: skip
        flowgif("eval", str(run), "--threads", "1")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--targets", nargs="+", default=["moons"])
    ap.add_argument("--methods", nargs="+", default=["default", "realnvp"])
    ap.add_argument("--seconds", type=float, default=60.0, help="training budget per run")
    ap.add_argument("--out", type=Path, default=Path("compare"))
    ap.add_argument("--runs", type=Path, default=Path("runs/compare"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep runs that are already evaluated")
    ap.add_argument("--each", action="store_true", help="also one GIF per run")
    a = ap.parse_args()
    jobs = [(t, m) for t in a.targets for m in a.methods]
    with ThreadPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(lambda j: train_one(*j, a.seconds, a.runs, a.reuse), jobs))
    a.out.mkdir(parents=True, exist_ok=True)
    rows = ["| target | method | steps | kl | tv | on_ink | kl_reverse |", "|---" * 7 + "|"]
    for (target, method), run in zip(jobs, runs, strict=True):
        if a.each:
            flowgif("render", str(run), "--out", str(a.out / f"{run.name}.gif"), "--threads", "1",
                    *RENDER)  # fmt: skip
        e = json.loads((run / "eval.json").read_text())
        steps = len((run / "loss.csv").read_text().splitlines()) - 1
        rows.append(
            f"| {name_of(target)} | {method} | {steps} | {e['kl']:.3f} | {e['tv']:.3f} | "
            f"{e['on_ink']:.3f} | {e.get('kl_reverse', float('nan')):.3f} |"
        )
    for target in a.targets:
        mine = [str(r) for (t, _), r in zip(jobs, runs, strict=True) if t == target]
        out = a.out / f"{name_of(target)}.gif"
        flowgif("render", *mine, "--out", str(out), "--threads", "1", *RENDER)
    print(f"{a.seconds:g} s per run, one thread each, {a.jobs} at once\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
