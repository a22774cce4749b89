"""The ``flowgif`` command line: parses, calls the library, reports. No logic of its own.

One module per group of commands (``train``, ``show``: render/sample/eval/plot, ``morph``,
``batch``)
over ``common`` (the app, shared option types, error handling). Heavy modules (torch and
everything that uses it) are imported inside the commands, so that ``flowgif --help`` answers
at once.
"""

from __future__ import annotations

# isort: off
from flowgif.cli.common import app
from flowgif.cli import train, show, morph, batch, view  # noqa: F401 - registers the commands, in this order
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``flowgif`` script: a command-line usage error (an unknown option,
    a value outside an option's range) is one line and exit status 2, as POSIX tools and
    click do; every other error is the commands' own one line and exit 1 (the app's group,
    :class:`flowgif.cli.common._OneLineErrors`, does both)."""
    app(prog_name="flowgif")
