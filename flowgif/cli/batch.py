"""``flowgif batch``: every picture of a folder, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flowgif.cli.common import (
    ConfigOpt,
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
        int, typer.Option(min=1, max=256, help="Pictures at once (processes, 1 thread each).")
    ] = 1,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders.")] = False,
) -> None:
    """Train and render every picture of a folder, resumably.

    Skips what is done, resumes what was cut short, goes on past bad pictures. Exits 1 if any
    picture failed.
    """
    from flowgif.batch import run_batch, summary
    from flowgif.cli.train import _stop_on_signals
    from flowgif.config import load_config

    cfg = load_config(_config_path(config)).updated(_budget(steps, minutes))
    render = _parse_render_args(render_args)
    colours = {"done": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow"}

    def report(item: Any) -> None:
        colour = colours.get(item.status, "white")
        err_console.print(
            f"[{colour}]{item.status}[/{colour}] {escape(item.image)} "
            f"{escape(as_flags(item.reason))}",
            highlight=False,
        )

    with _stop_on_signals() as stop:
        items = run_batch(folder, out, cfg, render, jobs, recursive, report, stop)
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
        f"{counts}{ignored}; see {out / 'batch.json'}", highlight=False, markup=False
    )
    if stop():
        raise typer.Exit(130)
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
