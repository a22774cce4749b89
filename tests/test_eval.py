"""Evaluation figures: the tv/on_ink re-implementation agrees with the independent referee."""

from __future__ import annotations

import dataclasses
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
    assert 0 < res["tv"] <= 1 and 0 <= res["on_ink"] <= 1
    assert res["nfe"] > 0 and res["ink_source"] == "image"


def _kl_to_standard_normal(density: ImageDensity) -> float:
    """KL(p || N(0, I)) in closed form for a density uniform on each cell, computed here from
    the cells' masses and corners alone: ``sum_c m_c log(m_c / area_c)`` minus ``E_p[log N]``,
    with ``E[x^2]`` over a cell ``[a, b]`` equal to ``(a^2 + ab + b^2) / 3``."""
    probs = np.asarray(density.probs_np, dtype=np.float64)
    rows, cols = np.nonzero(probs > 0)
    m = probs[rows, cols]
    (hx, hy), (cx, cy) = density.half, density.cell
    x0, y1 = -hx + cols * cx, hy - rows * cy  # each cell's left and top edges
    x1, y0 = x0 + cx, y1 - cy

    def square(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * a + a * b + b * b) / 3

    neg_entropy = float((m * np.log(m / (cx * cy))).sum())
    log_normal = -np.log(2 * np.pi) - 0.5 * (square(x0, x1) + square(y0, y1))
    return neg_entropy - float((m * log_normal).sum())


def test_kl_is_the_closed_form_kl_of_a_known_density(tiny_run: Path) -> None:
    """The oracle: a flow whose density is N(0, I) exactly (its log_prob replaced by the
    normal's), whose KL to the picture is known in closed form from the cells alone."""
    run = load_run(tiny_run)
    run.flow.log_prob = lambda x, stats=None, generator=None, tol=None: (  # type: ignore
        -np.log(2 * np.pi) - 0.5 * x.pow(2).sum(1)
    )
    want = _kl_to_standard_normal(run.density)
    res = evaluate(run, n_nll=20_000, n_samples=2000, n_transport=50)
    assert want > 1.0  # far from 0: a constant or a clamped evaluator cannot pass
    assert res["kl"] == pytest.approx(want, abs=0.03)  # 20,000 points: SE about 0.01
    assert res["entropy"] == pytest.approx(
        -float(
            (lambda p: (p * np.log(p / np.prod(run.density.cell))).sum())(
                run.density.probs_np[run.density.probs_np > 0].astype(np.float64)
            )
        ),
        abs=1e-6,
    )


def test_kl_uses_an_adaptive_likelihood_solve(tiny_run: Path) -> None:
    """An adaptive solve takes more steps for a tighter tolerance; a fixed one would not."""
    loose = evaluate(load_run(tiny_run), n_nll=500, n_samples=1000, n_transport=50)
    run = load_run(tiny_run)
    run.flow.solve = dataclasses.replace(run.flow.solve, eval_tol=1e-6)
    tight = evaluate(run, n_nll=500, n_samples=1000, n_transport=50)
    assert tight["nfe_likelihood"] > 1.5 * loose["nfe_likelihood"] > 10


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
