"""Bad input is one line and a non-zero exit, never a traceback, a killed process, a white GIF
or an empty folder: each class of the adversarial findings, in variants of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.fit.memory import check_fits, training_bytes
from tests.test_cli import SMOKE, assert_one_line_error, call
from tests.test_ownership import sums

RENDER = ("--frames", 3, "--particles", 200, "--size", 48)


@pytest.fixture(scope="module")
def exact_run(tiny_png: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exact") / "ell"
    result = call("train", "--img", tiny_png, "--method", "exact", "--resolution", 48,
                  "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_an_exact_run_renders_beside_any_run(
    exact_run: Path, tiny_run: Path, tmp_path: Path
) -> None:
    for runs in ((exact_run, tiny_run), (exact_run, exact_run), (tiny_run, exact_run)):
        out = tmp_path / f"side{len(list(tmp_path.iterdir()))}.gif"
        result = call("render", *runs, "--out", out, *RENDER)
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[solve]\natol = 1e-30\nrtol = 1e-30\n", "solve.atol"),
        ("[solve]\nrtol = 1e-12\n", "solve.rtol"),
        ("[ffjord]\natol = 1e-20\n", "ffjord.atol"),
        ("[density]\nextent = 1e-30\n", "density.extent"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_folder(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text(_merged(Path(SMOKE).read_text(), text))
    result = call("train", "--img", tiny_png, "--config", config)
    assert_one_line_error(result, named)
    assert "below its limit" in result.stderr
    assert not (tmp_path / "runs").exists()


def _merged(base: str, extra: str) -> str:
    """``base`` TOML with ``extra``'s keys set in their tables."""
    import tomllib

    from flowgif.config import dump_toml

    data = tomllib.loads(base)
    for table, values in tomllib.loads(extra).items():
        data.setdefault(table, {}).update(values)
    return dump_toml(data)


def test_a_solve_that_cannot_meet_its_tolerance_is_one_line(tiny_run: Path) -> None:
    """A solve whose step underflows (tolerances that passed the floors, a field that blows
    up): one line naming what to loosen, not torchdiffeq's assertion. eval's likelihood
    solve is adaptive (dopri5): torchdiffeq's own check is what raises here."""
    import torchdiffeq

    def underflow(*args, **kwargs):
        assert False, "underflow in dt 1e-30"  # torchdiffeq's own words  # noqa: B011

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchdiffeq, "odeint", underflow)
        result = call("eval", tiny_run, "--n-nll", 200, "--samples", 500)
    assert_one_line_error(result, "solve.atol")


def test_a_run_too_large_for_memory_is_refused_before_anything(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the batch x width x depth limit, yet weights and Adam alone need over 20 GB:
    refused in one line before any folder, instead of the kernel's kill."""
    big = Config().updated({"field.width": 4096, "field.depth": 64})
    assert training_bytes(big) > 20e9  # 4 B x 5 copies x 4096^2 x 64 weights alone
    with pytest.raises(FlowgifError, match="GB free"):
        check_fits(big, torch.device("cpu"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "big.toml"
    config.write_text(_merged(Path(SMOKE).read_text(), "[field]\nwidth = 4096\ndepth = 64\n"))
    result = call("train", "--img", tiny_png, "--config", config)
    assert_one_line_error(result, "field.width 4096")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("what", ["field", "ema", "colors"])
def test_a_checkpoint_with_nan_is_refused(tiny_run: Path, tmp_path: Path, what: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    if what == "colors":
        ckpt["colors"] = ckpt["colors"].float().fill_(float("nan"))
    else:
        name = next(iter(ckpt[what]))
        ckpt[what][name] = torch.full_like(ckpt[what][name], float("nan"))
    torch.save(ckpt, run / "checkpoint.pt")
    before = sums(run)
    for command in ("render", "sample", "eval"):
        out = ("--out", tmp_path / "x.gif") if command == "render" else ()
        assert_one_line_error(call(command, run, *out), "non-finite" if what == "colors"
                              else "NaN")  # fmt: skip
    assert sums(run) == before
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("sample", "--n", 50_000_000), "--n"),
        (("eval", "--transport", 20_000), "--transport"),
        (("eval", "--n-nll", 10_000_000), "--n-nll"),
    ],
)
def test_sizes_past_what_finishes_in_minutes_are_refused(
    tiny_run: Path, args: tuple, option: str
) -> None:
    command, *rest = args
    assert_one_line_error(call(command, tiny_run, *rest), option, code=2)


def test_a_size_budget_never_raises_the_particles_asked_for(
    tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "small.gif"
    result = call("render", tiny_run, "--out", out, "--particles", 100, "--frames", 60,
                  "--size", 256, "--max-mb", 0.001)  # fmt: skip
    assert_one_line_error(result, "100 particles")
    assert not out.exists()
