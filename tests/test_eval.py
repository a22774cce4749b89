"""Evaluation figures: the tv/on_ink re-implementation agrees with the independent referee."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowgif.evaluate import evaluate, tv_score
from flowgif.sources.picture import ImageDensity, ink_map, load_image
from flowgif.store import load_run
from tests.conftest import SHARED

REFEREE = SHARED / "referee" / "score.py"


def referee(image: Path, samples: np.ndarray, tmp_path: Path) -> dict:
    np.save(tmp_path / "s.npy", samples)
    out = subprocess.run(
        [sys.executable, str(REFEREE), str(image), str(tmp_path / "s.npy"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("picture", ["github.png", "maple_leaf.jpg"])
def test_tv_and_on_ink_match_the_referee(picture: str, tmp_path: Path) -> None:
    image = SHARED / "bench-imgs" / picture
    img = load_image(image)
    d = ImageDensity.from_image(img, resolution=128)
    rng = np.random.default_rng(0)
    # a blurred version of the picture plus some uniform junk: far from perfect on purpose
    uv = d.to_pixels(d.sample(30_000)) + rng.normal(0, 4, (30_000, 2))
    uv = np.concatenate([uv, rng.random((3000, 2)) * [img.width * 1.2, img.height * 1.2]])
    ours = tv_score(ink_map(img), uv)
    ref = referee(image, uv, tmp_path)
    for key in ("tv", "on_ink", "outside", "tv_floor"):
        assert ours[key] == pytest.approx(ref[key], abs=1.5e-4), key


def test_eval_figures_are_consistent(tiny_run: Path) -> None:
    res = evaluate(load_run(tiny_run), n_nll=2000, n_samples=5000)
    assert res["kl"] == pytest.approx(res["nll"] - res["entropy"])
    assert res["kl"] > -0.05  # KL >= 0 up to sampling noise
    assert 0 < res["tv"] <= 1 and 0 <= res["on_ink"] <= 1
    assert res["nfe"] > 0 and res["ink_source"] == "image"


def test_kl_uses_an_adaptive_likelihood_solve(tiny_run: Path) -> None:
    res = evaluate(load_run(tiny_run), n_nll=500, n_samples=1000)
    assert res["nfe_likelihood"] > 10  # dopri5 steps, never one fixed step over [0, 1]


def test_jpeg_keeps_its_full_size_pixel_frame(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("RGB", (900, 600), "white")
    img.paste((0, 0, 0), (100, 100, 400, 500))
    img.save(tmp_path / "big.jpg", quality=90)
    loaded = load_image(tmp_path / "big.jpg")
    assert loaded.size == (900, 600)
    d = ImageDensity.from_image(loaded, resolution=128)
    uv = d.to_pixels(d.sample(5000))
    assert uv[:, 0].min() > 95 and uv[:, 0].max() < 405  # the black box, in original pixels
