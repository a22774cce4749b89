"""``flowgif batch``: every picture of a folder, resumable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flowgif.cli.common import (
    ConfigOpt,
    MinutesOpt,
    StepsOpt,
    _budget,
    _config_path,
    _render_options,
    app,
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
        int, typer.Option(min=1, help="Pictures at once (processes, 1 thread each).")
    ] = 1,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders.")] = False,
) -> None:
    """Train and render every picture of a folder, resumably.

    Skips what is done, resumes what was cut short, goes on past bad pictures. Exits 1 if any
    picture failed.
    """
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
