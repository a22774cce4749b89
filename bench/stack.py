"""Stacked training (flowgif.fit.stack): picture-steps per second against M, memory per picture,
and end to end: many pictures trained to a budget of steps, stacked against solo.

Throughput (default): the real trainer, :func:`flowgif.fit.stack.train_stack`, on M run folders
(pictures cycled from imgs/, words and toy targets), ``--points`` points per picture, the
default config otherwise; the median time of a stacked step after warm-up, the part of it
spent drawing the batches (each picture from its own generator), and a solo
:func:`flowgif.fit.train` step on one picture for comparison. MB per picture on CUDA
(:func:`flowgif.fit.stack.picture_memory`) and the stack size ``--stack auto`` picks there.

End to end (``--end-to-end N``): N distinct pictures trained for ``--e2e-steps`` steps each,
stacked (``--stack``, default auto) — the wall time in all — then each picture's kl
(``flowgif eval``'s figure), next to the kl of a solo run of the same steps for the first
``--solo K`` of them.

    python bench/stack.py --stacks 1 8 64 256
    python bench/stack.py --end-to-end 8 --e2e-steps 600 --stack 8 --solo 8

Runs on CUDA when present (``--device auto``), else on the CPU with one thread; prints tables
and writes bench/STACK.md (CPU) or bench/STACK-gpu.md (CUDA; bench/gpu-stack.sh is the
prepared GPU check).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flowgif.config import Config, load_config
from flowgif.device import resolve_device
from flowgif.evaluate import evaluate
from flowgif.fit import open_run, train
from flowgif.fit.stack import auto_stack, picture_memory, train_stack
from flowgif.objectives.flow_matching import StackedBatches as Batches
from flowgif.sources import Source, load_source
from flowgif.sources.toys import TOYS
from flowgif.store import load_run

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "flow",
    "gif",
    "ode",
    "noise",
    "adam",
    "wave",
    "star",
    "moon",
    "sun",
    "sky",
    "sea",
    "tree",
    "leaf",
    "rose",
    "fox",
    "owl",
    "cat",
    "dog",
    "bee",
    "ant",
    "elk",
    "yak",
    "emu",
    "ram",
    "hen",
    "cow",
    "pig",
    "bat",
    "eel",
    "koi",
    "jay",
    "kiwi",
    "lynx",
    "mole",
    "newt",
    "orca",
    "puma",
    "seal",
    "swan",
    "toad",
    "vole",
    "wolf",
    "wren",
    "yeti",
    "zebra",
    "map",
    "key",
    "cup",
    "pen",
    "ink",
    "box",
    "hat",
    "oak",
    "fig",
    "pea",
]


def sources(count: int, config: Config) -> list[Source]:
    """``count`` distinct ends: the bundled pictures, the toy targets, then words."""
    specs = [str(p) for p in sorted((ROOT / "imgs").glob("*.png"))]
    specs += [f"target:{name}" for name in TOYS] + [f"text:{w}" for w in WORDS]
    if count > len(specs):
        raise SystemExit(f"at most {len(specs)} distinct pictures")
    return [load_source(spec, config.density) for spec in specs[:count]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def stacked_step(ends: list[Source], config: Config, m: int, device: torch.device) -> tuple:
    """(median s per stacked step, median s of its draws) for M pictures."""
    stamps: list[float] = []

    def tick(_: object) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        runs = [open_run(end, config, Path(tmp) / str(i)) for i, end in enumerate(ends[:m])]
        train_stack(runs, device, progress=tick)
        batches = Batches(
            [r.end.density.to(device) for r in runs], [r.start.density.to(device) for r in runs],
            config,
        )  # fmt: skip
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(m)]
    draws = []
    for _ in range(5):
        sync(device)
        clock = time.perf_counter()
        batches(gens, set(range(m)))
        sync(device)
        draws.append(time.perf_counter() - clock)
    steps = [b - a for a, b in itertools.pairwise(stamps[3:])]
    return statistics.median(steps), statistics.median(draws)


class _Ops(TorchDispatchMode):
    """Counts the operators torch dispatches (on a GPU, about one kernel launch each)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(ends: list[Source], config: Config, m: int, device: torch.device) -> float:
    """Operators per step: of M stacked pictures (or a solo run, m = 0), from the difference
    of a 5-step and a 3-step run (so that setting up and saving cancel out)."""

    def count(steps: int) -> int:
        cfg = config.updated({"train.steps": steps})
        with tempfile.TemporaryDirectory() as tmp, _Ops() as ops:
            if m == 0:
                train(cfg, ends[0], device)
            else:
                train_stack(
                    [open_run(e, cfg, Path(tmp) / str(i)) for i, e in enumerate(ends[:m])], device
                )
        return ops.count

    return (count(5) - count(3)) / 2


