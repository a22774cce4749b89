"""``flowgif batch``: every picture of a folder, resumable."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flowgif.batch.runner import ENGINES
from flowgif.cli.common import (
    ConfigOpt,
    MethodOpt,
    MinutesOpt,
    StepsOpt,
    _budget,
    _config_path,
    _render_options,
    app,
    as_flags,
    err_console,
    guarded,
    out_console,
)
from flowgif.errors import FlowgifError

Engine = StrEnum("Engine", {name: name for name in ENGINES})  # type: ignore[misc]


@app.command(name="batch")
@guarded
def batch_(
    folder: Annotated[
        Path, typer.Argument(help="Folder of pictures (found by content, not suffix).")
    ],
    out: Annotated[Path, typer.Option(help="Where the run folders go.")] = Path("runs"),
    config: ConfigOpt = None,
    method: MethodOpt = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    render_args: Annotated[
        str,
        typer.Option(help='Options for `flowgif render`, e.g. "--frames 60 --color image".'),
    ] = "",
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Processes at once (1 thread each); on CUDA one per visible GPU instead.",
        ),
    ] = 1,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders.")] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            help="local: this machine's processes (--jobs); ray: one Ray task per picture "
            "(per stack with --stack) "
            "(pip install 'flowgif\\[ray]'; OUT must be reachable from every node)."
        ),
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option(
            help=r"Ray cluster: auto, HOST:PORT or ray://HOST:PORT \[default: start one here].",
            show_default=False,
        ),
    ] = None,
    cpus_per_task: Annotated[
        float, typer.Option(min=0.01, max=1024, help="Ray: CPUs per picture (its threads).")
    ] = 1.0,
    stack: Annotated[
        str,
        typer.Option(
            help="Pictures trained at once as one stacked model: a number, or auto (1 on a "
            "CPU, where stacking measured no gain; on a GPU as many as fit).",
        ),
    ] = "auto",
    gpus_per_task: Annotated[
        float,
        typer.Option(min=0.0, max=64, help="Ray: GPUs per picture; 0.25 puts four on a GPU."),
    ] = 0.0,
) -> None:
    """Train and render every picture of a folder, resumably; writes OUT/index.html.

    Skips what is done, resumes what was cut short, goes on past bad pictures. Exits 1 if any
    picture failed.
    """
    from flowgif.batch import EngineOptions, run_batch
    from flowgif.cli.progress import stop_on_signals
    from flowgif.config import load_config

    if engine is Engine.local and (address or cpus_per_task != 1.0 or gpus_per_task):
        raise FlowgifError("--address, --cpus-per-task and --gpus-per-task need --engine ray")
    if engine is Engine.ray and jobs != 1:
        raise FlowgifError(
            "--jobs is the local engine's; Ray runs as many pictures at once as the cluster "
            "has room for (--cpus-per-task, --gpus-per-task)"
        )
    if stack != "auto" and not (stack.isdigit() and 1 <= int(stack) <= 4096):
        raise FlowgifError(f"--stack must be auto or a number from 1 to 4096, not {stack!r}")
    cfg = load_config(_config_path(config)).updated(_budget(steps, minutes))
    if method is not None:
        cfg = cfg.updated({"train.method": method.value})
    render = _parse_render_args(render_args)
    options = EngineOptions(jobs, address, cpus_per_task, gpus_per_task)
    colours = {"done": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow"}

    def report(item: Any) -> None:
        colour = colours.get(item.status, "white")
        err_console.print(
            f"[{colour}]{item.status}[/{colour}] {escape(item.image)} "
            f"{escape(as_flags(item.reason))}",
            highlight=False,
        )

    with stop_on_signals() as stop:
        items = run_batch(
            folder,
            out,
            cfg,
            render,
            recursive,
            report,
            stop,
            engine.value,
            options,
            stack if stack == "auto" else int(stack),
        )
    result = _print_report(items, folder, out)
    if stop():
        raise typer.Exit(130)
    if result["failed"]:
        raise typer.Exit(1)


def _print_report(items: list[Any], folder: Path, out: Path) -> dict[str, Any]:
    """The batch's table and its one-line count; the counts."""
    from flowgif.batch import summary

    table = Table(title=f"batch {escape(str(folder))}")
    for column in ("picture", "status", "run", "note"):
        table.add_column(column, overflow="fold")
    for item in items:
        run = str(Path(item.run).relative_to(out)) if item.run else ""
        table.add_row(*(Text(v) for v in (item.image, item.status, run, as_flags(item.reason))))
    out_console.print(table)
    result = summary(items)
    counts = ", ".join(
        f"{result[k]} {k}"
        for k in ("done", "skipped", "failed", "interrupted", "not started")
        if result[k] or k in ("done", "failed")
    )
    ignored = f", {result['ignored']} other files ignored" if result["ignored"] else ""
    out_console.print(
        f"{counts}{ignored}; see {out / 'batch.json'} and {out / 'index.html'}",
        highlight=False,
        markup=False,
    )
    return result


@app.command()
@guarded
def gallery(
    out: Annotated[Path, typer.Argument(help="A batch's output folder.")] = Path("runs"),
) -> None:
    """Rebuild a batch's gallery page, OUT/index.html, from its run folders."""
    from flowgif.render.gallery import write_gallery

    page = write_gallery(out)
    out_console.print(f"wrote {page}", highlight=False, markup=False)


def _parse_render_args(text: str) -> dict[str, Any]:
    """Parse ``--render-args`` with the render command's own options and checks."""
    import shlex

    command = typer.main.get_command(app).commands["render"]  # type: ignore[attr-defined]
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise FlowgifError(f"--render-args: {err}") from None
    if {"--help", "-h"} & set(words):
        raise FlowgifError(
            "--render-args takes render's options, not --help: see flowgif render --help"
        )
    try:
        ctx = command.make_context("render", words, resilient_parsing=False)
    except Exception as err:  # typer's (vendored) click raises UsageError subclasses
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        raise FlowgifError(f"--render-args: {message}") from None
    params = ctx.params
    if params.get("runs") or params.get("out") or params.get("label"):
        raise FlowgifError("--render-args: RUN, --out and --label are set by batch itself")
    return dataclasses.asdict(_render_options(params))
