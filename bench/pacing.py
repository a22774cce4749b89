"""How the animation reads: when the picture forms, how even the motion is on screen, and the
GIF's bytes — now, and as flowgif rendered it before (--before).

    python bench/pacing.py RUN [RUN ...] [--before SRC] [--out FILE]

Figures per run, for the default render (120 frames, 512 px, 20,000 particles):
- `formed`: the share of the motion frames at which the particles' 64x64 histogram is
  halfway (in total variation) from the first frame's to the last frame's; `on ink`: at which
  the fraction of particles on the picture's ink is halfway from its first value to its last.
  Both are read off 3,000 of the particles at the frame times, in the picture's own frame (the
  camera does not count). Target 40-60 %.
- `step max/median`: the largest mean on-screen displacement of those particles between two
  frames over the median one (camera included). Target <= 3.
- `MB`. "before" frames are at equal times with a full cosine ease and a camera that follows
  the cloud (flowgif up to 3dcf487, reproduced here from the same paths); its MB comes from
  that flowgif itself (SRC: a checkout of it, e.g. `git worktree add /tmp/old 3dcf487`),
  and `rewritten` is the same decoded GIF re-encoded by this flowgif's writer (the frames
  are checked to be identical): the writer's gain alone.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowgif.draw import Canvas, Palette
from flowgif.flows.ode import SolveStats
from flowgif.render import RenderOptions, render
from flowgif.render.camera import PROBE_PARTICLES, camera, frame_times_for
from flowgif.render.pacing import formed, jumpiness, shape_progress
from flowgif.render.writers import write_gif
from flowgif.store import load_run


def decode(path: Path) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """The GIF's frames as palette indices (its global palette), delays, palette."""
    gif = Image.open(path)
    palette = np.asarray(gif.getpalette()[:768], dtype=np.int64).reshape(-1, 3)
    lut = np.zeros(1 << 24, dtype=np.uint8)
    for i in range(255, -1, -1):  # the lowest index of a colour wins
        r, g, b = palette[i]
        lut[(r << 16) | (g << 8) | b] = i
    frames, delays = [], []
    for k in range(gif.n_frames):
        gif.seek(k)
        a = np.asarray(gif.convert("RGB")).astype(np.int64)
        frames.append(lut[(a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]])
        delays.append(gif.info["duration"])
    return frames, delays, palette


def figures(run_path: Path, before: bool) -> dict[str, float]:
    """formed, on ink and step max/median of the default render, now or as it was."""
    run = load_run(run_path)
    opts = RenderOptions()
    noise = [run.flow.starts(opts.particles, torch.Generator().manual_seed(opts.seed))]
    times, progress = frame_times_for([run], noise, opts, SolveStats())
    if before:  # equal times, full cosine ease; the camera followed the cloud
        s = np.linspace(0.0, 1.0, opts.frames)
        times = torch.as_tensor(0.5 - 0.5 * np.cos(np.pi * s), dtype=torch.float32)
    probe = run.flow.paths(noise[0][:PROBE_PARTICLES], times).numpy()
    probe = probe[..., :2].astype(np.float64)
    ink = run.density.probs_np.ravel() > 0
    on_ink = np.array([ink[run.density.cell_index(x)].mean() for x in probe])
    half_ink = np.maximum.accumulate((on_ink - on_ink[0]) / max(on_ink[-1] - on_ink[0], 1e-9))
    canvas = Canvas.around(run.density.size, opts.size)
    views = camera(canvas, run.density, probe, True, None if before else progress)
    scale = np.array([v.scale for v in views])
    t = times.numpy().astype(np.float64)
    return {
        "formed": formed(shape_progress(probe)),
        "ink": formed(half_ink),
        "step": jumpiness(probe, t, t, scale),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--before", type=Path, help="a checkout of an earlier flowgif")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lines = [
        "| run | render | formed | on ink | step max/median | MB | rewritten MB |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for run in a.runs:
            f = figures(run, before=True)
            size = "| "
            if a.before:
                old = Path(tmp) / f"{run.name}-before.gif"
                env = dict(os.environ, PYTHONPATH=str(a.before.resolve()))
                subprocess.run(
                    [sys.executable, "-m", "flowgif", "render", str(run), "--out", str(old)],
                    check=True, env=env, capture_output=True,
                )  # fmt: skip
                frames, delays, palette = decode(old)
                again = Path(tmp) / f"{run.name}-rewritten.gif"
                write_gif(again, iter(frames), Palette(palette.astype(np.uint8), 1, 1), delays)
                redecoded = decode(again)[0]
                assert all(
                    np.array_equal(palette[x], palette[y])
                    for x, y in zip(frames, redecoded, strict=True)
                )
                mb, re_mb = old.stat().st_size / 1e6, again.stat().st_size / 1e6
                size = f"{mb:.2f} | {re_mb:.2f} ({re_mb / mb:.0%})"
            lines.append(
                f"| {run.name} | before | {f['formed']:.0%} | {f['ink']:.0%} | "
                f"{f['step']:.2f} | {size} |"
            )
            print(lines[-1], flush=True)
            new = Path(tmp) / f"{run.name}.gif"
            render(load_run(run), new)
            f = figures(run, before=False)
            lines.append(
                f"| {run.name} | now | {f['formed']:.0%} | {f['ink']:.0%} | {f['step']:.2f} | "
                f"{new.stat().st_size / 1e6:.2f} | |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.write_text(text)
    else:
        print(io.StringIO(text).getvalue())


if __name__ == "__main__":
    main()
