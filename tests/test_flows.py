"""Every flow against oracles: inverse, log-determinant, normalisation, training, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowgif.config import Config, FieldConfig, FlowConfig
from flowgif.fit import train
from flowgif.flows import build
from flowgif.flows.base import DiscreteFlow
from flowgif.flows.field import VectorField
from flowgif.flows.model import ContinuousFlow
from flowgif.sources.toys import toy_density
from tests.test_cli import SMOKE, call

FAMILIES = {
    "realnvp": ("realnvp", FlowConfig(layers=4, hidden=16, depth=1)),
    "realnvp-bn": ("realnvp", FlowConfig(layers=4, hidden=16, depth=1, batchnorm=True)),
    "planar": ("planar", FlowConfig(layers=6)),
    "radial": ("radial", FlowConfig(layers=6)),
}


def random_flow(name: str, seed: int = 0) -> DiscreteFlow:
    """A float64 flow far from the identity, in eval mode (batch-norm uses its statistics)."""
    family, config = FAMILIES[name]
    torch.manual_seed(seed)  # couplings take their initial weights from the global stream
    cfg = Config(flow=config).updated({"train.method": family, "train.seed": seed})
    flow = build(cfg).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for b in flow.buffers():  # batch-norm statistics of some other data
            b.add_(0.3 * torch.rand(b.shape, generator=gen, dtype=b.dtype))
    return flow.eval()


def grid(half: float, n: int) -> tuple[torch.Tensor, float]:
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * half - half
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.ravel(), y.ravel()], 1), (2 * half / n) ** 2


@pytest.mark.parametrize("name", FAMILIES)
def test_inverse_of_forward_is_the_identity(name: str) -> None:
    flow = random_flow(name)
    z = 2 * torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, logq = flow(z)
    back = x
    for layer in reversed(flow.layers):
        back, _ = layer.inverse(back)
    torch.testing.assert_close(back, z, atol=1e-9, rtol=0)
    torch.testing.assert_close(flow.log_prob(x), logq, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_log_det_matches_slogdet_of_the_autograd_jacobian(name: str) -> None:
    flow = random_flow(name)
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for layer in flow.layers:
        _, ladj = layer(z)
        for i in range(len(z)):
            jac = torch.autograd.functional.jacobian(lambda p, f=layer: f(p[None])[0][0], z[i])
            sign, logabs = torch.linalg.slogdet(jac)
            assert float(sign) > 0  # orientation-preserving, as the constraints promise
            assert float(ladj[i].detach()) == pytest.approx(float(logabs), abs=1e-9)
        z = layer(z)[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_discrete_log_density_integrates_to_one(name: str) -> None:
    flow = random_flow(name)
    pts, area = grid(10.0, 1250)
    with torch.no_grad():
        mass = float(flow.log_prob(pts).exp().sum() * area)
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_continuous_log_density_integrates_to_one() -> None:
    torch.manual_seed(0)
    field = VectorField(FieldConfig(width=16, depth=2, fourier_features=0)).double()
    cnf = ContinuousFlow(field, Config().solve)
    pts, area = grid(7.0, 100)
    mass = float(cnf.log_prob(pts).exp().sum() * area)
    assert mass == pytest.approx(1.0, abs=0.01)


def test_augmented_importance_weights_integrate_to_one() -> None:
    # exp(log q(x, a) - log N(a)) with a ~ N(0, I) is an unbiased estimate of q(x).
    torch.manual_seed(0)
    field = VectorField(FieldConfig(width=16, depth=2, fourier_features=0), dim=3).double()
    cnf = ContinuousFlow(field, Config().solve)
    pts, area = grid(7.0, 100)
    weights = cnf.log_prob(pts, generator=torch.Generator().manual_seed(0)).exp()
    assert float(weights.sum() * area) == pytest.approx(1.0, abs=0.03)


def test_layer_paths_pass_through_every_layer_output() -> None:
    flow = random_flow("realnvp")
    z = torch.randn(50, 2, dtype=torch.float64)
    stages = flow.stages(z)
    times = torch.linspace(0, 1, len(stages), dtype=torch.float64)
    torch.testing.assert_close(flow.paths(z, times), stages)
    half = flow.paths(z, torch.tensor([0.5 / (len(stages) - 1)], dtype=torch.float64))[0]
    torch.testing.assert_close(half, (stages[0] + stages[1]) / 2)


@pytest.mark.parametrize("method", ["realnvp", "planar", "radial"])
def test_maximum_likelihood_lowers_the_nll_and_reaches_every_parameter(method: str) -> None:
    cfg = SMOKE_CONFIG.updated({"train.method": method, "train.steps": 60, "flow.layers": 4})
    density = toy_density("moons", 64)
    start = train(cfg.updated({"train.steps": 1}), density, CPU).model
    with torch.no_grad():
        before = float(-start.log_prob(density.sample(4000, GEN())).mean())
    trained = train(cfg, density, CPU).model
    with torch.no_grad():
        after = float(-trained.log_prob(density.sample(4000, GEN())).mean())
    assert after < before - 0.2
    loss = -trained.train().log_prob(density.sample(256, GEN())).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


@pytest.mark.parametrize("method", ["planar", "realnvp"])
def test_reverse_kl_lowers_the_bound_on_u1(method: str, tmp_path: Path) -> None:
    figures = []
    config = tmp_path / "small.toml"  # 8 layers of either: the bound falls as with 32
    config.write_text(Path(SMOKE).read_text() + "\n[flow]\nlayers = 8\n")
    for steps in (1, 150):
        out = tmp_path / f"{method}-{steps}"
        result = call(
            "train", "--target", "U1", "--method", method, "--config", config,
            "--steps", steps, "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert call("eval", out, "--n-nll", 2000, "--samples", 2000).exit_code == 0
        figures.append(json.loads((out / "eval.json").read_text()))
    assert figures[1]["reverse_kl_bound"] < figures[0]["reverse_kl_bound"] - 0.5
    assert figures[1]["kl_reverse"] > -0.05  # KL >= 0, up to sampling noise


def test_discrete_run_trains_renders_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "moons"
    args = ("--target", "moons", "--method", "realnvp", "--config", SMOKE, "--steps", 20)
    assert call("train", *args, "--out", out).exit_code == 0
    result = call("render", out, "--frames", 5, "--particles", 300, "--size", 48)
    assert result.exit_code == 0, result.output
    assert (out / "flow.gif").stat().st_size > 0
    assert call("eval", out, "--n-nll", 500, "--samples", 1000).exit_code == 0
    figures = json.loads((out / "eval.json").read_text())
    assert figures["method"] == "realnvp" and figures["layers"] == 8
    assert call("plot", out, "--kind", "paths").exit_code == 0
    field = call("plot", out, "--kind", "field")
    assert field.exit_code == 1 and "no vector field" in field.output


def test_augmented_run_and_its_refusals(tmp_path: Path) -> None:
    out = tmp_path / "aug"
    ok = call("train", "--target", "moons", "--augment", 2, "--config", SMOKE, "--steps", 10,
              "--out", out)  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert call("render", out, "--frames", 3, "--particles", 200, "--size", 48).exit_code == 0
    assert call("eval", out, "--n-nll", 300, "--samples", 1000).exit_code == 0
    assert json.loads((out / "eval.json").read_text())["kl_bound"] is True
    ml = call("train", "--target", "moons", "--augment", 1, "--method", "ffjord", "--config",
              SMOKE, "--steps", 2, "--out", tmp_path / "ml")  # fmt: skip
    assert ml.exit_code == 0, ml.output
    bad = call("train", "--target", "moons", "--augment", 1, "--method", "planar", "--steps", 1,
               "--out", tmp_path / "bad")  # fmt: skip
    assert bad.exit_code == 1 and "continuous" in bad.output


CPU = torch.device("cpu")
SMOKE_CONFIG = Config.from_dict({"train": {"threads": 1, "ema": 0.0, "warmup": 0}})


def GEN() -> torch.Generator:  # noqa: N802 - a fresh seeded stream per use
    return torch.Generator().manual_seed(5)
