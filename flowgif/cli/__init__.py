"""The ``flowgif`` command line: parses, calls the library, reports. No logic of its own.

One module per group of commands (``train``, ``show``: render/sample/eval/plot, ``morph``,
``batch``)
over ``common`` (the app, shared option types, error handling). Heavy modules (torch and
everything that uses it) are imported inside the commands, so that ``flowgif --help`` answers
at once.
"""

from __future__ import annotations

import sys

# isort: off
from flowgif.cli.common import app
from flowgif.cli import train, show, morph, batch  # noqa: F401 - registers the commands, in this order
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``flowgif`` script: a command-line usage error (an unknown option,
    a value outside an option's range) is one line and exit status 2, as POSIX tools and
    click do; every other error is the commands' own one line and exit 1."""
    import typer
    from rich.markup import escape

    from flowgif.cli.common import err_console

    if len(sys.argv) <= 1:
        sys.exit(app())  # the help
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="flowgif", standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as err:
        if not hasattr(err, "format_message"):  # not the parser's (click's, or typer's copy)
            raise
        line = " ".join(str(err.format_message()).split())
        ctx = getattr(err, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err_console.print(
            f"[red]error:[/red] {escape(line)}{escape(where)}", highlight=False, soft_wrap=True
        )
        sys.exit(getattr(err, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
