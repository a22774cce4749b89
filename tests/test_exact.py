"""The exact flow (flowgif.flows.exact) against oracles: a Gaussian end's field in closed form,
a one-cell picture, mass conservation, the referee's tv on a bundled picture."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowgif.errors import FlowgifError
from flowgif.flows.exact import ExactFlow
from flowgif.flows.posterior import Posterior
from flowgif.sources.noise import Noise
from flowgif.sources.picture import ImageDensity, load_image
from tests.conftest import ROOT, SHARED
from tests.test_cli import assert_one_line_error, call


def gaussian_raster(mu: tuple[float, float], s: float, n: int = 96) -> ImageDensity:
    """N(mu, s^2 I) rasterised on an n x n grid over [-2, 2]^2 (row 0 at the top)."""
    c = -2 + (np.arange(n) + 0.5) * 4 / n
    x, y = np.meshgrid(c, c[::-1])
    ink = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / (2 * s**2))
    return ImageDensity(ink, (n, n), extent=2.0)


@pytest.mark.parametrize(("t", "tol"), [(0.2, 0.005), (0.5, 0.005), (0.8, 0.01), (0.9, 0.02),
                                         (0.95, 0.03)])  # fmt: skip
def test_a_gaussian_ends_field_is_the_closed_form(t: float, tol: float) -> None:
    """x1 ~ N(mu, s^2 I), x0 ~ N(0, I): E[x1 | x_t = x] = mu + t s^2 / ((1-t)^2 + t^2 s^2)
    (x - t mu), so v* is linear in x. On the bulk of p_t (within 2 standard deviations) the
    grid field matches it within ``tol`` of its typical size. The error is the raster's: its
    cells (h = 0.025 here) are point masses, which the blur of width 1 - t no longer smooths
    as t nears 1 — measured 0.0000 / 0.0004 / 0.0048 / 0.0108 / 0.0178 at these times."""
    mu, s = (0.4, -0.3), 0.35
    post = Posterior(gaussian_raster(mu, s, 160))
    var = (1 - t) ** 2 + t**2 * s**2
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor(mu) * t + math.sqrt(var) * torch.randn(2000, 2, generator=gen)
    x = x[((x - torch.tensor(mu) * t).norm(dim=1) < 2 * math.sqrt(var))]
    mean = torch.tensor(mu) + t * s**2 / var * (x - torch.tensor(mu) * t)
    want = (mean - x) / (1 - t)
    got = post.velocity(torch.tensor(t), x)
    err = (got - want).norm(dim=1).mean() / want.norm(dim=1).mean()
    assert err < tol, float(err)
    _, density = post.at(t).at(x)  # p_t is the Gaussian N(t mu, var I)
    exact = torch.exp(-((x - torch.tensor(mu) * t) ** 2).sum(1) / (2 * var)) / (2 * math.pi * var)
    assert ((density - exact).abs() / exact).median() < 0.02


def test_p_t_is_a_probability_at_every_time_and_one_cell_collects_every_particle() -> None:
    ink = np.zeros((16, 16))
    ink[5, 9] = 1.0
    end = ImageDensity(ink, (16, 16))
    flow = ExactFlow(end)
    for t in (0.0, 0.3, 0.7, 0.99, float(flow.times[-1])):
        assert abs(float(flow.posterior.at(t).mass.sum()) - 1) < 1e-5, t
    z = Noise().sample(3000, torch.Generator().manual_seed(1))
    x = flow.paths(z, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(x[0], z)
    cells = end.cell_index(x[-1])
    assert (cells == 5 * 16 + 9).all()


def test_a_picture_start_is_carried_onto_the_end() -> None:
    a = np.zeros((24, 24))
    a[4:10, 4:20] = 1.0  # a bar at the top
    b = np.zeros((24, 24))
    b[12:22, 8:14] = 1.0  # a block lower down
    start = ImageDensity(a, (24, 24)).blurred(1.0)
    flow = ExactFlow(ImageDensity(b, (24, 24)), start)
    for t in (0.0, 0.5, 0.95):
        assert abs(float(flow.posterior.at(t).mass.sum()) - 1) < 1e-4, t
    z = flow.starts(4000, torch.Generator().manual_seed(2), shown=True)
    end = flow.paths(z, torch.tensor([0.0, 1.0]))[-1]
    inked = ImageDensity(b, (24, 24)).probs_np.ravel() > 0
    assert inked[ImageDensity(b, (24, 24)).cell_index(end)].mean() == 1.0


def test_its_samples_score_at_the_referees_floor(tmp_path: Path) -> None:
    """imgs/star.png at 64 px: the exact flow's samples within tv_floor + 0.02 by the
    referee's own formula; on the ink but where a 64-px cell is only partly inked (the
    density is uniform in each working cell: measured on_ink 0.981)."""
    sys.path.insert(0, str(SHARED / "referee"))
    import score as referee

    picture = ROOT / "imgs" / "star.png"
    end = ImageDensity.from_image(load_image(picture), resolution=64)
    flow = ExactFlow(end)
    z = Noise().sample(40_000, torch.Generator().manual_seed(3))
    x = flow.paths(z, torch.tensor([0.0, 1.0]))[-1]
    result = referee.score(str(picture), end.to_pixels(x), cells=64)
    assert result["tv"] <= result["tv_floor"] + 0.02, result
    assert result["on_ink"] >= 0.97, result


def test_the_exact_method_through_the_cli(tiny_png: Path, tmp_path: Path) -> None:
    run = tmp_path / "exact"
    done = call("train", "--img", tiny_png, "--method", "exact", "--out", run)
    assert done.exit_code == 0, done.output
    assert "exact flow" in done.output
    assert call("render", run, "--frames", 4, "--particles", 300, "--size", 48).exit_code == 0
    res = call("eval", run, "--n-nll", 500, "--samples", 2000, "--transport", 50)
    assert res.exit_code == 0, res.output
    assert call("sample", run, "--n", 50).exit_code == 0
    assert_one_line_error(call("train", "--resume", run, "--steps", 5), "nothing to resume")
    assert_one_line_error(
        call("train", "--img", tiny_png, "--objective", "exact", "--out", tmp_path / "x"),
        "computed, not trained",
    )


def test_the_exact_target_teaches_the_field_closer_than_the_pairs(tiny_png: Path) -> None:
    """fm.target = "exact" regresses on v* itself: after the same 150 steps from the same
    seed, eval's field_error (E|v - v*|^2 / E|v*|^2 over the training distribution) is
    lower than with the pairs' x1 - x0, and eval shows the exact flow's tv beside."""
    from flowgif.config import load_config
    from flowgif.evaluate import evaluate
    from flowgif.fit import train_run
    from flowgif.store import load_run

    smoke = load_config(ROOT / "configs" / "smoke.toml").updated({"train.steps": 150})
    figures = {}
    for target in ("conditional", "exact"):
        out = Path(tiny_png).parent / f"teach-{target}"
        if not out.exists():
            train_run(tiny_png, smoke.updated({"fm.target": target}), out, preview=False)
        figures[target] = evaluate(load_run(out), n_nll=500, n_samples=4000, n_transport=20)
    assert figures["exact"]["field_error"] < figures["conditional"]["field_error"], figures
    # smoke.toml's coarse working grid bounds every flow's tv; the exact flow's is the best
    assert figures["exact"]["exact_tv"] < min(f["tv"] for f in figures.values())
    with pytest.raises(FlowgifError, match=r"fm\.ot"):
        smoke.updated({"fm.target": "exact", "fm.ot": True})


def test_a_morph_and_a_batch_of_the_exact_flow(tmp_path: Path) -> None:
    """--method exact on morph (a picture start, carried onto the end) and on batch."""
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    for name, rect in (("a.png", (2, 2, 10, 20)), ("b.png", (4, 10, 28, 18))):
        img = Image.new("L", (32, 24), 255)
        img.paste(0, rect)
        img.save(pics / name)
    done = call("morph", pics / "a.png", pics / "b.png", "--method", "exact", "--runs",
                tmp_path / "m", "--frames", 4, "--particles", 300, "--size", 48)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "computing the exact flow" in done.output
    batch = call("batch", pics, "--out", tmp_path / "out", "--method", "exact",
                 "--render-args", "--frames 3 --particles 200 --size 48")  # fmt: skip
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "out" / "a" / "flow.gif").is_file()
