"""The ``flowgif`` command line: parses, calls the library, reports. No logic of its own.

Heavy modules (torch and everything that uses it) are imported inside the commands, so that
``flowgif --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from flowgif import __version__
from flowgif.errors import FlowgifError
from flowgif.targets import ENERGIES, TOYS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit a continuous normalizing flow to a picture and animate N(0,I) turning into it.",
)
out_console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class Method(StrEnum):
    fm = "fm"
    ffjord = "ffjord"
    reverse = "reverse"
    realnvp = "realnvp"
    planar = "planar"
    radial = "radial"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


Toy = StrEnum("Toy", {name: name for name in (*TOYS, *ENERGIES)})


class ColorMode(StrEnum):
    position = "position"
    image = "image"
    density = "density"
    mono = "mono"


class Background(StrEnum):
    light = "light"
    dark = "dark"


class Loop(StrEnum):
    forward = "forward"
    pingpong = "pingpong"


RunArg = Annotated[
    Path | None,
    typer.Argument(help="Run folder (default: the latest run under runs/).", show_default=False),
]
DeviceOpt = Annotated[Device, typer.Option(help="auto uses CUDA when present.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the noise the particles start from.")]
ThreadsOpt = Annotated[
    int, typer.Option(min=0, help="CPU threads (0: torch's default; 1 on a busy machine).")
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        help="TOML config file, or the name of one in configs/ (fast, default, quality, "
        "realnvp, planar, radial, augmented ...).",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Training steps (alone, no time limit).", show_default=False),
]
MinutesOpt = Annotated[
    float | None,
    typer.Option(min=0.01, help="Wall-time budget (alone, no step limit).", show_default=False),
]


def guarded(fn: F) -> F:
    """Turn FlowgifError into one red line and exit 1, Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch/typer chatter
                warnings.simplefilter("default", RuntimeWarning)
                return fn(*args, **kwargs)
        except FlowgifError as err:
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"flowgif {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Fit a continuous normalizing flow to a picture and animate N(0,I) turning into it."""


def _budget(steps: int | None, minutes: float | None) -> dict[str, Any]:
    """A budget given alone replaces the config's other budget."""
    out: dict[str, Any] = {}
    if steps is not None:
        out = {"train.steps": steps, "train.minutes": 0.0 if minutes is None else minutes}
    elif minutes is not None:
        out = {"train.minutes": minutes, "train.steps": 0}
    return out


def _run_or_latest(run: Path | None) -> Path:
    from flowgif.run import find_latest_run

    return run if run is not None else find_latest_run(Path("runs"))


