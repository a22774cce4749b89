"""The command line's flag for each setting of the library, and library messages with
their settings named as flags (``density.invert`` -> ``--invert``): what every face of flowgif
that a person reads (the command line, the view's page) says."""

from __future__ import annotations

import re

# The library names its settings as Python does (``density.invert``, ``render.frames``); on the
# command line they are flags.
FLAGS = {
    "density.invert": "--invert",
    "density.ink_floor": "--ink-floor",
    "density.ink": "--ink",
    "density.resolution": "--resolution",
    "field.augment": "--augment",
    "train.method": "--method",
    "train.objective": "--objective",
    "train.family": "--family",
    "train.steps": "--steps",
    "train.minutes": "--minutes",
    "train.batch": "--batch",
    "train.lr": "--lr",
    "train.seed": "--seed",
    "train.device": "--device",
    "train.threads": "--threads",
}
RENDER = (
    *("frames", "fps", "particles", "size", "color", "background", "seed", "ease", "hold"),
    *("loop", "quality", "dot", "zoom", "trail", "glow", "pace", "max_mb", "panels"),
)
FLAGS |= {f"render.{name}": "--" + name.replace("_", "-") for name in RENDER}
FLAGS |= {"plot.kind": "--kind", "batch.out": "--out", "batch.recursive": "--recursive"}
FLAGS |= {"batch.stack": "--stack", "batch.engine": "--engine"}
FLAGS |= {"morph.runs": "--runs"}
_SETTING = re.compile(r"(?<![\w./-])([a-z]+\.[a-z_]+)(?![\w./-])(?! =)")


def as_flags(message: str) -> str:
    """A library message with its settings named as the command line's flags (a config
    file's ``key = value`` is left as it is)."""

    return _SETTING.sub(lambda m: FLAGS.get(m.group(1), m.group(1)), message)
