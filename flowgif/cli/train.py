"""``flowgif train``: fit a flow, with a progress bar, checkpoints on Ctrl-C and SIGTERM.

(Over 400 lines for a reason: the command's twenty options are declared here, each with its
help text; the planning it does — config, both ends, the run folder — is split into small
functions below.)
"""

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
    _budget,
    _config_path,
    app,
    err_console,
    guarded,
    out_console,
)
from flowgif.cli.progress import progress_bar, stop_on_signals
from flowgif.errors import FlowgifError
from flowgif.limits import MAX_SEED
from flowgif.sources import kind_of


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
            help="CPU threads (0: torch default; 1 is fastest on a busy 2-core machine).",
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
) -> None:
    """Fit a flow to a picture; writes a run folder (config, checkpoint, loss.csv, samples.png)."""
    with stop_on_signals() as stop:
        _train(locals(), stop)


def _train(a: dict[str, Any], stop: Callable[[], bool]) -> None:
    """Plan the run (its config, both ends, its folder: all checked before any folder is
    made), then run it (:func:`_run`)."""
    cfg, src, begin, out = _plan(a)
    try:
        _run(a, stop, cfg, src, begin, out)
    except BaseException:
        from flowgif.store import release

        release(out)  # a start that failed leaves no empty folder behind
        raise


def _run(a: dict[str, Any], stop: Callable[[], bool], cfg: Any, src: Any, begin: Any, out: Path) -> None:
    """Say what the run will do, train it, and report."""
    from flowgif.errors import Interrupted
    from flowgif.fit import train_run
    from flowgif.store import budget_text

    made = getattr(src.density, "ink", None)
    if made is not None:
        err_console.print(f"ink: {made.model} ({made.reason})", highlight=False, markup=False)
    tc = cfg.train
    budget = budget_text(tc.steps, tc.minutes)
    origin = "" if begin.is_noise else f" from {escape(begin.label)}"
    what = (
        f"computing the [bold]exact[/bold] flow to {escape(src.label)}{origin} (no training)"
        if tc.objective == "exact"
        else f"training [bold]{tc.method}[/bold] on {escape(src.label)}{origin} for {budget}"
    )
    err_console.print(f"{what} -> {escape(str(out))}", highlight=False)
    try:
        with progress_bar() as update:
            result = train_run(
                src,
                config=cfg,
                out=out,
                progress=update,
                resume=a["resume"] is not None,
                stop=stop,
                start=begin,
            )
    except Interrupted as stopped:
        _report_interrupted(stopped, out)
    did = (
        "the exact flow, computed"
        if tc.objective == "exact"
        else f"{result.steps} steps in {result.seconds:.0f} s, loss {result.loss:.4f}"
    )
    out_console.print(
        f"done: {did}; see {out / 'samples.png'}; next: flowgif render {shlex.quote(str(out))}",
        highlight=False,
        markup=False,
    )


def _overrides(a: dict[str, Any]) -> dict[str, Any]:
    """The config settings given as flags."""
    overrides: dict[str, Any] = {
        "train.method": a["method"].value if a["method"] else None,
        "train.objective": a["objective"].value if a["objective"] else None,
        "train.family": a["family"].value if a["family"] else None,
        "field.augment": a["augment"],
        "train.batch": a["batch"],
        "train.lr": a["lr"],
        "train.seed": a["seed"],
        "train.device": a["device"].value if a["device"] else None,
        "train.threads": a["threads"],
        "density.invert": a["invert"],
        "density.ink_floor": a["ink_floor"],
        "density.ink": a["ink"].value if a["ink"] else None,
        "density.resolution": a["resolution"],
    }
    return {k: v for k, v in overrides.items() if v is not None}


def _plan(a: dict[str, Any]) -> tuple[Any, Any, Any, Path]:
    """The run's config, its end and start (loaded and checked together) and its folder."""
    from flowgif.config import load_config
    from flowgif.objectives.recipes import check_ends, for_ends
    from flowgif.sources import end_spec, load_source, spec
    from flowgif.store import check_new_run_dir, new_run_dir

    target = a["target"].value if a["target"] else None
    source: dict[str, Any] = {"image": a["img"], "text": a["text"], "target": target}
    overrides, out = _overrides(a), a["out"]
    if a["resume"] is not None:
        cfg, source, start = _resumed(a, source, overrides)
        out = a["resume"]
    else:
        if sum(v is not None for v in source.values()) != 1:
            raise FlowgifError(
                "give exactly one of --img PATH, --text WORD or --target NAME (or --resume RUN)"
            )
        start = a["start"] or "noise"
        cfg = load_config(_config_path(_recipe(a["config"], start)))
    cfg = cfg.updated(overrides | _budget(a["steps"], a["minutes"]))
    src = load_source(end_spec(**source), cfg.density)
    cfg = for_ends(cfg, src)
    begin = load_source(spec(start), cfg.density, start=True)
    check_ends(cfg, begin, src)
    for end in (begin, src):
        if end.picture is not None and end.picture.info.get("frames", 1) > 1:
            err_console.print(
                f"note: {escape(end.label)} is animated ({end.picture.info['frames']} "
                "frames); using its first frame",
                highlight=False,
            )
    if a["resume"] is not None:
        return cfg, src, begin, out
    from flowgif.device import resolve_device

    resolve_device(cfg.train.device)  # a device that is not there: before any folder is made
    if out is not None:
        check_new_run_dir(out, "train", src.digest)  # claimed: no other process shares it
    else:
        image = source["image"]
        name = image.stem if image else (source["target"] or _slug(source["text"]))
        if not begin.is_noise:
            name = f"{_stem(begin.label)}-to-{name}"
        out = new_run_dir(Path("runs"), name, "train", src.digest)
    return cfg, src, begin, out


