"""The exact flow: how fast (the CLI, end to end) and how close (the referee) on every picture.

    python bench/exact.py                       # imgs/*.png and github.png, 3 timed repeats
    python bench/exact.py --images imgs/star.png --repeat 5

For each picture: ``flowgif train --img P --method exact`` then the default ``flowgif render``
(120 frames, 20,000 particles, 512 px, one thread), timed as whole processes (median of
``--repeat``); the exact flow's 100,000 samples scored by the independent referee
(../shared/referee/score.py: tv, tv_floor, on_ink) and ``flowgif eval``'s kl. Prints a markdown
table (bench/EXACT.md keeps one); the teacher's table (the exact target against the pairs')
comes from ``bench/fidelity.py`` rows named fm-conditional and fm-exact-target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GITHUB = SHARED / "bench-imgs" / "github.png"


def flowgif(*args: object, cwd: Path) -> float:
    """Run one flowgif command in its own process; its wall time in seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flowgif", *map(str, args)], cwd=cwd, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"flowgif {' '.join(map(str, args))} failed: {done.stderr[-500:]}")
    return time.perf_counter() - clock


def row(picture: Path, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        train, render, both = [], [], []
        for i in range(repeat):
            run = where / f"run{i}"
            a = flowgif("train", "--img", picture, "--method", "exact", "--out", run, cwd=where)
            b = flowgif("render", run, "--threads", "1", cwd=where)
            train.append(a)
            render.append(b)
            both.append(a + b)
        run = where / "run0"
        flowgif("sample", run, "--n", 100_000, "--out", where / "s.npy", "--threads", 1, cwd=where)
        flowgif("eval", run, "--threads", 1, cwd=where)
        figures = json.loads((run / "eval.json").read_text())
        judged = subprocess.run(
            [sys.executable, str(SHARED / "referee" / "score.py"), str(picture),
             str(where / "s.npy"), "--json"], capture_output=True, text=True, check=True,
        )  # fmt: skip
        referee = json.loads(judged.stdout)
    return {
        "picture": picture.name,
        "train_s": statistics.median(train),
        "render_s": statistics.median(render),
        "total_s": statistics.median(both),
        "tv": referee["tv"],
        "tv_floor": referee["tv_floor"],
        "on_ink": referee["on_ink"],
        "kl": figures["kl"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", nargs="*", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    images = a.images or [*sorted(str(p) for p in (ROOT / "imgs").glob("*.png")), str(GITHUB)]
    print("| picture | train s | render s | both s (median) | tv | tv_floor | on_ink | kl |")
    print("|---|---|---|---|---|---|---|---|")
    for image in images:
        r = row(Path(image).resolve(), a.repeat)
        print(
            f"| {r['picture']} | {r['train_s']:.1f} | {r['render_s']:.1f} | {r['total_s']:.1f} "
            f"| {r['tv']:.4f} | {r['tv_floor']:.4f} | {r['on_ink']:.4f} | {r['kl']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
