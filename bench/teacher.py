"""The teacher itself: flow matching's exact target integrated by a plain ODE solver.

    python bench/teacher.py                         # every bench picture, rk4 16/64/256 steps
    python bench/teacher.py --images imgs/star.png --steps 16 64 --resolution 512
    python bench/teacher.py --steps 9 16 --warp 2   # the steps a trained flow's sampler takes

For each picture, at the training resolution (``density.resolution``, default 256): the
posterior table a run regresses on (:class:`flowgif.flows.posterior.Table`, the one
``fm.target = "exact"`` reads) is integrated from N(0, I) by classic rk4 with equal steps from
t = 0 to t = 1 — no special last step — and 100,000 samples are scored by the independent referee
(../shared/referee/score.py: tv, tv_floor, on_ink). A trained network can reach at best what its
target reaches this way. Beside it, ``grid``: 100,000 exact samples of the working grid itself
(uniform in each cell), what any flow on that grid can reach (at 256 px a thin stroke's cells
are partly ink). Also timed: building the table. Prints a markdown table (bench/EXACT.md keeps
one).

Pictures: imgs/*.png (a colour badge, a word, shapes, a star), ../shared/bench-imgs/github.png
(a logo), maple_leaf.jpg (a colour photo), and a line drawing the script draws itself (thin
strokes, one pixel of anti-aliasing: where a teacher that treats cells as points caps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from flowgif.config import Config  # noqa: E402
from flowgif.flows.posterior import Posterior, Table  # noqa: E402
from flowgif.sources import load_source  # noqa: E402

N = 100_000


def line_art(size: int = 512) -> Image.Image:
    """Thin closed and open strokes (3 px wide at 512 px): rings, a spiral, a zig-zag."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    s = size / 512
    for r in (60, 110):
        d.ellipse([140 * s - r * s, 150 * s - r * s, 140 * s + r * s, 150 * s + r * s],
                  outline=0, width=max(1, round(3 * s)))  # fmt: skip
    pts = []
    for k in range(400):
        a = k / 400 * 5 * math.pi
        r = 8 + 20 * a
        pts.append((370 * s + r * math.cos(a) * s * 0.35, 360 * s + r * math.sin(a) * s * 0.35))
    d.line(pts, fill=0, width=max(1, round(3 * s)))
    zig = [(40 * s + 30 * k * s, (330 if k % 2 else 470) * s) for k in range(9)]
    d.line(zig, fill=0, width=max(1, round(3 * s)), joint="curve")
    return img


def pictures(tmp: Path) -> list[Path]:
    out = sorted((ROOT / "imgs").glob("*.png"))
    out += [SHARED / "bench-imgs" / "github.png", SHARED / "bench-imgs" / "maple_leaf.jpg"]
    art = tmp / "line-art.png"
    line_art().save(art)
    return [*out, art]


def rk4(table: Table, z: torch.Tensor, steps: int, warp: float = 1.0) -> torch.Tensor:
    """Classic rk4 from t = 0 to t = 1 in ``steps`` steps ending at ``1 - (1 - u)^warp``."""
    x = z.clone()
    grid = 1 - (1 - np.linspace(0, 1, steps + 1)) ** warp

    def v(t: float, x: torch.Tensor) -> torch.Tensor:
        return table.velocity(torch.full((len(x),), t, dtype=torch.float64), x)

    for k in range(steps):
        t, h = float(grid[k]), float(grid[k + 1] - grid[k])
        k1 = v(t, x)
        k2 = v(t + h / 2, x + h / 2 * k1)
        k3 = v(t + h / 2, x + h / 2 * k2)
        k4 = v(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def referee(picture: Path, samples: np.ndarray, tmp: Path) -> dict:
    path = tmp / "s.npy"
    np.save(path, samples.astype(np.float32))
    done = subprocess.run(
        [sys.executable, str(SHARED / "referee" / "score.py"), str(picture), str(path), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def rows(picture: Path, steps: list[int], tmp: Path, resolution: int, warp: float) -> list[dict]:
    config = Config().updated({"density.resolution": resolution})
    end = load_source(picture, config.density).density
    own = referee(picture, end.to_pixels(end.sample(N, torch.Generator().manual_seed(1))), tmp)
    clock = time.perf_counter()
    table = Table(Posterior(end))
    build = time.perf_counter() - clock
    z = torch.randn(N, 2, generator=torch.Generator().manual_seed(0))
    out = []
    for n in steps:
        clock = time.perf_counter()
        with torch.no_grad():
            x = rk4(table, z, n, warp)
        seconds = time.perf_counter() - clock
        judged = referee(picture, end.to_pixels(x), tmp)
        out.append({
            "picture": picture.name, "steps": n, "table_s": build, "solve_s": seconds,
            "tv": judged["tv"], "tv_floor": judged["tv_floor"],
            "gap": judged["tv"] - judged["tv_floor"], "on_ink": judged["on_ink"],
            "grid_tv": own["tv"], "grid_on_ink": own["on_ink"],
        })  # fmt: skip
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", nargs="*", default=None)
    ap.add_argument("--steps", nargs="*", type=int, default=[16, 64, 256])
    ap.add_argument("--resolution", type=int, default=256, help="the working grid's longer side")
    ap.add_argument("--warp", type=float, default=1.0, help="rk4's steps: 1 - (1 - u)^warp")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        images = [Path(p) for p in a.images] if a.images else pictures(tmp)
        table = [r for p in images for r in rows(p, a.steps, tmp, a.resolution, a.warp)]
    print(f"working grid {a.resolution} px, rk4 warp {a.warp:g}; grid: exact samples of it")
    print("| picture | rk4 steps | table s | solve s | tv | tv_floor | tv - floor | on_ink | "
          "grid tv | grid on_ink |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['picture']} | {r['steps']} | {r['table_s']:.1f} | {r['solve_s']:.1f} | "
            f"{r['tv']:.4f} | {r['tv_floor']:.4f} | {r['gap']:+.4f} | {r['on_ink']:.4f} | "
            f"{r['grid_tv']:.4f} | {r['grid_on_ink']:.4f} |"
        )


if __name__ == "__main__":
    main()
