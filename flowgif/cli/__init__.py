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
    """Entry point of the ``flowgif`` script."""
    sys.exit(app())
