"""Toy targets and words: the same density machinery, checked against closed forms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from flowgif.errors import FlowgifError
from flowgif.sources.toys import TOYS, text_image, toy_density
from tests.test_cli import SMOKE, call


def test_checkerboard_entropy_is_log_of_its_area() -> None:
    assert toy_density("checkerboard", 64).entropy() == pytest.approx(math.log(32.0))


def test_separated_gaussian_mixture_entropy_matches_closed_form() -> None:
    sigma2 = (0.5 / math.sqrt(2)) ** 2  # FFJORD's 8 Gaussians, far apart
    expected = math.log(8) + math.log(2 * math.pi * math.e * sigma2)
    assert toy_density("8gaussians", 512).entropy() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("name", TOYS)
def test_every_toy_is_a_normalised_density_in_data_coordinates(name: str) -> None:
    d = toy_density(name, 128)
    assert d.probs_np.sum() == pytest.approx(1.0) and d.half == (4.0, 4.0)
    x = d.sample(20_000, torch.Generator().manual_seed(0))
    assert float(-d.log_prob(x).mean()) == pytest.approx(d.entropy(), abs=0.05)
    assert float(x.abs().max()) <= 4.0


def test_moons_sit_where_sklearn_puts_them() -> None:
    x = toy_density("moons", 256).sample(20_000).numpy()
    # sklearn's arcs have mean (0.5, 0.25); times 2 plus (-1, -0.2) gives (0, 0.3)
    assert x[:, 0].mean() == pytest.approx(0.0, abs=0.05)
    assert x[:, 1].mean() == pytest.approx(0.3, abs=0.05)


def test_unknown_target_and_empty_text_are_refused() -> None:
    with pytest.raises(FlowgifError, match="choose one of"):
        toy_density("swissroll")
    with pytest.raises(FlowgifError, match="empty"):
        text_image("  ")


def test_train_render_eval_on_a_target_and_a_word(tmp_path: Path) -> None:
    for args, name in ((["--target", "8gaussians"], "8gaussians"), (["--text", "Ada"], "Ada")):
        out = tmp_path / name
        result = call("train", *args, "--config", SMOKE, "--steps", 10, "--out", out)
        assert result.exit_code == 0, result.output
        assert call("render", out, "--frames", 3, "--particles", 200, "--size", 48).exit_code == 0
        assert call("eval", out, "--n-nll", 300, "--samples", 1000).exit_code == 0
    assert "extent = 4.0" in (tmp_path / "8gaussians" / "config.toml").read_text()
    resumed = call("train", "--resume", tmp_path / "Ada", "--steps", 12)
    assert resumed.exit_code == 0, resumed.output
    both = call("train", "--text", "Ada", "--target", "moons")
    assert both.exit_code == 1 and "exactly one" in both.output


def test_reverse_kl_training_lowers_the_bound_on_u1() -> None:
    from flowgif.config import load_config
    from flowgif.fit import train
    from flowgif.sources import load_source
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "smoke.toml").updated(
        {
            "train.method": "reverse",
            "train.steps": 24,  # the bound falls from 21.6 to 5.9 nats (first/last 8 steps)
            "train.batch": 128,
            "train.lr": 1e-2,
            "ffjord.atol": 1e-2,  # the adjoint path, cheaply: the bound falls all the same
            "ffjord.rtol": 1e-2,
            "train.ema": 0.0,
            "density.extent": 6.0,
        }
    )
    end = load_source("target:u1", cfg.density.__class__(resolution=32))
    result = train(cfg, end, torch.device("cpu"))
    bound = [row[2] for row in result.losses]
    assert sum(bound[-8:]) / 8 < sum(bound[:8]) / 8 - 10.0  # measured: a 15.7-nat drop


def test_u1_is_the_specified_two_mode_ring() -> None:
    from flowgif.sources.energies import energy

    z = torch.tensor([[2.0, 2 * math.sqrt(3)], [0.0, 4.0], [2.0, 0.0]], dtype=torch.float64)
    u = energy("u1", z)
    expected_on_ring = -math.log(1 + math.exp(-0.5 * (4 / 0.8) ** 2))  # z1 = 2 on |z| = 4
    assert float(u[0]) == pytest.approx(expected_on_ring)
    assert float(u[1]) > float(u[0]) + 2  # on the ring but between the modes
    assert float(u[2]) == pytest.approx(12.5, abs=1e-4)  # off the ring: 1/2 (2 / 0.4)^2


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_every_energy_normalises_trains_and_evaluates(name: str, tmp_path: Path) -> None:
    import json

    from flowgif.sources.energies import WINDOWS, energy, log_partition

    # log Z against an independent midpoint sum over a window 2 units wider on every side
    w, n = WINDOWS[name] + 2.0, 1600
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * w - w
    y, x = torch.meshgrid(c, c, indexing="ij")
    u = energy(name, torch.stack([x.ravel(), y.ravel()], 1))
    wide = float(torch.logsumexp(-u, 0) + 2 * math.log(2 * w / n))
    assert log_partition(name) == pytest.approx(wide, abs=2e-3)
    out = tmp_path / name
    trained = call("train", "--target", name.upper(), "--method", "radial", "--config", SMOKE,
                   "--steps", 5, "--out", out)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert call("eval", out, "--n-nll", 4000, "--samples", 2000).exit_code == 0
    figures = json.loads((out / "eval.json").read_text())
    assert math.isfinite(figures["kl_reverse"]) and figures["kl_reverse"] > -0.1


def test_energy_targets_get_the_reverse_kl_recipe_unless_a_trainer_is_named() -> None:
    from flowgif.config import Config, DensityConfig
    from flowgif.objectives.recipes import ENERGY_RECIPE, for_ends
    from flowgif.sources import load_source

    u1, u2 = (load_source(f"target:{n}", DensityConfig(resolution=32)) for n in ("u1", "u2"))
    picked = for_ends(Config(), u1)
    assert all(picked.get(k) == v for k, v in ENERGY_RECIPE.items())
    from flowgif.config import load_config
    from tests.conftest import ROOT

    written = load_config(ROOT / "configs" / "energy.toml")  # the file that documents it
    assert all(written.get(k) == v for k, v in ENERGY_RECIPE.items())
    assert picked.density.extent == 6.0
    mine = Config().updated({"train.method": "reverse", "field.width": 32})
    assert for_ends(mine, u1).field.width == 32
    planar = for_ends(Config().updated({"train.method": "planar"}), u2).train
    assert (planar.family, planar.objective) == ("planar", "reverse")
    assert for_ends(picked, u1) == picked  # applying the recipe twice changes nothing


def test_the_energy_recipe_lowers_the_bound_and_fixed_solvers_need_steps(tmp_path: Path) -> None:
    import json

    from flowgif.config import Config

    bounds = []
    for steps in (1, 60):
        out = tmp_path / f"u1-{steps}"
        result = call("train", "--target", "u1", "--config", SMOKE, "--steps", steps, "--out", out)
        assert result.exit_code == 0, result.output
        assert call("eval", out, "--n-nll", 2000, "--samples", 1000).exit_code == 0
        bounds.append(json.loads((out / "eval.json").read_text())["reverse_kl_bound"])
    assert "steps = 8" in (tmp_path / "u1-1" / "config.toml").read_text()
    assert bounds[1] < bounds[0] - 1.0
    with pytest.raises(FlowgifError, match=r"ffjord\.steps"):
        Config().updated({"ffjord.solver": "rk4"})


# The potentials written again from Rezende & Mohamed (2015), table 1, with this project's
# window: a wall 0.5 (excess / 0.1)^2 outside |z_i| <= half. Independent of flowgif's code.
_HALF = {"u1": 6.0, "u2": 4.0, "u3": 4.0, "u4": 4.0}


def _exp_minus_u(name: str, z1: float, z2: float) -> float:
    w1 = math.sin(math.pi * z1 / 2)
    g = lambda d, s: math.exp(-0.5 * (d / s) ** 2)  # noqa: E731
    if name == "u1":
        r = math.hypot(z1, z2)
        p = g(r - 4, 0.4) * (g(z1 - 2, 0.8) + g(z1 + 2, 0.8))
    elif name == "u2":
        p = g(z2 - w1, 0.4)
    elif name == "u3":
        w2 = 3 * math.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
        p = g(z2 - w1, 0.35) + g(z2 - w1 + w2, 0.35)
    else:
        w3 = 3 / (1 + math.exp(-(z1 - 1) / 0.3))
        p = g(z2 - w1, 0.4) + g(z2 - w1 + w3, 0.35)
    half = _HALF[name]
    out = max(abs(z1) - half, 0) ** 2 + max(abs(z2) - half, 0) ** 2
    return p * math.exp(-0.5 * out / 0.01)


def test_the_energies_normalisers_match_closed_forms_and_adaptive_quadrature() -> None:
    """log Z of U2 and U3 in closed form: along z2 each term is a Gaussian of its own width,
    whatever z1, so Z = (sum of sqrt(2 pi) s) x (the window's 8 + two half-Gaussian walls of
    width 0.1); U1 and U4 (whose second ridge reaches the z2 wall) by SciPy's adaptive
    quadrature of the formulas above. The project's midpoint rule must agree to 1e-3."""
    from scipy.integrate import quad

    from flowgif.sources.energies import log_partition

    z1_length = 8 + 2 * 0.1 * math.sqrt(math.pi / 2)
    closed = {
        "u2": math.log(0.4 * math.sqrt(2 * math.pi) * z1_length),
        "u3": math.log(2 * 0.35 * math.sqrt(2 * math.pi) * z1_length),
    }
    for name, want in closed.items():
        assert log_partition(name) == pytest.approx(want, abs=1e-3), name
    for name in ("u1", "u4"):
        edge = _HALF[name] + 1.0  # the wall: 10 of its widths past the window, exp(-50)

        def inner(z1: float, name: str = name, edge: float = edge) -> float:
            return quad(lambda z2: _exp_minus_u(name, z1, z2), -edge, edge, limit=200,
                        points=[-_HALF[name], _HALF[name]])[0]  # fmt: skip

        z, _ = quad(inner, -edge, edge, limit=200, points=[-_HALF[name], _HALF[name]])
        assert log_partition(name) == pytest.approx(math.log(z), abs=1e-3), name
