"""What every command shares: the app, option types, error handling, run loading."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from flowgif import __version__
from flowgif.config import CHOICES, METHODS
from flowgif.config.flags import as_flags
from flowgif.errors import FlowgifError
from flowgif.limits import MAX_PARTICLES, MAX_SEED
from flowgif.sources.toys import ENERGIES, TOYS


class _OneLineErrors(TyperGroup):
    """The app's command group: a usage error (an unknown option, a value out of range) is
    one line on stderr and exit 2, as POSIX tools do, wherever the app is called from (the
    ``flowgif`` script, ``python -m flowgif``, a test's runner); Ctrl-C is exit 130."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        import sys

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as err:
            kind = type(err).__name__
            if kind == "Abort":
                sys.exit(130)
            if not hasattr(err, "format_message"):  # not the parser's (typer's copy of click)
                raise
            if kind == "NoArgsIsHelpError":
                err.show()  # type: ignore[attr-defined] - the help itself, not an error
                sys.exit(0)
            line = " ".join(str(err.format_message()).split())
            ctx = getattr(err, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            err_console.print(
                f"[red]error:[/red] {escape(line)}{escape(where)}", highlight=False, soft_wrap=True
            )
            sys.exit(getattr(err, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fit a continuous normalizing flow to a picture and animate N(0,I) (or another "
    "picture) turning into it.",
)
# emoji=False: a name such as "text:b" followed by ":" is a person's text, not the emoji :b:
out_console = Console(soft_wrap=True, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])


Method = StrEnum("Method", {name: name for name in METHODS})
MethodOpt = Annotated[
    Method | None,
    typer.Option(
        help="Objective and family in one word (as for train): fm, ffjord, realnvp, planar, "
        "radial, exact (the exact flow, computed in seconds: no training) or ot (the "
        "optimal-transport map, computed: straight paths that never cross).",
        show_default=False,
    ),
]
Objective = StrEnum("Objective", {name: name for name in CHOICES["train.objective"]})
Family = StrEnum("Family", {name: name for name in CHOICES["train.family"]})


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


Toy = StrEnum("Toy", {name: name for name in (*TOYS, *ENERGIES)})


class ColorMode(StrEnum):
    position = "position"
    image = "image"
    target = "target"
    density = "density"
    mono = "mono"


class Background(StrEnum):
    light = "light"
    dark = "dark"
    transparent = "transparent"


Ink = StrEnum("Ink", {name: name for name in CHOICES["density.ink"]})


class Loop(StrEnum):
    forward = "forward"
    pingpong = "pingpong"


RunArg = Annotated[
    Path | None,
    typer.Argument(help="Run folder (default: the latest run under runs/).", show_default=False),
]
DeviceOpt = Annotated[Device, typer.Option(help="auto uses CUDA when present.")]
FpsOpt = Annotated[
    int, typer.Option(min=1, max=100, help="Frames per second (GIF: 25 or 50 play exactly).")
]
ParticlesOpt = Annotated[int, typer.Option(min=1, max=MAX_PARTICLES, help="Particles drawn.")]
SeedOpt = Annotated[
    int, typer.Option(min=0, max=MAX_SEED, help="Seed of the noise the particles start from.")
]
ThreadsOpt = Annotated[
    int,
    typer.Option(min=0, help="CPU threads (0: the cores idle now, measured; at least 1)."),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        help="TOML config file, or a named config: fast, default, quality, realnvp, planar, "
        "radial, augmented ... (`flowgif configs` lists them).",
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


def _term_as_interrupt() -> object:
    """SIGTERM (a scheduler's kill, a page's stop) stops a command as Ctrl-C does: what it was
    writing is removed, it says "interrupted" and exits 130 (commands that save at a step
    boundary set their own handler while they train). The handler it replaced, or None."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def guarded(fn: F) -> F:
    """Turn FlowgifError (or an OSError that no command caught: the system's reason) into one
    red line and exit 1, Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = _term_as_interrupt()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch/typer chatter
                warnings.simplefilter("default", RuntimeWarning)
                return fn(*args, **kwargs)
        except FlowgifError as err:
            err_console.print(
                f"[red]error:[/red] {escape(as_flags(str(err)))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except OSError as err:  # the system's reason, with the file it was about
            where = f": {err.filename}" if err.filename is not None else ""
            err_console.print(
                f"[red]error:[/red] {escape(str(err.strerror or err))}{escape(str(where))}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except (MemoryError, RuntimeError) as err:
            text = str(err).lower()
            if isinstance(err, RuntimeError) and not any(
                k in text for k in ("out of memory", "can't allocate", "cannot allocate")
            ):
                raise
            err_console.print(
                "[red]error:[/red] out of memory: lower the sizes asked for (batch, field "
                "width, particles, frames, samples)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        finally:
            if previous is not None:
                import signal

                signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]

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
    """Fit a continuous normalizing flow to a picture and animate N(0,I) (or another picture)
    turning into it."""


def _budget(steps: int | None, minutes: float | None) -> dict[str, Any]:
    """A budget given alone replaces the config's other budget."""
    out: dict[str, Any] = {}
    if steps is not None:
        out = {"train.steps": steps, "train.minutes": 0.0 if minutes is None else minutes}
    elif minutes is not None:
        out = {"train.minutes": minutes, "train.steps": 0}
    return out


def _run_or_latest(run: Path | None) -> Path:
    from flowgif.store import find_latest_run

    return run if run is not None else find_latest_run(Path("runs"))


def _config_path(value: str | None) -> Path | None:
    """A config file, or the name of a shipped one (resolved by ``load_config``)."""
    return None if value is None else Path(value)


def _render_options(params: dict[str, Any]) -> Any:
    """RenderOptions from the render command's parameters (enums to their values)."""
    from flowgif.render import RenderOptions

    fields = set(RenderOptions.__dataclass_fields__)
    return RenderOptions(
        **{k: str(v) if isinstance(v, StrEnum) else v for k, v in params.items() if k in fields}
    )


def _caption(run: Any) -> str:
    """``method, N s`` for a panel of a side-by-side render."""
    names = {
        "fm": "flow matching",
        "ffjord": "FFJORD",
        "reverse": "CNF, reverse KL",
        "realnvp": "RealNVP",
        "planar": "planar flow",
        "radial": "radial flow",
        "exact": "the exact flow",
        "ot": "optimal transport",
    }
    method = run.config.train.method
    name = names.get(method, method)
    if run.config.field.augment:  # only continuous flows can be augmented
        name += f" +{run.config.field.augment}D"
    seconds = run.meta.get("seconds")
    return f"{name}, {seconds:.0f} s" if isinstance(seconds, (int, float)) and seconds else name


def _load(run: Path | None, device: Device, threads: int = 0) -> tuple[Path, Any, Any]:
    """The run folder (or the latest), the loaded run and the resolved device."""
    from flowgif.device import resolve_device, set_threads
    from flowgif.store import load_run

    set_threads(threads)
    path = _run_or_latest(run)
    dev = resolve_device(device.value)
    return path, load_run(path, dev), dev
