"""``flowgif morph A B [C ...]``: train each leg A -> B -> C, then play them as one animation."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from flowgif.cli.common import (
    Background,
    ColorMode,
    ConfigOpt,
    Device,
    DeviceOpt,
    FpsOpt,
    Loop,
    Method,
    MethodOpt,
    MinutesOpt,
    ParticlesOpt,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    _budget,
    _config_path,
    _render_options,
    app,
    err_console,
    guarded,
    out_console,
)
from flowgif.limits import MAX_FRAMES, MAX_HOLD


@app.command()
@guarded
def morph(
    pictures: Annotated[
        list[str],
        typer.Argument(
            help="Two or more pictures, in order: paths, text:WORD or target:NAME.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output: .gif, .mp4, .webp, or a folder for PNG frames "
            "\\[default: <runs>/morph.gif].",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the legs' run folders \\[default: runs/morph-A-B-...]; a rerun "
            "reuses the legs that are finished.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    method: MethodOpt = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    frames: Annotated[int, typer.Option(min=2, max=MAX_FRAMES, help="Frames of each leg.")] = 100,
    fps: FpsOpt = 25,
    particles: ParticlesOpt = 20_000,
    size: Annotated[int, typer.Option(min=16, max=4096, help="Longer side in pixels.")] = 512,
    color: Annotated[
        ColorMode,
        typer.Option(
            help="image: the first picture's colours where each particle starts, carried "
            "through; target: the last picture's where it lands; position; density; mono."
        ),
    ] = ColorMode.image,
    background: Annotated[Background, typer.Option(help="Canvas colour.")] = Background.light,
    loop: Annotated[
        Loop, typer.Option(help="pingpong plays the morph back to the first picture.")
    ] = Loop.forward,
    hold: Annotated[
        float, typer.Option(min=0.0, max=MAX_HOLD, help="Seconds on each picture.")
    ] = 1.0,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Morph pictures into one another: a flow per leg A -> B -> C, played as one animation.

    By default each leg is the optimal-transport map (--method ot, computed in seconds: every
    bit of A moves straight to its place in B). --method fm, --config, --steps or --minutes
    train a flow per leg instead (config morph; the budget is per leg). Every picture is
    checked before anything is computed; the legs are ordinary run folders that render, eval
    and sample read.
    """
    from flowgif.cli.progress import progress_bar, stop_on_signals
    from flowgif.config import load_config
    from flowgif.device import resolve_device, set_threads
    from flowgif.errors import Interrupted
    from flowgif.files import check_frames_folder
    from flowgif.fit.morph import default_parent, plan, train_legs
    from flowgif.owned import check_replaceable
    from flowgif.render import render
    from flowgif.store import budget_text, load_run

    if method is None and config is None and steps is None and minutes is None:
        method = Method.ot  # the map, in seconds (bench/OT.md); a budget or config trains
    cfg = load_config(_config_path(config or "morph")).updated(_budget(steps, minutes))
    if method is not None:
        cfg = cfg.updated({"train.method": method.value})
    cfg = cfg.updated(
        {"train.device": device.value} | ({"train.threads": threads} if threads else {})
    )
    opts = _render_options(locals())
    from flowgif.fit.memory import check_fits

    # a device that is not there, legs too large for it: before any folder is made
    check_fits(cfg, resolve_device(cfg.train.device))
    parent = runs or default_parent(pictures)
    out = out or parent / "morph.gif"
    if out.suffix:
        check_replaceable(out)  # before any training: never over a file flowgif did not write
    else:
        check_frames_folder(out)
    legs = plan(pictures, cfg, parent)
    budget = budget_text(cfg.train.steps, cfg.train.minutes)
    at = [0]

    @contextlib.contextmanager
    def watch(i: int, leg: Any) -> Iterator[Callable | None]:
        at[0] = i
        what = f"leg {i}/{len(legs)}: {leg.start.label} -> {leg.end.label}"
        if leg.state == "done":
            err_console.print(f"{what}: done, reused ({leg.path})", highlight=False, markup=False)
            yield None
            return
        verb = "resuming" if leg.state == "resume" else "training"
        doing = f"{verb} for {budget}"
        if cfg.train.objective == "exact":
            kind = "optimal-transport" if cfg.train.family == "ot" else "exact"
            doing = f"computing the {kind} flow (no training)"
        err_console.print(f"{what}: {doing} -> {leg.path}", highlight=False, markup=False)
        with progress_bar() as update:
            yield update

    with stop_on_signals() as stop:
        stop.at_once = cfg.train.objective == "exact"  # computed whole: cut at once
        try:
            train_legs(legs, cfg, stop, watch)
        except Interrupted as stopped:
            kept = "saved" if stopped.saved else "kept as it was"
            err_console.print(
                f"interrupted in leg {at[0]} (its checkpoint is {kept}); run the same command "
                "again to continue",
                highlight=False,
                markup=False,
            )
            raise typer.Exit(130) from None
    dev = resolve_device(device.value)
    set_threads(threads)
    loaded = [load_run(leg.path, dev) for leg in legs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report = render(loaded, out, opts, dev, chain=True)
    for w in caught:
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", highlight=False)
    out_console.print(
        f"wrote {out} ({len(legs)} leg{'s' * (len(legs) > 1)}, {report.frames} frames, "
        f"{report.width}x"
        f"{report.height}, {report.bytes / 1e6:.1f} MB); legs in {parent}",
        highlight=False,
        markup=False,
    )
