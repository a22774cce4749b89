"""Any start to any end: oracles for the start as a parameter, and the morph command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from flowgif.config import Config, DensityConfig, load_config
from flowgif.fit import train
from flowgif.flows.field import VectorField
from flowgif.flows.model import ContinuousFlow
from flowgif.sources import load_source
from flowgif.sources.base import Distribution
from flowgif.sources.picture import ImageDensity
from tests.test_cli import SMOKE, assert_one_line_error, call

CPU = torch.device("cpu")


class Gaussian(Distribution):
    """N(mean, std^2 I) in 2-D: a start or end the library does not ship (the interface is
    all a distribution needs)."""

    def __init__(self, mean: tuple[float, float], std: float) -> None:
        self.mean, self.std = torch.tensor(mean), std
        self.half = (abs(mean[0]) + 3 * std, abs(mean[1]) + 3 * std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mean + self.std * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.mean.to(x)) / self.std
        return -0.5 * (z**2).sum(1) - 2 * math.log(self.std) - math.log(2 * math.pi)

    def entropy(self) -> float:
        return 1 + math.log(2 * math.pi) + 2 * math.log(self.std)

    def to(self, device: torch.device | str) -> Gaussian:
        return self


A, B = Gaussian((-1.0, 0.5), 0.5), Gaussian((1.0, -0.5), 0.8)


class Exact(nn.Module):
    """The closed-form flow-matching field between two isotropic Gaussians, independent pairs:
    ``v = (m1 - m0) + (t s1^2 - (1 - t) s0^2) / s_t^2 (x - m_t)``."""

    dim = 2

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t).to(x).reshape(-1, 1)
        s0, s1, m0, m1 = A.std**2, B.std**2, A.mean.to(x), B.mean.to(x)
        var = (1 - t) ** 2 * s0 + t**2 * s1
        mt = (1 - t) * m0 + t * m1
        return (m1 - m0) + (t * s1 - (1 - t) * s0) / var * (x - mt)


def test_the_closed_form_gaussian_field_has_exact_likelihood_from_its_gaussian_start() -> None:
    flow = ContinuousFlow(Exact(), Config().solve, start=A)
    x = B.sample(2000, torch.Generator().manual_seed(0)).double()
    flow.field.double()
    logq = flow.log_prob(x, tol=1e-8)
    torch.testing.assert_close(logq, B.log_prob(x), atol=1e-5, rtol=0)  # KL(B || q) = 0
    z = A.sample(500, torch.Generator().manual_seed(1)).double()
    end, logp = flow.push(z)
    torch.testing.assert_close(end.mean(0), B.mean.double(), atol=0.12, rtol=0)
    torch.testing.assert_close(logp, B.log_prob(end), atol=1e-4, rtol=0)


def test_flow_matching_between_gaussians_learns_the_closed_form_field() -> None:
    cfg = load_config(SMOKE).updated(
        {
            "train.steps": 600,
            "train.batch": 512,
            "train.ema": 0.0,
            "field.width": 64,
            "field.fourier_features": 0,
            "fm.time_sampling": "uniform",
        }
    )
    field = train(cfg, B, CPU, start=A).model
    gen = torch.Generator().manual_seed(2)
    for t in (0.25, 0.5, 0.75):
        x = (1 - t) * A.sample(2000, gen) + t * B.sample(2000, gen)  # where the paths are
        with torch.no_grad():
            err = (field(torch.tensor(t), x) - Exact()(torch.tensor(t), x)).norm(dim=1)
            scale = Exact()(torch.tensor(t), x).norm(dim=1).mean()
        assert float(err.mean()) < 0.12 * float(scale), t
    flow = ContinuousFlow(field, cfg.solve, start=A)
    x = B.sample(3000, gen)
    kl = float((B.log_prob(x) - flow.log_prob(x, tol=1e-5)).mean())
    assert -0.02 < kl < 0.05  # the known KL of the exact field is 0


def picture(path: Path, boxes: list[tuple[int, int, int, int]], size=(48, 32), fill=0) -> Path:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    for box in boxes:
        d.rectangle(box, fill=fill)
    img.save(path)
    return path


def test_a_linear_field_from_a_picture_start_lowers_log_p_by_t_trace(tmp_path: Path) -> None:
    class Linear(nn.Module):
        dim = 2
        a = torch.tensor([[0.3, -0.7], [0.4, -0.1]], dtype=torch.float64)

        def forward(self, t: Tensor, x: Tensor) -> Tensor:
            return x @ self.a.T.to(x)

    start = load_source(
        picture(tmp_path / "a.png", [(4, 4, 20, 26)]), DensityConfig(resolution=24), start=True
    ).density
    flow = ContinuousFlow(Linear(), Config().solve.__class__(atol=1e-9, rtol=1e-9), start)
    z = start.sample(400, torch.Generator().manual_seed(0)).double()
    times = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    paths, logp = flow.paths_with_log_prob(z, times)
    trace = float(torch.trace(Linear.a))
    for k, t in enumerate(times):
        torch.testing.assert_close(logp[k], start.log_prob(z) - t * trace, atol=1e-6, rtol=0)
    expect = z @ torch.linalg.matrix_exp(Linear.a).T
    torch.testing.assert_close(paths[-1], expect, atol=1e-6, rtol=0)


def test_push_and_log_prob_agree_from_a_picture_start(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = load_config(SMOKE)
    start = load_source(
        picture(tmp_path / "a.png", [(4, 4, 20, 26), (30, 2, 44, 12)]), cfg.density, start=True
    ).density
    solve = cfg.solve.__class__(eval_tol=1e-8)  # a blurred edge is steep: solve tightly
    flow = ContinuousFlow(VectorField(cfg.field).double(), solve, start)
    z = flow.starts(300, torch.Generator().manual_seed(1)).double()
    x, logq = flow.push(z)
    torch.testing.assert_close(flow.log_prob(x, tol=1e-8), logq, atol=1e-4, rtol=0)


def test_a_blurred_picture_is_a_normalised_density_its_samples_follow() -> None:
    ink = np.zeros((8, 12))
    ink[2:6, 3:5], ink[0, 0] = 1.0, 0.3
    d = ImageDensity(ink, (12, 8)).blurred(0.7)
    g = torch.linspace(-4, 4, 641, dtype=torch.float64)
    y, x = torch.meshgrid(g, g, indexing="ij")
    logp = d.log_prob(torch.stack([x.ravel(), y.ravel()], 1))
    assert float(logp.exp().sum() * (8 / 640) ** 2) == pytest.approx(1.0, abs=1e-3)
    assert torch.isfinite(d.log_prob(torch.tensor([[30.0, -40.0]]))).all()  # far off: finite
    s = d.sample(200_000, torch.Generator().manual_seed(0)).double()
    # E_samples[log p] = -entropy: the grid integral and the sample mean agree
    grid = float((logp.exp() * logp).sum() * (8 / 640) ** 2)
    assert float(d.log_prob(s).mean()) == pytest.approx(grid, abs=0.02)


def test_a_picture_to_itself_learns_to_stay_put(tmp_path: Path) -> None:
    from flowgif.evaluate import evaluate
    from flowgif.fit import train_run
    from flowgif.store import load_run

    # Two soft blobs: a start blurred by half a cell is then nearly the picture itself (a
    # sharp-edged picture this small would lose ~7 % of its mass off the ink to the blur).
    y, x = np.mgrid[0:32, 0:48]
    ink = np.exp(-((x - 14) ** 2 + (y - 16) ** 2) / 50) + 0.7 * np.exp(
        -((x - 34) ** 2 + (y - 12) ** 2) / 32
    )
    a = tmp_path / "a.png"
    Image.fromarray((255 * (1 - ink / ink.max())).astype(np.uint8)).save(a)
    cfg = load_config("morph").updated(
        {
            "density.resolution": 32,
            "density.start_blur": 0.5,  # 2 cells would be 6 % of this tiny frame
            "field.width": 64,
            "train.steps": 400,
            "train.minutes": 0.0,
        }
    )
    train_run(a, cfg, tmp_path / "run", start=a, preview=False)
    run = load_run(tmp_path / "run")
    figures = evaluate(run, n_nll=4000, n_samples=4000, n_transport=1000)
    # kl measured 0.042 on 20,000 points; on 4,000 it ranges 0.017-0.056 with the sample set
    assert figures["kl"] < 0.08 and figures["on_ink"] > 0.98  # on_ink measured 0.992
    assert figures["transport"] < 1.01
    z = run.flow.starts(2000, torch.Generator().manual_seed(0))
    moved = run.flow.paths(z, torch.tensor([0.0, 1.0]))[-1]
    assert float((moved - z).norm(dim=1).mean()) < 0.04  # 1 % of the 4-unit frame
    assert figures["start"] == str(a.absolute())


def test_morph_trains_renders_carries_colours_and_reuses_its_legs(tmp_path: Path) -> None:
    red = picture(tmp_path / "red.png", [(3, 3, 16, 28)], fill=(220, 30, 30))
    right = picture(tmp_path / "right.png", [(30, 3, 44, 28)])
    wide = picture(tmp_path / "wide.png", [(4, 10, 76, 22)], size=(80, 32))
    runs, out = tmp_path / "m", tmp_path / "m.gif"
    args = ["morph", red, right, wide, "--config", SMOKE, "--runs", runs, "--out", out,
            "--frames", 6, "--particles", 800, "--size", 96, "--steps", 300]  # fmt: skip
    first = call(*args)
    assert first.exit_code == 0, first.output
    legs = sorted(p for p in runs.iterdir() if p.is_dir())
    assert [p.name for p in legs] == ["1-red-to-right", "2-right-to-wide"]
    manifest = json.loads((runs / "morph.json").read_text())
    assert [p["label"] for p in manifest["pictures"]] == [str(p) for p in (red, right, wide)]
    gif = Image.open(out)
    assert gif.n_frames == 11  # 6 + 5: the legs share the picture between them
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    ink = [(f.sum(2) < 600) for f in frames]  # particles, not the light ground
    cols = [np.nonzero(m)[1].mean() / m.shape[1] for m in ink]
    assert cols[0] < 0.45 and cols[5] > 0.55  # red on the left, then on the right
    reds = [f[m] for f, m in zip(frames, ink, strict=True)]
    assert all((r[:, 0] > r[:, 1] + 40).mean() > 0.8 for r in reds)  # its colour travels
    again = call(*args)
    assert again.exit_code == 0 and again.output.count("done, reused") == 2, again.output
    blank = picture(tmp_path / "other.png", [(10, 10, 30, 20)])
    other = call("morph", red, blank, "--config", SMOKE, "--runs", runs, "--steps", 5)
    assert_one_line_error(other, "morph of other pictures")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "not found"),
        ("folder", "is a folder"),
        ("one", "at least two"),
        ("energy", "energy"),
        ("noise", "noise is not a picture"),
        ("runs", "not a flowgif morph"),
        ("out", "flowgif did not write it"),
    ],
)
def test_morph_refuses_bad_input_before_training(case: str, expected: str, tmp_path: Path) -> None:
    a = picture(tmp_path / "a.png", [(4, 4, 20, 26)])
    runs = tmp_path / "runs"
    other = {
        "missing": [a, tmp_path / "nope.png"],
        "folder": [a, tmp_path],
        "one": [a],
        "energy": [a, "target:u1"],
        "noise": ["noise", a],
        "runs": [a, a],
        "out": [a, a],
    }[case]
    extra = []
    if case == "runs":
        runs.mkdir()
        (runs / "notes.txt").write_text("mine")
    if case == "out":
        extra = ["--out", a]  # the user's own picture
    result = call("morph", *other, "--config", SMOKE, "--runs", runs, "--steps", 5, *extra)
    assert_one_line_error(result, expected)
    assert result.exit_code == 1
    assert case == "runs" or not runs.exists()
    if case == "runs":
        assert sorted(p.name for p in runs.iterdir()) == ["notes.txt"]


def test_train_from_a_picture_records_it_and_discrete_flows_refuse(tmp_path: Path) -> None:
    a = picture(tmp_path / "a.png", [(4, 4, 20, 26)])
    b = picture(tmp_path / "b.png", [(30, 3, 44, 28)])
    out = tmp_path / "run"
    done = call("train", "--img", b, "--from", a, "--config", SMOKE, "--out", out)
    assert done.exit_code == 0, done.output
    res = call("eval", out, "--n-nll", 2000, "--samples", 2000)
    assert res.exit_code == 0, res.output
    figures = json.loads((out / "eval.json").read_text())
    assert figures["start"] == str(a.absolute()) and figures["transport"] >= 1.0
    assert math.isfinite(figures["kl"])
    wrong = call("train", "--resume", out, "--from", b, "--steps", 50)
    assert_one_line_error(wrong, "trained from another start")  # matched by its content
    nvp = call("train", "--img", b, "--from", a, "--method", "realnvp", "--config", SMOKE,
               "--out", tmp_path / "nvp")  # fmt: skip
    assert_one_line_error(nvp, "cannot start from")
    assert not (tmp_path / "nvp").exists()


def test_old_configs_name_a_method_and_still_load() -> None:
    old = Config.from_dict({"train": {"method": "ffjord", "steps": 5}})
    assert (old.train.objective, old.train.family, old.train.method) == (
        "likelihood",
        "field",
        "ffjord",
    )
    assert Config.from_dict({"train": {"method": "planar"}}).train.family == "planar"
    with pytest.raises(Exception, match="flow matching fits a vector field"):
        Config().updated({"train.objective": "fm", "train.family": "realnvp"})


def test_a_run_folder_from_before_the_redesign_loads_renders_and_resumes(tmp_path: Path) -> None:
    """tests/data/run-before-any-to-any: a smoke run of imgs/star.png written by flowgif
    before objectives and families were named apart (its config says train.method = fm)."""
    import shutil

    from flowgif.store import load_run
    from tests.conftest import ROOT

    run = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "data" / "run-before-any-to-any", run)
    loaded = load_run(run)
    assert (loaded.config.train.objective, loaded.config.train.family) == ("fm", "field")
    assert loaded.start_label == "noise" and loaded.meta["step"] == 40
    shown = call("render", run, "--frames", 4, "--particles", 300, "--size", 64)
    assert shown.exit_code == 0, shown.output
    more = call("train", "--resume", run, "--img", ROOT / "imgs" / "star.png", "--steps", 50)
    assert more.exit_code == 0, more.output
    assert load_run(run).meta["step"] == 50


def test_an_animation_starts_from_the_picture_itself_not_its_blur(tmp_path: Path) -> None:
    a = picture(tmp_path / "a.png", [(4, 4, 20, 26)])
    start = load_source(a, DensityConfig(resolution=32, start_blur=4.0), start=True).density
    flow = ContinuousFlow(VectorField(Config().field), Config().solve, start)
    gen = torch.Generator().manual_seed(0)
    model = flow.starts(4000, gen)  # the model's start: the blurred picture
    shown = flow.starts(4000, gen, shown=True)  # what an animation draws
    on_ink = start.sharp().log_prob
    assert torch.isfinite(on_ink(shown)).all()
    assert (~torch.isfinite(on_ink(model))).float().mean() > 0.2  # the blur reaches off the ink
