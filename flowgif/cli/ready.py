"""``python -m flowgif.cli.ready``: a flowgif process started ahead of its command, so that the
command starts at once when it comes (``flowgif view`` keeps one for its next training).

It imports what training imports, says ``ready`` on stdout, reads one line from stdin (the
command's arguments as a JSON list, e.g. ``["train", "--img", "a.png", "--live"]``) and runs
it as ``flowgif ARGS`` would, its exit status its own. End of input (the server went away)
before a command: it exits 0 having done nothing.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import scipy.ndimage  # noqa: F401 - what a picture's ink and the teacher import
    import torch  # noqa: F401

    import flowgif.cli
    import flowgif.fit
    import flowgif.flows.exact
    import flowgif.sources

    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return
    try:
        args = json.loads(line)
    except ValueError:
        args = None
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        print("error: the command is a JSON list of strings", file=sys.stderr)
        sys.exit(2)
    sys.argv = ["flowgif", *args]
    flowgif.cli.main()


if __name__ == "__main__":
    main()