def _recipe(config: str | None, start: str) -> str | None:
    """The config to train with: the one given, or for a flow from a picture (a word, a toy)
    the ``morph`` recipe, as ``flowgif morph`` uses — said in one line."""
    if config is not None or kind_of(start) == "noise":
        return config
    err_console.print(
        "recipe: morph (a flow from a picture pairs its points by optimal transport, so they "
        "travel as little as they can; --config default pairs them independently)",
        highlight=False,
        markup=False,
    )
    return "morph"


def _resumed(
    a: dict[str, Any], source: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, dict[str, Any], str]:
    """A resumed run's own config, end and start; refuses what may not change (the one rule
    of :mod:`flowgif.store.resume`)."""
    from flowgif.store import (
        CHECKPOINT,
        changed,
        check_marked,
        checkpoint_config,
        load_checkpoint,
    )

    resume = a["resume"]
    check_marked(resume)
    if a["config"] is not None:
        raise FlowgifError(
            "--config cannot be combined with --resume: a resumed run keeps its own "
            "config (only --steps, --minutes, --device and --threads may change)"
        )
    if a["out"] is not None and a["out"] != resume:
        raise FlowgifError("--out cannot be combined with --resume: the run stays in place")
    ckpt = load_checkpoint(resume / CHECKPOINT, for_resume=True)
    cfg = checkpoint_config(ckpt, source=str(resume))
    if cfg.train.objective == "exact":
        raise FlowgifError(
            f"{resume} holds the exact flow, computed whole: there is nothing to resume; "
            "render, sample or evaluate it"
        )
    method = overrides.get("train.method", cfg.train.method)
    moved = [("train.method", cfg.train.method, method)] if method != cfg.train.method else []
    for key, was, now in moved + changed(cfg, cfg.updated(overrides)):
        raise FlowgifError(
            f"{key} cannot change on --resume: {resume} was trained with {key} {was}, "
            f"not {now}; start a new run to change it"
        )
    source = _resumed_source(str(ckpt.get("image", "")), source, resume)
    return cfg, source, _resumed_start(ckpt.get("start"), a["start"], resume)


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


def _resumed_source(label: str, given: dict[str, Any], run: Path) -> dict[str, Any]:
    """What a resumed run was trained on, from its checkpoint's label."""
    kind, _, value = label.partition(":")
    if kind in ("text", "target"):
        for key, flag in (("text", "--text"), ("target", "--target")):
            if given[key] is not None and (key != kind or str(given[key]).lower() != value):
                raise FlowgifError(f"{flag} does not match {run}, which was trained on {label}")
        if given["image"] is not None:
            raise FlowgifError(f"--img does not match {run}, which was trained on {label}")
        return {"image": None, "text": None, "target": None, kind: value}
    if given["text"] is not None or given["target"] is not None:
        raise FlowgifError(f"{run} was trained on a picture, {label}; give --img or nothing")
    if given["image"] is not None:
        return {"image": given["image"], "text": None, "target": None}
    picture = Path(label)
    if not picture.is_file():
        where = "" if picture.is_absolute() else " (a path relative to where it was trained)"
        raise FlowgifError(
            f"the picture {run} was trained on, {label}{where}, is not there; give it with "
            "--img PATH (it is recognised by its content, wherever it is now)"
        )
    return {"image": picture, "text": None, "target": None}


def _stem(label: str) -> str:
    """A short name for a start in a run folder's name."""
    kind, sep, value = label.partition(":")
    if sep and kind in ("text", "target"):
        return _slug(value)
    return _slug(Path(label).stem)


def _resumed_start(record: Any, given: str | None, run: Path) -> str:
    """Where a resumed run started, from its checkpoint (``--from`` may only repeat it)."""
    label = record["label"] if isinstance(record, dict) else "noise"
    if given is not None:
        # A picture is matched by its hash when the run opens (it may have moved); a word, a
        # toy or noise by its name.
        if kind_of(label) != "picture" and given != label:
            raise FlowgifError(f"--from does not match {run}, which started from {label}")
        return given
    if kind_of(label) == "picture" and not Path(label).is_file():
        raise FlowgifError(
            f"the picture {run} started from, {label}, is not there; give it with --from PATH "
            "(it is recognised by its content, wherever it is now)"
        )
    return label


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


def _slug(text: str) -> str:
    """A folder name for a word: letters, digits, '-' and '_' only."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "text"
