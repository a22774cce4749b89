"""The optimal-transport flow: the two-leg chain's wall time and memory, each leg's figures, and
the solver alone on every pair.

    python bench/ot.py                    # both chains, --method ot and --method exact
    python bench/ot.py --skip-exact       # ot only
    python bench/ot.py --solver-only

Chains (each picture at most 512 px): imgs/badge.png -> imgs/flow.png -> imgs/star.png, and a
hard one made here: a field of 40 small blobs -> the maple-leaf silhouette of
../shared/bench-imgs/maple_leaf.jpg -> ../shared/bench-imgs/github.png (many pieces into
one, one into a ring with holes). For each: ``flowgif morph A B C --method M`` (defaults: 100
frames a leg, 20,000 particles, 512 px GIF) as one process on one thread, its wall time and
peak memory (max RSS); then ``flowgif eval LEG --transport 2000`` on each leg (tv, tv_floor,
on_ink against the leg's end picture, transport against exact discrete OT, kl). The solver
table: :func:`flowgif.flows.transport.plan_between` on each leg, in process (seconds,
iterations per grid, pairs kept, the end marginal's L1 error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "bench-imgs"


def blob_field(path: Path, seed: int = 0) -> Path:
    """40 dark discs of random sizes scattered on white, 512 px."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (512, 512), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = rng.uniform(40, 472, 2)
        r = rng.uniform(6, 22)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    img.save(path)
    return path


def silhouette(path: Path) -> Path:
    """The maple leaf as a solid dark silhouette (its darker pixels), at most 512 px."""
    img = Image.open(SHARED / "maple_leaf.jpg").convert("L")
    img.thumbnail((512, 512))
    a = np.asarray(img)
    Image.fromarray(np.where(a < 200, 0, 255).astype(np.uint8)).save(path)
    return path


def measured(args: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``flowgif ARGS`` in a fresh process on one thread: wall seconds, peak RSS in MB."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "flowgif", *args]
    clock = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"flowgif {' '.join(args)} failed: {done.stderr[-800:]}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024


def evaluate(leg: Path, cwd: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "flowgif", "eval", str(leg), "--transport", "2000"]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"eval {leg} failed: {done.stderr[-800:]}")
    return json.loads((leg / "eval.json").read_text())


def chains(tmp: Path) -> list[list[Path]]:
    return [
        [ROOT / "imgs" / "badge.png", ROOT / "imgs" / "flow.png", ROOT / "imgs" / "star.png"],
        [blob_field(tmp / "blobs.png"), silhouette(tmp / "leaf.png"), SHARED / "github.png"],
    ]


def chain_rows(tmp: Path, methods: list[str]) -> None:
    print("| chain | method | wall s | peak MB | leg | tv | tv_floor | on_ink | transport | kl |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pics in chains(tmp):
        name = " -> ".join(p.stem for p in pics)
        for method in methods:
            runs = tmp / f"{method}-{pics[0].stem}"
            out = tmp / f"{method}-{pics[0].stem}.gif"
            args = ["morph", *map(str, pics), "--method", method, "--runs", str(runs)]
            wall, mb = measured([*args, "--out", str(out), "--threads", "1"], tmp)
            for i, leg in enumerate(sorted(p for p in runs.iterdir() if p.is_dir()), 1):
                e = evaluate(leg, tmp)
                print(
                    f"| {name} | {method} | {wall:.1f} | {mb:.0f} | {i} | {e['tv']:.4f} | "
                    f"{e['tv_floor']:.4f} | {e['on_ink']:.4f} | {e['transport']:.4f} | "
                    f"{e['kl']:.4f} |",
                    flush=True,
                )


def solver_rows(tmp: Path) -> None:
    import torch

    from flowgif.config import load_config
    from flowgif.flows import transport
    from flowgif.sources import load_source, spec
    from flowgif.sources.noise import Noise

    torch.set_num_threads(1)
    dc = load_config("default").updated({"density.resolution": 512}).density
    print("\n| start -> end | grids | s | iterations per grid | pairs kept | end L1 error |")
    print("|---|---|---|---|---|---|")
    for pics in chains(tmp):
        ds = [load_source(spec(str(p)), dc).density for p in pics]
        for a, b, na, nb in [
            (ds[0], ds[1], pics[0].stem, pics[1].stem),
            (ds[1], ds[2], pics[1].stem, pics[2].stem),
            (Noise(), ds[2], "noise", pics[2].stem),
        ]:
            transport._PLANS.clear()
            clock = time.perf_counter()
            plan = transport.plan_between(a, b)
            s = time.perf_counter() - clock
            st = plan.stats
            print(
                f"| {na} -> {nb} | {st.grids[-1]} | {s:.2f} | {st.iterations} | "
                f"{st.pairs[-1]:,} | {st.error:.4f} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-exact", action="store_true", help="only --method ot")
    ap.add_argument("--solver-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        if not args.solver_only:
            chain_rows(where, ["ot"] if args.skip_exact else ["ot", "exact"])
        solver_rows(where)


if __name__ == "__main__":
    main()
