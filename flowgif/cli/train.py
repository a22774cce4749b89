"""``flowgif train``: fit a flow, with a progress bar, checkpoints on Ctrl-C and SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from flowgif.cli.common import (
    ConfigOpt,
    Device,
    Method,
    MinutesOpt,
    StepsOpt,
    Toy,
    _budget,
    _config_path,
    app,
    err_console,
    guarded,
    out_console,
)
from flowgif.errors import FlowgifError


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
    config: ConfigOpt = None,
    method: Annotated[
        Method | None,
        typer.Option(
            help="Continuous: fm (flow matching, fast), ffjord (maximum likelihood through the "
            "adjoint ODE). Discrete, rendered layer by layer: realnvp (affine couplings), planar, "
            "radial. Energy targets use reverse KL.",
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
        int | None, typer.Option(min=1, help="Points per step.", show_default=False)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="Peak learning rate.", show_default=False)
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of every random stream.", show_default=False)
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
        typer.Option(min=2, help="Working resolution, longer side in pixels.", show_default=False),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this folder from its last checkpoint.", show_default=False
        ),
    ] = None,
) -> None:
    """Fit a flow to a picture; writes a run folder (config, checkpoint, loss.csv, samples.png)."""
    from flowgif.config import load_config
    from flowgif.run import load_checkpoint, new_run_dir

    source: dict[str, Any] = {
        "image": img,
        "text": text,
        "target": target.value if target else None,
    }
    if resume is not None:
        ckpt = load_checkpoint(resume / "checkpoint.pt")
        from flowgif.config import Config

        cfg = Config.from_dict(ckpt["config"], source=str(resume))
        label = str(ckpt.get("image", ""))
        kind, _, value = label.partition(":")
        if kind in ("text", "target"):
            source = {"image": None, "text": None, "target": None, kind: value}
        elif img is None:
            source["image"] = Path(label)
        out = resume
    else:
        if sum(v is not None for v in source.values()) != 1:
            raise FlowgifError(
                "give exactly one of --img PATH, --text WORD or --target NAME (or --resume RUN)"
            )
        cfg = load_config(_config_path(config))
    overrides: dict[str, Any] = {
        "train.method": method.value if method else None,
        "field.augment": augment,
        "train.batch": batch,
        "train.lr": lr,
        "train.seed": seed,
        "train.device": device.value if device else None,
        "train.threads": threads,
        "density.invert": invert,
        "density.ink_floor": ink_floor,
        "density.resolution": resolution,
    }
    cfg = cfg.updated(
        {k: v for k, v in overrides.items() if v is not None} | _budget(steps, minutes)
    )
    from flowgif.train import Source, train_run

    src = Source.load(cfg, **source)  # a bad picture is reported before any folder is made
    cfg = src.config
    if src.picture.info.get("frames", 1) > 1:
        err_console.print(
            f"note: {src.label} is animated ({src.picture.info['frames']} "
            "frames); using its first frame",
            highlight=False,
        )
    if out is None:
        image = source["image"]
        name = image.stem if image else (source["target"] or _slug(source["text"]))
        out = new_run_dir(Path("runs"), name)

    tc = cfg.train
    budget = (
        (f"{tc.steps} steps" if tc.steps else "")
        + (" or " if tc.steps and tc.minutes else "")
        + (f"{tc.minutes:g} min" if tc.minutes else "")
    )
    err_console.print(
        f"training [bold]{tc.method}[/bold] on {src.label} for {budget} -> {out}",
        highlight=False,
    )
    try:
        with _progress_bar() as update, _sigterm_as_interrupt():
            result = train_run(
                src, config=cfg, out=out, progress=update, resume=resume is not None
            )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: checkpoint saved in {out}; continue with "
            f"`flowgif train --resume {out}`",
            highlight=False,
        )
        raise typer.Exit(130) from None
    out_console.print(
        f"done: {result.steps} steps in {result.seconds:.0f} s, loss "
        f"{result.loss:.4f}; see {out / 'samples.png'}; next: flowgif render "
        f"{out}",
        highlight=False,
    )


def _slug(text: str) -> str:
    """A folder name for a word: letters, digits, '-' and '_' only."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "text"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's kill) saves a checkpoint just as Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _progress_bar:  # noqa: N801 - used as a context manager, reads like a function
    """A rich progress bar on a terminal; silent otherwise (loss.csv has everything)."""

    def __enter__(self) -> Callable[[Any], None]:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = None
        if not err_console.is_terminal:
            return lambda p: None
        self.bar = Progress(
            TextColumn("step {task.fields[step]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} it/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.bar.start()
        task = self.bar.add_task("train", total=1.0, step=0, loss=float("nan"), rate=0.0)

        def update(p: Any) -> None:
            self.bar.update(
                task,
                completed=p.fraction,
                step=p.step,
                loss=p.loss,
                rate=p.step / max(p.seconds, 1e-9),
            )

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
