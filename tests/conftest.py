"""Shared fixtures: tiny pictures and one tiny trained run, all on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40x24 black L-shape on white: not square, not symmetric (catches flips)."""
    img = Image.new("L", (40, 24), 255)
    d = ImageDraw.Draw(img)
    d.rectangle([4, 2, 11, 21], fill=0)  # tall bar on the left
    d.rectangle([4, 16, 30, 21], fill=0)  # foot along the bottom
    path = tmp_path_factory.mktemp("img") / "ell.png"
    img.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_png: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained for a few dozen flow-matching steps with configs/smoke.toml."""
    from flowgif.config import load_config
    from flowgif.fit import train_run

    out = tmp_path_factory.mktemp("runs") / "ell"
    train_run(tiny_png, load_config(ROOT / "configs" / "smoke.toml"), out)
    return out


def ink_image(array: np.ndarray) -> Image.Image:
    """Grey picture from an ink array in [0, 1] (1 = black)."""
    return Image.fromarray((255 * (1 - array)).astype(np.uint8), mode="L")
