"""Commands that use a trained run: ``render``, ``sample``, ``eval`` and ``plot``."""

from __future__ import annotations

import json
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flowgif.cli.common import (
    Background,
    ColorMode,
    Device,
    DeviceOpt,
    FpsOpt,
    Loop,
    ParticlesOpt,
    RunArg,
    SeedOpt,
    ThreadsOpt,
    _caption,
    _load,
    _render_options,
    app,
    err_console,
    guarded,
    out_console,
)
from flowgif.errors import FlowgifError
from flowgif.limits import MAX_FRAMES, MAX_HOLD, MAX_NLL, MAX_SAMPLES, MAX_TRANSPORT


class Pace(StrEnum):
    shape = "shape"
    time = "time"


@app.command()
@guarded
def render(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folder (default: the latest run under runs/). Several play side by side "
            "from the same noise, e.g. a continuous flow beside a RealNVP.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output: .gif, .mp4, .webp, or a folder for "
            "PNG frames \\[default: <run>/flow.gif; compare.gif beside several runs].",
            show_default=False,
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Caption of each panel, once per run \\[default with several runs: method and "
            "training time].",
            show_default=False,
        ),
    ] = None,
    frames: Annotated[
        int, typer.Option(min=2, max=MAX_FRAMES, help="Frames from start to picture.")
    ] = 120,
    fps: FpsOpt = 25,
    particles: ParticlesOpt = 20_000,
    size: Annotated[
        int, typer.Option(min=16, max=4096, help="Longer side in pixels (of each panel).")
    ] = 512,
    color: Annotated[
        ColorMode,
        typer.Option(
            help="position: hue by starting angle; image: the picture's colours (a start "
            "picture's, carried along); target: the end picture's; density: heat map; mono."
        ),
    ] = ColorMode.position,
    background: Annotated[
        Background,
        typer.Option(help="Canvas colour; transparent (GIF, WebP, PNG frames) sits on any page."),
    ] = Background.light,
    loop: Annotated[Loop, typer.Option(help="pingpong plays back to the noise.")] = Loop.forward,
    hold: Annotated[
        float,
        typer.Option(
            min=0.0, max=MAX_HOLD, help="Seconds on the finished picture (half on the noise)."
        ),
    ] = 1.0,
    ease: Annotated[bool, typer.Option(help="Slow start and end.")] = True,
    trail: Annotated[
        int, typer.Option(min=0, max=30, help="Frames of fading trail behind each particle.")
    ] = 0,
    glow: Annotated[
        float, typer.Option(min=0.0, max=10.0, help="Soft halo around particles (0: crisp).")
    ] = 0.0,
    zoom: Annotated[
        bool,
        typer.Option(
            help="Start wide enough for the whole noise cloud, hold while it gathers, glide in."
        ),
    ] = True,
    pace: Annotated[
        Pace,
        typer.Option(
            help="shape: frames spaced so the picture forms evenly from the first second; "
            "time: equal steps of the flow's time."
        ),
    ] = Pace.shape,
    dot: Annotated[
        int, typer.Option(min=0, max=16, help="Particle size in pixels (0: from --size).")
    ] = 0,
    quality: Annotated[int, typer.Option(min=0, max=10, help="MP4 quality.")] = 7,
    panels: Annotated[
        bool,
        typer.Option(
            help="Beside the particles: the picture's ink, the exact density p_t and the "
            "vector field v(t, x) (one continuous flow)."
        ),
    ] = False,
    max_mb: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10_000.0,
            help="Size budget in MB (0: none): fewer frames, a smaller size or fewer particles "
            "until the file fits (GitHub shows images up to 10 MB).",
        ),
    ] = 0.0,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Animate a trained run: particles carried from N(0,I) (or its start) to the picture.

    Discrete flows show their layers joined by straight lines; several runs play side by side.
    """
    from flowgif.render import render as do_render
    from flowgif.store import load_run

    opts = _render_options(locals())
    path, loaded, dev = _load(runs[0] if runs else None, device, threads)
    loaded = [loaded] + [load_run(r, dev) for r in (runs or [])[1:]]
    if label and len(label) != len(loaded):
        raise FlowgifError(f"--label given {len(label)} times for {len(loaded)} runs")
    if len(loaded) > 1 and not label:
        label = [_caption(r) for r in loaded]
    out = out or (path / "flow.gif" if len(loaded) == 1 else path.parent / "compare.gif")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report = do_render(loaded, out, opts, dev, label)
    for w in caught:
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", highlight=False)
    if report.changes:
        err_console.print(
            f"to fit {max_mb:g} MB: {', '.join(report.changes)}", highlight=False, markup=False
        )
    s = report.seconds
    out_console.print(
        f"wrote {out} ({report.frames} frames, {report.width}x{report.height}, "
        f"{report.bytes / 1e6:.1f} MB) in {sum(s.values()):.1f} s: solve {s['solve']:.1f} s "
        f"({report.nfe} NFE), draw {s['draw']:.1f} s, encode {s['encode']:.1f} s",
        highlight=False,
        markup=False,
    )


@app.command()
@guarded
def sample(
    run: RunArg = None,
    n: Annotated[int, typer.Option(min=1, max=MAX_SAMPLES, help="Number of samples.")] = 100_000,
    out: Annotated[
        Path | None,
        typer.Option(help=".npy file \\[default: <run>/samples.npy].", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing .npy that flowgif cannot prove it wrote (a .npy carries "
            "no signature; samples written into a run folder are recorded there).",
        ),
    ] = False,
) -> None:
    """Write (N, 2) samples in the picture's pixel coordinates (x = column, y = row, 0 on top)."""
    import numpy as np

    from flowgif.files import atomic_write
    from flowgif.flows.model import sample as draw_samples
    from flowgif.owned import check_replaceable, record_written

    if out is not None and out.suffix != ".npy":
        raise FlowgifError(f"--out must end in .npy, got {out.name}")
    path, loaded, dev = _load(run, device, threads)
    out = out or path / "samples.npy"
    check_replaceable(out, force)
    x = draw_samples(loaded.flow, n, seed, dev)
    uv = loaded.density.to_pixels(x).astype(np.float32)
    atomic_write(out, lambda f: np.save(f, uv))
    record_written(out)
    out_console.print(
        f"wrote {out}: {n} samples, shape ({n}, 2), pixel coordinates of the "
        f"{loaded.density.size[0]}x{loaded.density.size[1]} picture",
        highlight=False,
        markup=False,
    )