def _config_path(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.exists() and path.suffix == "" and (Path("configs") / f"{value}.toml").exists():
        return Path("configs") / f"{value}.toml"
    return path


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
    frames: Annotated[int, typer.Option(min=2, help="Frames from noise to picture.")] = 120,
    fps: Annotated[
        int, typer.Option(min=1, max=100, help="Frames per second (GIF: 25 or 50 play exactly).")
    ] = 25,
    particles: Annotated[int, typer.Option(min=1, help="Particles drawn.")] = 20_000,
    size: Annotated[int, typer.Option(min=16, max=4096, help="Longer side in pixels.")] = 512,
    color: Annotated[
        ColorMode,
        typer.Option(
            help="position: hue by starting angle; image: the "
            "picture's colours; density: heat map; mono."
        ),
    ] = ColorMode.position,
    background: Annotated[Background, typer.Option(help="Canvas colour.")] = Background.light,
    loop: Annotated[Loop, typer.Option(help="pingpong plays back to the noise.")] = Loop.forward,
    hold: Annotated[
        float, typer.Option(min=0.0, help="Seconds on the finished picture (half on the noise).")
    ] = 1.0,
    ease: Annotated[bool, typer.Option(help="Slow start and end.")] = True,
    trail: Annotated[
        int, typer.Option(min=0, max=30, help="Frames of fading trail behind each particle.")
    ] = 0,
    glow: Annotated[
        float, typer.Option(min=0.0, max=10.0, help="Soft halo around particles (0: crisp).")
    ] = 0.0,
    zoom: Annotated[
        bool, typer.Option(help="Start wide enough for the whole noise cloud, glide in.")
    ] = True,
    dot: Annotated[
        int, typer.Option(min=0, max=16, help="Particle size in pixels (0: from --size).")
    ] = 0,
    quality: Annotated[int, typer.Option(min=0, max=10, help="MP4 quality.")] = 7,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Animate a trained run: particles from N(0,I) carried to the picture (a discrete flow's
    layer outputs, joined by straight lines). Several runs: side by side."""
    from flowgif.render import render as do_render
    from flowgif.run import load_run

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
        err_console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
    s = report.seconds
    out_console.print(
        f"wrote {out} ({report.frames} frames, {report.width}x{report.height}, "
        f"{report.bytes / 1e6:.1f} MB) in {sum(s.values()):.1f} s: solve {s['solve']:.1f} s "
        f"({report.nfe} NFE), draw {s['draw']:.1f} s, encode {s['encode']:.1f} s",
        highlight=False,
    )


@app.command()
@guarded
def sample(
    run: RunArg = None,
    n: Annotated[int, typer.Option(min=1, help="Number of samples.")] = 100_000,
    out: Annotated[
        Path | None,
        typer.Option(help=".npy file \\[default: <run>/samples.npy].", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Write (N, 2) samples in the picture's pixel coordinates (x = column, y = row, 0 on top)."""
    import numpy as np

    from flowgif.model import sample as draw_samples
    from flowgif.run import atomic_write

    path, loaded, dev = _load(run, device, threads)
    x = draw_samples(loaded.flow, n, seed, dev)
    uv = loaded.density.to_pixels(x).astype(np.float32)
    out = out or path / "samples.npy"
    if out.suffix != ".npy":
        raise FlowgifError(f"--out must end in .npy, got {out.name}")
    atomic_write(out, lambda f: np.save(f, uv))
    out_console.print(
        f"wrote {out}: {n} samples, shape ({n}, 2), pixel coordinates of the "
        f"{loaded.density.size[0]}x{loaded.density.size[1]} picture",
        highlight=False,
    )


@app.command(name="eval")
@guarded
def eval_(
    run: RunArg = None,
    n_nll: Annotated[
        int, typer.Option(min=100, help="Picture samples for the likelihood.")
    ] = 20_000,
    samples: Annotated[
        int, typer.Option(min=100, help="Flow samples for tv and on_ink.")
    ] = 100_000,
    cells: Annotated[int, typer.Option(min=2, help="Grid cells on the longer side for tv.")] = 64,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
) -> None:
    """Score a run against its picture: kl (nats), nll, entropy, tv, on_ink, NFE; writes
    <run>/eval.json."""
    from flowgif.evaluate import evaluate
    from flowgif.run import atomic_write_text

    path, loaded, dev = _load(run, device, threads)
    res = evaluate(loaded, n_nll, samples, cells, device=dev)
    table = Table(title=f"eval {path}", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in res.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out_console.print(table)
    atomic_write_text(path / "eval.json", json.dumps(res, indent=2) + "\n")


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
    """Draw a PNG that explains a run (needs matplotlib: pip install 'flowgif[plot]')."""
    from flowgif.plot import plot as draw_plot

    try:
        ts = tuple(float(t) for t in times.split(","))
    except ValueError:
        raise FlowgifError(f"--times must be numbers separated by commas, got {times!r}") from None
    path, loaded, dev = _load(run, device, threads)
    out = out or path / f"{kind.value}.png"
    draw_plot(loaded, kind.value, out, times=ts, device=dev)
    out_console.print(f"wrote {out}", highlight=False)


@app.command(name="batch")
@guarded
def batch_(
    folder: Annotated[
        Path, typer.Argument(help="Folder of pictures (found by content, not suffix).")
    ],
    out: Annotated[Path, typer.Option(help="Where the run folders go.")] = Path("runs"),
    config: ConfigOpt = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    render_args: Annotated[
        str,
        typer.Option(help='Options for `flowgif render`, e.g. "--frames 60 --color image".'),
    ] = "",
    jobs: Annotated[
        int, typer.Option(min=1, help="Pictures at once (processes, 1 thread each).")
    ] = 1,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders.")] = False,
) -> None:
    """Train and render every picture of a folder; skips what is done, resumes what was cut
    short, goes on past bad pictures. Exits 1 if any picture failed."""
    from flowgif.batch import run_batch, summary
    from flowgif.config import load_config
    from flowgif.run import atomic_write_text

    cfg = load_config(_config_path(config)).updated(_budget(steps, minutes))
    render = _parse_render_args(render_args)

    def report(item: Any) -> None:
        colour = {"done": "green", "skipped": "cyan", "failed": "red"}[item.status]
        err_console.print(
            f"[{colour}]{item.status}[/{colour}] {item.image} {item.reason}", highlight=False
        )

    items = run_batch(folder, out, cfg, render, jobs, recursive, report)
    table = Table(title=f"batch {folder}")
    for column in ("picture", "status", "run", "note"):
        table.add_column(column)
    for item in items:
        table.add_row(item.image, item.status, item.run, item.reason)
    out_console.print(table)
    result = summary(items)
    atomic_write_text(out / "batch.json", json.dumps(result, indent=2) + "\n")
    out_console.print(
        f"{result['done']} done, {result['skipped']} skipped, "
        f"{result['failed']} failed; see {out / 'batch.json'}",
        highlight=False,
    )
    if result["failed"]:
        raise typer.Exit(1)


def _parse_render_args(text: str) -> dict[str, Any]:
    """Parse ``--render-args`` with the render command's own options and checks."""
    import shlex

    command = typer.main.get_command(app).commands["render"]  # type: ignore[attr-defined]
    try:
        ctx = command.make_context("render", shlex.split(text), resilient_parsing=False)
    except Exception as err:  # typer's (vendored) click raises UsageError subclasses
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        raise FlowgifError(f"--render-args: {message}") from None
    params = ctx.params
    if params.get("runs") or params.get("out") or params.get("label"):
        raise FlowgifError("--render-args: RUN, --out and --label are set by batch itself")
    return dataclasses.asdict(_render_options(params))


def _render_options(params: dict[str, Any]) -> Any:
    """RenderOptions from the render command's parameters (enums to their values)."""
    from flowgif.render import RenderOptions

    fields = set(RenderOptions.__dataclass_fields__)
    return RenderOptions(
        **{k: str(v) if isinstance(v, StrEnum) else v for k, v in params.items() if k in fields}
    )


def _caption(run: Any) -> str:
    """``method, N s`` (or ``N steps``) for a panel of a side-by-side render."""
    names = {"fm": "flow matching", "ffjord": "FFJORD", "reverse": "CNF, reverse KL"}
    method = run.config.train.method
    name = names.get(method, {"realnvp": "RealNVP"}.get(method, f"{method} flow"))
    if run.config.field.augment and method in names:
        name += f" +{run.config.field.augment}D"
    seconds = run.meta.get("seconds")
    return f"{name}, {seconds:.0f} s" if seconds else name


def _load(run: Path | None, device: Device, threads: int = 0) -> tuple[Path, Any, Any]:
    """The run folder (or the latest), the loaded run and the resolved device."""
    import torch

    from flowgif.run import load_run, resolve_device

    if threads:
        torch.set_num_threads(threads)
    path = _run_or_latest(run)
    dev = resolve_device(device.value)
    return path, load_run(path, dev), dev


def main() -> None:
    """Entry point of the ``flowgif`` script."""
    sys.exit(app())
