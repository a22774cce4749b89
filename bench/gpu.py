"""One prepared GPU check: trainer speed per batch size (with/without torch.compile), the default
config's fidelity after a short CUDA budget, and render times for 20k and 200k particles.

    PYTHONPATH=. python bench/gpu.py --image ../shared/bench-imgs/github.png --seconds 20

Prints a markdown table per part (copy it into bench/README.md with the device name).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from flowgif.config import load_config
from flowgif.device import native_bf16
from flowgif.evaluate import evaluate
from flowgif.fit import train_run
from flowgif.flows.field import VectorField
from flowgif.flows.model import ContinuousFlow
from flowgif.objectives.flow_matching import fm_loss
from flowgif.render import RenderOptions, render
from flowgif.sources.picture import ImageDensity, load_image
from flowgif.store import load_run

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(
    cfg_name: str,
    density: ImageDensity,
    batch: int,
    compiled: bool,
    steps: int,
    device: torch.device,
) -> float:
    cfg = load_config(ROOT / "configs" / f"{cfg_name}.toml").updated({"train.batch": batch})
    torch.manual_seed(0)
    field = VectorField(cfg.field).to(device)
    model = torch.compile(field) if compiled else field
    opt = torch.optim.Adam(field.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    flow = ContinuousFlow(model, cfg.solve)
    likelihood = cfg.train.objective == "likelihood"

    def one() -> None:
        x1 = density.sample(batch, generator=gen)
        if not likelihood:
            x0 = torch.randn(x1.shape, device=device, generator=gen)
            with torch.autocast(device.type, torch.bfloat16, enabled=native_bf16(device)):
                loss = fm_loss(model, x0, x1, cfg.fm, gen)
        else:
            loss = -flow.fit_log_prob(x1, cfg.ffjord, gen)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up (and compilation)
        one()
    sync(device)
    clock = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    return (time.perf_counter() - clock) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(ROOT.parent / "shared" / "bench-imgs" / "github.png"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run on a CPU")
    a = ap.parse_args()
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    batches = (256, 512) if a.quick else (4096, 16384, 65536)
    train_batches = (256,) if a.quick else (2048, 16384)
    particles = (2000,) if a.quick else (20_000, 200_000)
    density = ImageDensity.from_image(load_image(Path(a.image))).to(device)

    print("\n| trainer | batch | compile | s/iter |\n|---|---|---|---|")
    for batch in batches:
        for compiled in (False, True):
            try:
                s = step_time("default", density, batch, compiled, 30, device)
                print(f"| default (fm) | {batch} | {compiled} | {s:.4f} |", flush=True)
            except Exception as err:  # compile may be unavailable; report and go on
                print(f"| default (fm) | {batch} | {compiled} | failed: {type(err).__name__} |")
    for name in ("ffjord", "ffjord-paper"):
        s = step_time(name, density, 1000, False, 10, device)
        print(f"| {name} | 1000 | False | {s:.4f} |", flush=True)

    print("\n| variant | batch | budget | steps | kl | tv | on_ink | NFE |")
    print("|---|---|---|---|---|---|---|---|")
    variants = {"default": {}, "depth=3 loc=1.0": {"field.depth": 3, "fm.time_loc": 1.0}}
    rendered = False
    for label, extra in variants.items():
        for batch in train_batches:
            cfg = load_config(ROOT / "configs" / "default.toml").updated(
                {
                    "train.minutes": a.seconds / 60,
                    "train.steps": 0,
                    "train.device": a.device,
                    "train.batch": batch,
                    **extra,
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                res = train_run(Path(a.image), cfg, Path(tmp) / "run", preview=False)
                run = load_run(Path(tmp) / "run", device)
                f = evaluate(run, n_nll=2000 if a.quick else 20_000, device=device)
                print(
                    f"| {label} | {batch} | {a.seconds:g} s | {res.steps} | {f['kl']:.3f} | "
                    f"{f['tv']:.3f} | {f['on_ink']:.3f} | {f['nfe']} |",
                    flush=True,
                )
                if not rendered:
                    rendered = True
                    render_rows(run, particles, 10 if a.quick else 120, device)


def render_rows(
    run: object, particles: tuple[int, ...], frames: int, device: torch.device
) -> None:
    print("\n| particles | frames | solve s | draw s | encode s | NFE | MB |")
    print("|---|---|---|---|---|---|---|")
    for n in particles:
        r = render(
            run,
            Path(tempfile.mkdtemp()) / "f.gif",
            RenderOptions(particles=n, frames=frames),
            device,
        )
        s = r.seconds
        print(
            f"| {n} | {r.frames} | {s['solve']:.2f} | {s['draw']:.2f} | "
            f"{s['encode']:.2f} | {r.nfe} | {r.bytes / 1e6:.1f} |",
            flush=True,
        )
    print("\n| variant | batch | budget | steps | kl | tv | on_ink | NFE |")
    print("|---|---|---|---|---|---|---|---|")


if __name__ == "__main__":
    main()
