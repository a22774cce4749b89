"""Picture-steps per second of stacked training against M, and what a picture costs in memory.

One flow-matching step on M pictures at once (:class:`flowgif.flows.stacked.StackedField`,
weights with a leading picture axis, one Adam over the sum of the pictures' losses) against M
single-picture steps one after another (the same work as M solo runs), at ``--points`` points
per picture, the default field (3x128, 64 Fourier features). The end points are synthetic
(a Gaussian per picture), so the figures are the model's step, not a picture's sampler. Runs
on CUDA when present (``--device auto``), else on the CPU with one thread; prints a table and
writes bench/STACK.md.

    python bench/stack.py --stacks 1 8 64 256
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from flowgif.config import Config
from flowgif.flows.field import VectorField
from flowgif.flows.stacked import StackedField
from flowgif.run import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(model: torch.nn.Module, m: int, n: int, device: torch.device, reps: int) -> float:
    """Seconds per FM step of ``model`` on ``m`` pictures of ``n`` points (stacked if m > 1 or
    the model is a stack)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    stacked = isinstance(model, StackedField)
    shape = (m, n, 2) if stacked else (n, 2)
    centre = torch.randn((*shape[:-2], 1, 2), device=device, generator=gen)

    def one() -> None:
        x1 = centre + 0.3 * torch.randn(shape, device=device, generator=gen)
        x0 = torch.randn(shape, device=device, generator=gen)
        t = torch.rand((*shape[:-1], 1), device=device, generator=gen)
        xt = (1 - t) * x0 + t * x1
        v = model(t, xt) if stacked else model(t.reshape(-1, 1), xt)
        loss = (v - (x1 - x0)).pow(2).sum(-1).mean(-1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        one()
    sync(device)
    clock = time.perf_counter()
    for _ in range(reps):
        one()
    sync(device)
    return (time.perf_counter() - clock) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stacks", nargs="*", type=int, default=[1, 8, 64, 256])
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = resolve_device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    config = Config().field
    solo = step_time(VectorField(config).to(device), 1, a.points, device, 20)
    rows = []
    for m in a.stacks:
        stack = StackedField([VectorField(config) for _ in range(m)]).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = step_time(stack, m, a.points, device, max(3, 60 // m))
        memory = torch.cuda.max_memory_allocated() / m / 2**20 if device.type == "cuda" else None
        rows.append((m, seconds, m / seconds, m * solo, memory))
        print(f"M={m}: {seconds * 1e3:.1f} ms per step, {m / seconds:,.0f} picture-steps/s "
              f"(solo one after another: {1 / solo:,.0f})", flush=True)  # fmt: skip
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    lines = [
        "# Stacked training: picture-steps per second against M (measured)",
        "",
        f"Device: {device.type} ({name or platform.machine()}), torch {torch.__version__}"
        + (", one CPU thread" if device.type == "cpu" else "")
        + f"; {a.points} points per picture, the default field (3x128, 64 Fourier features).",
        "",
        f"Command: `python bench/stack.py --stacks {' '.join(map(str, a.stacks))}`",
        "",
        "| M | ms per stacked step | picture-steps/s | M solo steps, ms | speed-up "
        "| MB per picture |",
        "|---|---|---|---|---|---|",
    ]
    for m, seconds, rate, solo_ms, memory in rows:
        mb = f"{memory:.1f}" if memory is not None else "-"
        lines.append(
            f"| {m} | {seconds * 1e3:.1f} | {rate:,.0f} | {solo_ms * 1e3:.1f} | "
            f"{solo_ms / seconds:.2f}x | {mb} |"
        )
    (ROOT / "bench" / ("STACK-gpu.md" if device.type == "cuda" else "STACK.md")).write_text(
        "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
