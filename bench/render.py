"""Render speed and size: the three parts of `flowgif render` timed separately, and GIF sizes.

    python bench/render.py RUN [--threads 2] [--out bench/RENDER.md]

Rows: 120 frames at 512 px with 20,000 and 200,000 particles (GIF), each colour mode at the
default settings (size), MP4 and WebP. Prints a markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from flowgif.render import RenderOptions, render
from flowgif.store import load_run

ROWS = [
    ("20k particles, position", "flow.gif", {"particles": 20_000}),
    ("200k particles, position", "flow.gif", {"particles": 200_000}),
    ("colour image", "flow.gif", {"color": "image"}),
    ("colour density", "flow.gif", {"color": "density"}),
    ("colour mono", "flow.gif", {"color": "mono"}),
    ("dark, trail 6", "flow.gif", {"background": "dark", "trail": 6}),
    ("MP4", "flow.mp4", {}),
    ("WebP", "flow.webp", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RENDER.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = load_run(a.run)
    lines = [
        "| render | total s | solve s | NFE | draw s | encode s | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, file, kwargs in ROWS:
            clock = time.perf_counter()
            try:
                r = render(run, Path(tmp) / file, RenderOptions(**kwargs))
            except ImportError as err:  # e.g. no imageio-ffmpeg for MP4 on this machine
                print(f"| {name} | skipped: {err} |")
                continue
            total = time.perf_counter() - clock
            s = r.seconds
            lines.append(
                f"| {name} | {total:.1f} | {s['solve']:.1f} | {r.nfe} | "
                f"{s['draw']:.1f} | {s['encode']:.1f} | {r.bytes / 1e6:.2f} |"
            )
            print(lines[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (
        f"# Render speed (measured)\n\n`python bench/render.py {a.run} --threads "
        f"{a.threads}` on {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, run `{a.run}`; 120 frames, 512 px, "
        f"fps 25, defaults otherwise. Peak memory of the whole script: {peak:.0f} MB.\n"
    )
    a.out.write_text(header + "\n" + "\n".join(lines) + "\n")
    print(f"peak memory {peak:.0f} MB; wrote {a.out}")


if __name__ == "__main__":
    main()
