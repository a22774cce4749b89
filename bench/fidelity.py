"""Fidelity per second: train each method config for a wall-time budget, score it, print a table.

Each (config, image, budget) row runs in its own process (clean peak-memory figure, one torch
thread by default) and is stored in bench/results.json, so the table grows over several
sittings; rows already there are skipped unless --force. bench/RESULTS.md is rewritten from all
stored rows at the end.

    python bench/fidelity.py --configs default ffjord-paper --budgets 30 180
    python bench/fidelity.py --configs default --set field.fourier_features=0 --name no-fourier
    python bench/fidelity.py --configs realnvp planar --images target:moons --budgets 180
    python bench/fidelity.py --configs morph --from imgs/flow.png --images imgs/star.png
    python bench/fidelity.py --table            # only rebuild the table

``--from`` trains from a start other than N(0, I) (a morph leg); its rows show ``A -> B`` and
``transport`` (1.0: the particles travel as directly as optimal transport allows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
GITHUB = ROOT.parent / "shared" / "bench-imgs" / "github.png"


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def one(config: str, image: str, budget: float, sets: list[str], threads: int, start: str) -> dict:
    """Train and evaluate one row in this process; returns its figures."""
    import torch

    from flowgif.config import load_config
    from flowgif.evaluate import evaluate
    from flowgif.fit import train_run
    from flowgif.store import load_run

    torch.set_num_threads(threads)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in sets)}
    overrides |= {
        "train.minutes": budget / 60.0,
        "train.steps": 0,
        "train.threads": threads,
        "train.device": "cpu",
    }
    cfg = load_config(ROOT / "configs" / f"{config}.toml").updated(overrides)
    kind, _, name = image.partition(":")
    picture, target = (None, name) if kind == "target" else (Path(image), None)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_run(
            picture, cfg, Path(tmp) / "run", preview=False, target=target, start=start
        )
        figures = evaluate(load_run(Path(tmp) / "run"), n_nll=20_000, n_samples=100_000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sc = cfg.solve
    sampler = f"rk4 x{sc.steps}" if sc.method == "rk4" else f"{sc.method} {sc.atol:g}"
    if sc.method == "rk4" and sc.warp != 1:
        sampler += f" warp {sc.warp:g}"
    if "layers" in figures:  # a discrete flow
        sampler = f"{figures['layers']} layers"
    return {
        "sampler": sampler,
        "steps": result.steps,
        "train_s": result.seconds,
        "peak_mb": peak,
        **figures,
    }


def run_row(
    config: str,
    image: str,
    budget: float,
    sets: list[str],
    name: str,
    threads: int,
    start: str = "noise",
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        config,
        str(image),
        str(budget),
        "--threads",
        str(threads),
        "--from",
        start,
    ] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    clock = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"row {name} {image} {budget}s failed:\n{out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "name": name,
        "config": config,
        "sets": sets,
        "image": label(image, start),
        "budget_s": budget,
        "threads": threads,
        "wall_s": time.time() - clock,
        **row,
    }


def label(image: str, start: str = "noise") -> str:
    """A row's image column: the file name, or the toy target's name (``A -> B`` from a
    start other than noise)."""
    if start != "noise":
        return f"{label(start)} -> {label(image)}"
    if image.startswith(("target:", "text:")):
        return image.partition(":")[2]
    return Path(image).name


def store(row: dict) -> list[dict]:
    """Add ``row`` to results.json (replacing its key), safe beside other bench processes."""
    import fcntl

    def key(r: dict) -> tuple:
        return (r["name"], r["image"], r["budget_s"], r["threads"])

    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        rows = [r for r in rows if key(r) != key(row)] + [row]
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, RESULTS)
    return rows


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def table(rows: list[dict]) -> str:
    head = (
        "| config | image | budget | threads | steps | kl (nats) | tv | tv_floor | on_ink "
        "| exact tv | tv gap | transport | sampler | NFE | peak MB | wall s |\n"
        + "|---" * 16
        + "|"
    )
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["image"], r["budget_s"], r["kl"])):
        lines.append(
            f"| {r['name']} | {r['image']} | {r['budget_s']:g} s | {r['threads']} | "
            f"{r['steps']} | {r['kl']:.3f} | {r['tv']:.3f} | {r['tv_floor']:.3f} | "
            f"{r['on_ink']:.3f} | {_fmt(r.get('exact_tv'))} | {_fmt(r.get('tv_gap'))} | "
            f"{_fmt(r.get('transport'))} | "
            f"{r.get('sampler', 'dopri5 0.0001')} | {r.get('nfe', '-')} | "
            f"{r['peak_mb']:.0f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_results_md(rows: list[dict]) -> None:
    variants = sorted({(r["name"], r["config"], " ".join(r["sets"])) for r in rows})
    text = [
        "# Fidelity per second (measured)",
        "",
        f"Machine: {machine()}. Each row: `flowgif` trained for the budget (wall clock, one "
        "process, CPU), then `flowgif eval` figures: `kl` = nll - entropy on 20,000 fresh "
        "samples of the picture density (exact divergence, atol=rtol=1e-5); `tv`, `tv_floor`, "
        "`on_ink` on 100,000 flow samples, computed as ../shared/referee/score.py does (64 "
        "cells; tests/test_eval.py checks the two agree); NFE of the sampling solve (discrete "
        "flows: their layers); wall s = the whole row (train + eval) in its process.",
        "",
        "Command: `python bench/fidelity.py --configs NAME ... --images ... --budgets ...` "
        "(rows accumulate in bench/results.json). The machine was shared: one to three "
        "benchmark processes ran on its two cores, so steps per second (and with them tv) "
        "vary by a few per cent between rows. Rows named 256x4 ran while that field was the "
        "default (listed below with the overrides that reproduce them); the sampler column "
        "says how each row's 100k samples were drawn.",
        "",
        table(rows),
        "",
        "Variants (config file + overrides):",
        "",
        *[f"- `{n}`: configs/{c}.toml {s}".rstrip() for n, c, s in variants],
        "",
    ]
    path = ROOT / "bench" / "RESULTS.md"
    kept = ""  # sections measured by other scripts (bench/ink.py) follow this table
    if path.exists() and KEPT in path.read_text():
        kept = path.read_text()[path.read_text().index(KEPT) :]
    path.write_text("\n".join(text) + ("\n" + kept if kept else ""))


KEPT = "\n## Ink models"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", nargs="*", default=["default"])
    ap.add_argument(
        "--images", nargs="*", default=[str(GITHUB)], help="picture paths or target:NAME"
    )
    ap.add_argument("--budgets", nargs="*", type=float, default=[30, 180, 600])
    ap.add_argument("--set", action="append", default=[], help="override KEY=VALUE")
    ap.add_argument("--name", help="row name for --set variants (default: the config name)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from", dest="start", default="noise", help="the flow's start")
    ap.add_argument("--force", action="store_true", help="rerun rows already stored")
    ap.add_argument("--table", action="store_true", help="only print and write the table")
    ap.add_argument(
        "--one", nargs=3, metavar=("CONFIG", "IMAGE", "BUDGET"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], float(a.one[2]), a.set, a.threads, a.start)))
        return
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not a.table:
        for config in a.configs:
            name = a.name or config
            for image in a.images:
                for budget in a.budgets:
                    key = (name, label(image, a.start), budget, a.threads)
                    old = [
                        r
                        for r in rows
                        if (r["name"], r["image"], r["budget_s"], r["threads"]) == key
                    ]
                    if old and not a.force:
                        continue
                    row = run_row(config, image, budget, a.set, name, a.threads, a.start)
                    rows = store(row)
                    print(
                        f"{name} {row['image']} {budget:g}s: kl {row['kl']:.3f} tv "
                        f"{row['tv']:.3f} on_ink {row['on_ink']:.3f} transport "
                        f"{row['transport']:.3f} ({row['steps']} steps)",
                        flush=True,
                    )
    print(table(rows))
    write_results_md(rows)


if __name__ == "__main__":
    main()