def solo_step(end: Source, config: Config, device: torch.device) -> float:
    stamps: list[float] = []

    def tick(_: object) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    train(config, end, device, progress=tick)
    return statistics.median(b - a for a, b in itertools.pairwise(stamps[3:]))


def header(device: torch.device, points: int) -> list[str]:
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    return [
        f"Device: {device.type} ({name or platform.machine()}), torch {torch.__version__}"
        + (", one CPU thread" if device.type == "cpu" else "")
        + f"; {points} points per picture, the default field (3x128, 64 Fourier features).",
        "",
    ]


def throughput(a: argparse.Namespace, device: torch.device) -> list[str]:
    base = Config().updated(
        {
            "train.minutes": 0,
            "train.steps": 1,
            "train.batch": a.points,
            "train.checkpoint_every": 10**9,
        }
    )
    ends = sources(min(max(a.stacks), 64), base)
    ends = list(itertools.islice(itertools.cycle(ends), max(a.stacks)))
    solo_config = base.updated({"train.steps": 3 + a.steps})
    solo_ops = ops_per_step(ends, base, 0, device)
    rows, solos = [], []
    for m in a.stacks:
        steps = a.steps if device.type == "cuda" or m < 64 else max(4, a.steps // 4)
        config = base.updated({"train.steps": 3 + steps})
        rounds = []
        for _ in range(a.repeat):  # solo and stacked one after the other: a shared machine
            solo = solo_step(ends[0], solo_config, device)  # drifts, the ratio less so
            seconds, draws = stacked_step(ends, config, m, device)
            rounds.append((solo, seconds, draws, m * solo / seconds))
        solo, seconds, draws, ratio = (statistics.median(r) for r in zip(*rounds, strict=True))
        solos.append(solo)
        memory = picture_memory(base, device) / 2**20 if device.type == "cuda" else None
        ops = ops_per_step(ends, base, m, device)
        rows.append((m, seconds, draws, ratio, ops, memory))
        print(f"M={m}: {seconds * 1e3:.1f} ms per step (draws {draws * 1e3:.1f} ms), "
              f"{m / seconds:,.0f} picture-steps/s, {ratio:.2f}x solo, {ops:.0f} operators",
              flush=True)  # fmt: skip
    solo = statistics.median(solos)
    lines = [
        "## Picture-steps per second against M (measured)",
        "",
        *header(device, a.points),
        f"Command: `python bench/stack.py --device {a.device} --stacks "
        f"{' '.join(map(str, a.stacks))} --steps {a.steps} --repeat {a.repeat}`",
        "",
        f"Medians of {a.repeat} rounds, each a solo run's steps then the stack's; the speed-up "
        "is M x solo step / stacked step within a round.",
        "",
        f"Solo step (`flowgif.fit.train`, one picture): {solo * 1e3:.2f} ms, "
        f"{1 / solo:,.0f} picture-steps/s, {solo_ops:.0f} operators (torch dispatches; on a "
        "GPU each is about one kernel launch, which bounds a small step there).",
        "",
        "| M | ms per stacked step | of it drawing, ms | picture-steps/s | speed-up over solo "
        "| operators per step | per picture | MB per picture |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, seconds, draws, ratio, ops, memory in rows:
        mb = f"{memory:.1f}" if memory is not None else "-"
        lines.append(
            f"| {m} | {seconds * 1e3:.1f} | {draws * 1e3:.1f} | {m / seconds:,.0f} | "
            f"{ratio:.2f}x | {ops:.0f} | {ops / m:.1f} | {mb} |"
        )
    if device.type == "cuda":
        lines += ["", f"`--stack auto` here: {auto_stack(base, 4096, device)} pictures."]
    return lines


def end_to_end(a: argparse.Namespace, device: torch.device) -> list[str]:
    config = load_config(a.config).updated({"train.minutes": 0, "train.steps": a.e2e_steps})
    ends = sources(a.end_to_end, config)
    size = auto_stack(config, len(ends), device) if a.stack == "auto" else int(a.stack)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clock = time.perf_counter()
        for first in range(0, len(ends), size):
            chunk = range(first, min(first + size, len(ends)))
            runs = [open_run(ends[i], config, root / f"stack{i}") for i in chunk]
            train_stack(runs, device)
        sync(device)
        stacked = time.perf_counter() - clock
        print(f"{len(ends)} pictures stacked by {size}: {stacked:.1f} s", flush=True)
        solo_seconds = []
        for i in range(a.solo):
            run = open_run(ends[i], config, root / f"solo{i}")
            clock = time.perf_counter()
            train(config, run.end, device, checkpoint=run.save)
            sync(device)
            solo_seconds.append(time.perf_counter() - clock)

        def kl(folder: Path) -> float:
            figures = evaluate(
                load_run(folder, device), n_nll=4000, n_samples=40_000, device=device
            )
            return float(figures["kl"])

        rows = []
        for i, end in enumerate(ends):
            solo = kl(root / f"solo{i}") if i < a.solo else None
            rows.append((end.label, kl(root / f"stack{i}"), solo))
            print(rows[-1], flush=True)
    lines = [
        "## End to end: pictures trained to a budget of steps, stacked and solo (measured)",
        "",
        *header(device, config.train.batch),
        f"Command: `python bench/stack.py --device {a.device} --end-to-end {a.end_to_end} "
        f"--e2e-steps {a.e2e_steps} --stack {a.stack} --solo {a.solo}"
        + (f" --config {a.config}`" if a.config else "`")
        + f"; fm.target {config.fm.target} (each picture regresses on the target its solo run "
        "would: the exact field from its own posterior table where that applies).",
        "",
        f"{len(ends)} pictures x {a.e2e_steps:,} steps, stacks of {size}: **{stacked:.1f} s** "
        f"in all ({len(ends) * a.e2e_steps / stacked:,.0f} picture-steps/s)."
        + (
            f" Solo, one after another: {statistics.mean(solo_seconds):.1f} s per picture "
            f"(x {len(ends)} = {statistics.mean(solo_seconds) * len(ends):.0f} s)."
            if solo_seconds
            else ""
        ),
        "",
        "| picture | kl stacked | kl solo (same steps) |",
        "|---|---|---|",
    ]
    for label, got, solo in rows:
        name = Path(label).name if "/" in label else label
        lines.append(f"| {name} | {got:.4f} | {'-' if solo is None else f'{solo:.4f}'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--stacks", nargs="*", type=int, default=[1, 8, 64, 256])
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per M")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of solo-then-stack per M")
    ap.add_argument("--end-to-end", type=int, default=0, metavar="N")
    ap.add_argument("--e2e-steps", type=int, default=600)
    ap.add_argument("--stack", default="auto")
    ap.add_argument("--solo", type=int, default=0, metavar="K")
    ap.add_argument("--nll", type=int, default=4000, help="end to end: kl on this many points")
    ap.add_argument("--config", default=None, help="end to end: a named config or TOML file")
    a = ap.parse_args()
    device = resolve_device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    lines = end_to_end(a, device) if a.end_to_end else throughput(a, device)
    print("\n".join(lines))
    path = ROOT / "bench" / ("STACK-gpu.md" if device.type == "cuda" else "STACK.md")
    old = path.read_text() if path.exists() else ""
    kept = [s for s in old.split("\n## ")[1:] if not ("## " + s).startswith(lines[0])]
    body = "".join("\n## " + s.rstrip() + "\n" for s in kept)
    path.write_text(
        "# Stacked training (bench/stack.py)\n" + body + "\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
