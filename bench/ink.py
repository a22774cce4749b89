"""A photo of handwriting on grey, unevenly lit paper: what share of a trained flow's samples
land on the strokes, with `--ink darkness` (the old default) and `--ink auto`.

    python bench/ink.py [--minutes 1] [--out DIR]

The picture is made here, so the strokes are known exactly: a formula and pen strokes drawn
50 % darker than the paper, the paper's lightness running from ~120 to ~170 of 255 across the
page (a gradient), sensor noise of 1.5 %. 480 x 320 pixels, written to OUT/photo.png with its
stroke mask. Each run: `flowgif train --img OUT/photo.png --config fast --minutes M --ink X`,
then 100,000 samples (`flowgif sample`), counted on the strokes (pixels within one pixel of a
stroke). `ink on strokes` is the share of the fitted ink map's mass there (what a perfect
flow would reach). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flowgif.sources.ink import ink_of

ROOT = Path(__file__).resolve().parents[1]


def make_photo(out: Path) -> np.ndarray:
    rng = np.random.default_rng(7)
    w, h = 480, 320
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 0.47 + 0.18 * xx / w + 0.04 * yy / h
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.text((30, 40), "E = mc2", fill=255, font=ImageFont.load_default(size=64))
    draw.text((30, 150), "a2 + b2", fill=255, font=ImageFont.load_default(size=56))
    for _ in range(3):
        pts = rng.uniform((20, 230), (w - 20, h - 20), (6, 2))
        draw.line([tuple(p) for p in pts], fill=255, width=3)
    strokes = np.asarray(mask) / 255.0
    light = paper * (1 - 0.5 * strokes) + rng.normal(0, 0.015, (h, w))
    Image.fromarray(np.clip(255 * light, 0, 255).astype(np.uint8), mode="L").save(out)
    return strokes > 0.25


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("runs/ink-bench"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    picture = a.out / "photo.png"
    strokes = make_photo(picture)
    from scipy.ndimage import binary_dilation

    near = binary_dilation(strokes, iterations=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    lines = [
        "| ink | model chosen | ink on strokes | steps | samples on strokes | strokes' area |",
        "|---|---|---|---|---|---|",
    ]
    for ink in ("darkness", "auto"):
        run = a.out / ink
        train = subprocess.run(
            [sys.executable, "-m", "flowgif", "train", "--img", str(picture), "--config", "fast",
             "--minutes", str(a.minutes), "--ink", ink, "--out", str(run)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        chosen = next(x for x in train.stderr.splitlines() if x.startswith("ink:")).split()[1]
        steps = train.stdout.split("done: ")[1].split()[0]
        subprocess.run(
            [sys.executable, "-m", "flowgif", "sample", str(run), "--n", "100000", "--threads",
             "1"], capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        uv = np.load(run / "samples.npy")
        col = np.clip(uv[:, 0].astype(int), 0, strokes.shape[1] - 1)
        row = np.clip(uv[:, 1].astype(int), 0, strokes.shape[0] - 1)
        share = near[row, col].mean()
        fitted = ink_of(Image.open(picture), ink).ink
        mass = (fitted * near).sum() / fitted.sum()
        lines.append(
            f"| {ink} | {chosen} | {mass:.1%} | {steps} | {share:.1%} | {near.mean():.1%} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
