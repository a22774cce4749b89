"""``flowgif train``: fit a flow, with a progress bar, checkpoints on Ctrl-C and SIGTERM (the
planning of a run — config, both ends, the run folder — is :mod:`flowgif.cli.plan`)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from flowgif.cli.common import (
    ConfigOpt,
    Device,
    Family,
    Ink,
    Method,
    MinutesOpt,
    Objective,
    StepsOpt,
    Toy,
    app,
    err_console,
    guarded,
    out_console,
)
from flowgif.cli.plan import plan
from flowgif.cli.progress import progress_bar, stop_on_signals
from flowgif.errors import FlowgifError
from flowgif.limits import MAX_SEED


@app.command()
@guarded
def train(
    text: Annotated[
        str | None,
        typer.Option(
            help="Fit a word set in type instead of a picture, e.g. --text Ada.",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        Toy | None,
        typer.Option(
            help="Fit a classic 2D toy density instead of a picture; u1-u4 are energies, "
            "fitted by reverse KL.",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    img: Annotated[
        Path | None,
        typer.Option(help="The picture (PNG, JPEG, GIF, BMP, WebP ...).", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder \\[default: runs/<image name>, numbered if taken].",
            show_default=False,
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Where the flow starts: noise (N(0,I), the default), a picture's path, "
            "text:WORD or target:NAME. From a picture the flow morphs it into the end.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    method: Annotated[
        Method | None,
        typer.Option(
            help="Objective and family in one word. Continuous: fm (flow matching, fast), "
            "ffjord (maximum likelihood through the adjoint ODE). Discrete, rendered layer by "
            "layer: realnvp (affine couplings), planar, radial. Energy targets use reverse KL.",
            show_default=False,
        ),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option(
            help="How the flow is fitted: fm (flow matching), likelihood (maximum "
            "likelihood), reverse (reverse KL to an energy target).",
            show_default=False,
        ),
    ] = None,
    family: Annotated[
        Family | None,
        typer.Option(
            help="What is fitted: field (a continuous flow) or realnvp, planar, radial.",
            show_default=False,
        ),
    ] = None,
    augment: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Extra dimensions for a continuous flow (augmented ODE) so paths may cross.",
            show_default=False,
        ),
    ] = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    batch: Annotated[
        int | None,
        typer.Option(min=1, max=4_194_304, help="Points per step.", show_default=False),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="Peak learning rate.", show_default=False)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=MAX_SEED, help="Seed of every random stream.", show_default=False),
    ] = None,
    device: Annotated[
        Device | None, typer.Option(help="auto uses CUDA when present.", show_default=False)
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="CPU threads (0, the default: the cores idle now, measured; at least 1).",
            show_default=False,
        ),
    ] = None,
    invert: Annotated[
        bool | None,
        typer.Option(
            "--invert/--no-invert",
            help="Light shapes on a dark background are the ink.",
            show_default=False,
        ),
    ] = None,
    ink: Annotated[
        Ink | None,
        typer.Option(
            help="How pixels become ink: auto (darkness on a clean picture, local on a photo "
            "or scan), darkness, local (darker than the paper around it), shape (every pixel "
            "unlike the background: a colour logo as its silhouette).",
            show_default=False,
        ),
    ] = None,
    ink_floor: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Ink below this is paper (0.1 clears off-white paper).",
            show_default=False,
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            min=2, max=4096, help="Working resolution, longer side in pixels.", show_default=False
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this folder from its last checkpoint.", show_default=False
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Write the network as it is now to RUN/live.pt four times a second, for "
            "flowgif view to show it learning (removed when training ends). SIGUSR1 pauses "
            "any training at a step, SIGUSR2 continues it.",
        ),
    ] = False,
) -> None:
    """Fit a flow to a picture; writes a run folder (config, checkpoint, loss.csv, samples.png)."""
    with stop_on_signals() as stop:
        _train(locals(), stop)


def _train(a: dict[str, Any], stop: Callable[[], bool]) -> None:
    """Plan the run (its config, both ends, its folder: all checked before any folder is
    made), then run it (:func:`_run`)."""
    cfg, src, begin, out = plan(a)
    try:
        _run(a, stop, cfg, src, begin, out)
    except BaseException:
        from flowgif.store import release

        release(out)  # a start that failed leaves no empty folder behind
        raise


def _run(
    a: dict[str, Any], stop: Callable[[], bool], cfg: Any, src: Any, begin: Any, out: Path
) -> None:
    """Open the run (every refusal comes here, before anything is said), say what it will do,
    train it, and report."""
    from flowgif.errors import Interrupted
    from flowgif.fit import open_run, train_opened
    from flowgif.store import budget_spent, budget_text

    resume = a["resume"] is not None
    run = open_run(src, cfg, out, resume=resume, start=begin)
    if resume and budget_spent(run.config, run.resume):
        tc = run.config.train
        raise FlowgifError(
            f"the run already has {run.resume['step']} steps ({run.resume['seconds']:.0f} s), "
            f"which fills its budget ({budget_text(tc.steps, tc.minutes)}); the budget counts "
            "from the run's start: give more steps or minutes to train further"
        )
    made = getattr(src.density, "ink", None)
    if made is not None:
        err_console.print(f"ink: {made.model} ({made.reason})", highlight=False, markup=False)
    tc = cfg.train
    if tc.objective == "exact" and hasattr(stop, "at_once"):
        stop.at_once = True  # computed whole: a signal cuts it at once (exit 130, no folder)
        if stop():  # a signal while it was planned: nothing is computed
            raise KeyboardInterrupt
    budget = budget_text(tc.steps, tc.minutes)
    origin = "" if begin.is_noise else f" from {escape(begin.label)}"
    computed = "optimal-transport" if tc.family == "ot" else "exact"
    what = (
        f"computing the [bold]{computed}[/bold] flow to {escape(src.label)}{origin} (no training)"
        if tc.objective == "exact"
        else f"training [bold]{tc.method}[/bold] on {escape(src.label)}{origin} for {budget}"
    )
    err_console.print(f"{what} -> {escape(str(out))}", highlight=False)
    try:
        with progress_bar() as update:
            if a["live"] and tc.objective != "exact":
                write = run.live()

                def both(p: Any) -> None:
                    update(p)
                    write(p)

                result = train_opened(run, progress=both, stop=stop)
            else:
                result = train_opened(run, progress=update, stop=stop)
    except Interrupted as stopped:
        _report_interrupted(stopped, out)
    except KeyboardInterrupt:  # work with no step boundary (the exact flow), cut at once
        from flowgif.store import CHECKPOINT

        said = (
            f"the flow was saved in {out} before the signal (its samples.png was not drawn)"
            if (out / CHECKPOINT).is_file()
            else "nothing was saved"
        )
        err_console.print(f"interrupted: {said}", highlight=False, markup=False)
        raise typer.Exit(130) from None
    did = (
        f"the {computed} flow, computed"
        if tc.objective == "exact"
        else f"{result.steps} steps in {result.seconds:.0f} s, loss {result.loss:.4f}"
    )
    out_console.print(
        f"done: {did}; see {out / 'samples.png'}; next: flowgif render {shlex.quote(str(out))}",
        highlight=False,
        markup=False,
    )


def _report_interrupted(stopped: Any, out: Path) -> None:
    """Say what a stopped run kept and how to go on; exit 130."""
    if stopped.saved:
        said = f"checkpoint of step {stopped.step} saved in {out}"
    elif stopped.checkpoint_step is not None:
        said = f"the checkpoint of step {stopped.checkpoint_step} in {out} is kept"
    else:
        said = "nothing was trained yet, so nothing was saved"
    then = (
        f"; continue with `flowgif train --resume {shlex.quote(str(out))}`"
        if stopped.checkpoint_step is not None
        else ""
    )
    err_console.print(f"interrupted: {said}{then}", highlight=False, markup=False)
    raise typer.Exit(130) from None


@app.command(name="configs")
@guarded
def configs_() -> None:
    """List the named configs that --config takes, one per line."""
    from flowgif.config import named_configs

    named = named_configs()
    width = max(map(len, named))
    for name, summary in named.items():
        out_console.print(
            f"{name:<{width}}  {summary}", highlight=False, markup=False, soft_wrap=True
        )
