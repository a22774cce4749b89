"""The sampler of a trained run: rk4 with equal steps against steps crowded toward t = 1.

    python bench/sampler.py RUN PICTURE      # e.g. a run of `flowgif train --img imgs/flow.png`
    python bench/sampler.py RUN PICTURE --handoff   # where the network loses to its teacher

Draws 50,000 points of RUN's trained field from the same noise with classic rk4, its steps
ending at ``1 - (1 - u)^warp`` for ``u`` evenly spaced (warp 1: equal steps; 2: flowgif's
``solve.warp`` default), for 9, 16 and 64 steps, and scores each with the independent referee
(../shared/referee/score.py: tv, on_ink). Prints a markdown table (bench/EXACT.md keeps one):
what the network learned, separated from how it is integrated. ``--handoff``: the network from
t = 0 to T, then flow matching's exact target (its posterior table) from T to 1, 64 rk4 steps
in all: where along the flow the network's error costs the picture.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "referee"))

import score as referee  # noqa: E402

from flowgif.flows.posterior import Posterior, Table  # noqa: E402
from flowgif.store import load_run  # noqa: E402


def rk4(field, grid: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    for a, b in itertools.pairwise(grid):
        h, t = float(b - a), torch.tensor(float(a))
        k1 = field(t, x)
        k2 = field(t + h / 2, x + h / 2 * k1)
        k3 = field(t + h / 2, x + h / 2 * k2)
        k4 = field(torch.tensor(float(b)), x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def main() -> None:
    run_path, picture = Path(sys.argv[1]), sys.argv[2]
    if "--handoff" in sys.argv:
        return handoff(run_path, picture)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run = load_run(run_path)
    z = run.flow.starts(50_000, torch.Generator().manual_seed(0))
    print(f"{run_path.name}: {picture}")
    print("| rk4 steps | warp | NFE | tv | on_ink |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for steps in (9, 16, 64):
            for warp in (1.0, 2.0):
                grid = 1 - (1 - np.linspace(0, 1, steps + 1)) ** warp
                x = rk4(run.flow.field, grid, z)
                r = referee.score(picture, run.density.to_pixels(x), cells=64)
                print(f"| {steps} | {warp:g} | {4 * steps + 1} | {r['tv']:.4f} | "
                      f"{r['on_ink']:.4f} |")  # fmt: skip


def handoff(run_path: Path, picture: str) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run = load_run(run_path)
    table = Table(Posterior(run.density))

    def teacher(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return table.velocity(t.expand(len(x)), x)

    z = run.flow.starts(50_000, torch.Generator().manual_seed(0))
    print(f"{run_path.name}: {picture}, the network until T, then the teacher")
    print("| T | tv | on_ink |")
    print("|---|---|---|")
    with torch.no_grad():
        for end in (0.0, 0.5, 0.9, 0.95, 0.98, 1.0):
            n = round(64 * end)
            x = rk4(run.flow.field, np.linspace(0, end, n + 1), z) if n else z
            x = rk4(teacher, np.linspace(end, 1, 64 - n + 1), x) if n < 64 else x
            r = referee.score(picture, run.density.to_pixels(x), cells=64)
            print(f"| {end:g} | {r['tv']:.4f} | {r['on_ink']:.4f} |")


if __name__ == "__main__":
    main()
