"""Both trainers learn, are reproducible, and write a complete run folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from flowgif.config import Config, load_config
from flowgif.fit import train
from flowgif.flows.field import VectorField
from flowgif.sources.picture import ImageDensity, load_image
from flowgif.store import load_checkpoint, load_run
from tests.conftest import ROOT

SMOKE = load_config(ROOT / "configs" / "smoke.toml")


def tiny_density(tiny_png: Path) -> ImageDensity:
    return ImageDensity.from_image(load_image(tiny_png), resolution=32)


@pytest.mark.parametrize("method", ["fm", "ffjord"])
def test_training_lowers_the_loss(tiny_png: Path, method: str) -> None:
    overrides = {
        "train.method": method,
        "train.steps": 60 if method == "fm" else 30,
        "train.ema": 0.0,
    }
    if method == "ffjord":
        overrides |= {"ffjord.atol": 1e-3, "ffjord.rtol": 1e-3, "train.batch": 128}
    result = train(SMOKE.updated(overrides), tiny_density(tiny_png), torch.device("cpu"))
    losses = np.array([row[2] for row in result.losses])
    k = len(losses) // 5
    assert losses[-k:].mean() < losses[:k].mean() - 0.05


def test_gradients_reach_every_parameter(tiny_png: Path) -> None:
    from flowgif.objectives.flow_matching import fm_loss

    config = Config().updated({"field.fourier_features": 4, "field.width": 16})
    field = VectorField(config.field)
    x1 = tiny_density(tiny_png).sample(64)
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    fm_loss(field, x0, x1, config.fm, torch.Generator().manual_seed(0)).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_same_seed_same_weights(tiny_png: Path) -> None:
    cfg = SMOKE.updated({"train.steps": 10, "fm.ot": True, "fm.ot_batch": 64})
    a = train(cfg, tiny_density(tiny_png), torch.device("cpu")).model.state_dict()
    b = train(cfg, tiny_density(tiny_png), torch.device("cpu")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "flow",
    [{}, {"train.method": "realnvp", "flow.batchnorm": True, "flow.layers": 3}],
    ids=["fm", "realnvp-batchnorm"],
)
def test_resume_continues_bit_for_bit(tiny_png: Path, flow: dict) -> None:
    density = tiny_density(tiny_png)
    cfg = SMOKE.updated({"train.steps": 20, **flow})
    full = train(cfg, density, torch.device("cpu"))
    saved: list[dict] = []
    half = SMOKE.updated({"train.steps": 20, "train.checkpoint_every": 10, **flow})

    class StopError(Exception):
        pass

    def keep(payload: dict) -> None:
        saved.append(payload)
        raise StopError

    with pytest.raises(StopError):
        train(half, density, torch.device("cpu"), checkpoint=keep)
    resumed = train(cfg, density, torch.device("cpu"), resume=saved[0])
    assert saved[0]["step"] == 10 and resumed.steps == 20
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_is_complete_and_reloads(tiny_run: Path) -> None:
    for name in ("config.toml", "checkpoint.pt", "loss.csv", "samples.png"):
        assert (tiny_run / name).is_file(), name
    config = Config.from_dict(tomllib.loads((tiny_run / "config.toml").read_text()))
    assert config == SMOKE
    ckpt = load_checkpoint(tiny_run / "checkpoint.pt")
    assert ckpt["seed"] == 0 and len(ckpt["image_hash"]) == 64 and ckpt["version"]
    run = load_run(tiny_run)
    x = torch.randn(5, 2)
    assert run.field(torch.tensor(0.5), x).shape == (5, 2)
    lines = (tiny_run / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,seconds,loss,lr" and len(lines) == 41


def test_a_non_finite_loss_rolls_back_and_halves_the_lr(tiny_png: Path, monkeypatch) -> None:
    import flowgif.fit.loop as training
    import flowgif.objectives.flow_matching as fm

    real, calls = fm.fm_loss, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(fm, "fm_loss", flaky)
    result = train(SMOKE.updated({"train.steps": 20}), tiny_density(tiny_png), torch.device("cpu"))
    assert result.steps == 20 and all(np.isfinite(row[2]) for row in result.losses)
    scheduled = SMOKE.train.lr * training.lr_factor(SMOKE, 19, 19 / 20)
    assert result.losses[-1][3] == pytest.approx(0.5 * scheduled)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_divergence_that_persists_stops_with_a_clear_error(tiny_png: Path, monkeypatch) -> None:
    import flowgif.objectives.flow_matching as fm
    from flowgif.errors import FlowgifError

    monkeypatch.setattr(
        fm, "fm_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    )
    with pytest.raises(FlowgifError, match="diverged"):
        train(SMOKE, tiny_density(tiny_png), torch.device("cpu"))