@app.command(name="eval")
@guarded
def eval_(
    run: RunArg = None,
    n_nll: Annotated[
        int, typer.Option(min=100, max=MAX_NLL, help="Picture samples for the likelihood.")
    ] = 20_000,
    samples: Annotated[
        int, typer.Option(min=100, max=MAX_SAMPLES, help="Flow samples for tv and on_ink.")
    ] = 100_000,
    cells: Annotated[
        int, typer.Option(min=2, max=4096, help="Grid cells on the longer side for tv.")
    ] = 64,
    device: DeviceOpt = Device.auto,
    transport: Annotated[
        int,
        typer.Option(
            min=2,
            max=MAX_TRANSPORT,
            help="Start points for transport (an exact assignment, cubic: 1,000 take ~2 s).",
        ),
    ] = 1000,
    threads: ThreadsOpt = 0,
) -> None:
    """Score a run against its picture (kl, nll, entropy, tv, on_ink, transport): RUN/eval.json."""
    from flowgif.evaluate import evaluate
    from flowgif.files import atomic_write_text
    from flowgif.owned import SIGNATURE, check_replaceable

    path, loaded, dev = _load(run, device, threads)
    check_replaceable(path / "eval.json")  # before the work: only a report flowgif signed
    res = evaluate(loaded, n_nll, samples, cells, device=dev, n_transport=transport)
    table = Table(title=f"eval {escape(str(path))}", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in res.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else escape(str(value)))
    out_console.print(table)
    signed = {"generator": SIGNATURE, **res}
    atomic_write_text(path / "eval.json", json.dumps(signed, indent=2) + "\n")


class PlotKind(StrEnum):
    density = "density"
    field = "field"
    paths = "paths"
    loss = "loss"


@app.command()
@guarded
def plot(
    run: RunArg = None,
    kind: Annotated[
        PlotKind,
        typer.Option(
            help="density: learned log-density beside the target; field: v(t, x) at "
            "several t; paths: particle trajectories; loss: training curve."
        ),
    ] = PlotKind.density,
    out: Annotated[
        Path | None,
        typer.Option(help="PNG file \\[default: <run>/<kind>.png].", show_default=False),
    ] = None,
    times: Annotated[
        str, typer.Option(help="Comma-separated times for --kind field.")
    ] = "0,0.5,0.9,1",
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Draw a PNG that explains a run (needs matplotlib: pip install 'flowgif\\[plot]')."""
    from flowgif.plot import plot as draw_plot

    try:
        ts = tuple(float(t) for t in times.split(","))
    except ValueError:
        raise FlowgifError(f"--times must be numbers separated by commas, got {times!r}") from None
    if not all(0.0 <= t <= 1.0 for t in ts):  # also refuses nan and inf
        raise FlowgifError(f"--times must be between 0 and 1 (the flow's time), got {times!r}")
    path, loaded, dev = _load(run, device, threads)
    out = out or path / f"{kind.value}.png"
    draw_plot(loaded, kind.value, out, times=ts, device=dev)
    out_console.print(f"wrote {out}", highlight=False, markup=False)
