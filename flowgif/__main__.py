"""Allow ``python -m flowgif``."""

from flowgif.cli import main

main()
