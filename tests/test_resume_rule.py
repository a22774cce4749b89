"""The one resume rule (flowgif.store.resume): what a continued run may change, used alike by
``train --resume``, ``morph`` and ``batch``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from flowgif.batch import run_batch
from flowgif.config import load_config
from flowgif.errors import FlowgifError
from flowgif.fit import train_run
from flowgif.fit.morph import plan, write_manifest
from flowgif.store import CHECKPOINT, changed, load_checkpoint, resume_problem
from tests.conftest import ROOT

SMOKE = load_config(ROOT / "configs" / "smoke.toml")


def box(path: Path, rect: tuple[int, int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("L", (32, 32), 255)
    img.paste(0, rect)
    img.save(path)
    return path


def test_only_the_budget_and_where_it_runs_may_change() -> None:
    more = SMOKE.updated({"train.steps": 999, "train.minutes": 2.0, "train.threads": 3})
    assert changed(SMOKE, more) == []
    assert changed(SMOKE, SMOKE.updated({"train.lr": 0.5})) == [("train.lr", SMOKE.train.lr, 0.5)]


def test_a_run_resumes_only_on_its_picture_start_and_settings(tmp_path: Path) -> None:
    a, b = box(tmp_path / "a.png", (4, 4, 12, 28)), box(tmp_path / "b.png", (8, 8, 28, 16))
    train_run(a, SMOKE.updated({"train.steps": 5}), tmp_path / "run", preview=False)
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT, for_resume=True)
    from flowgif.sources.picture import image_hash

    assert resume_problem(ckpt, SMOKE.updated({"train.steps": 50}), image_hash(a)) == ""
    assert "another picture" in resume_problem(ckpt, SMOKE, image_hash(b))
    assert "another start" in resume_problem(ckpt, SMOKE, image_hash(a), image_hash(b))
    assert "train.lr" in resume_problem(ckpt, SMOKE.updated({"train.lr": 0.5}), image_hash(a))
    with pytest.raises(FlowgifError, match="another picture"):
        train_run(b, SMOKE.updated({"train.steps": 8}), tmp_path / "run", resume=True)


def test_a_batch_whose_budget_grew_extends_its_runs(tmp_path: Path) -> None:
    """A second batch with more steps goes on from each run's checkpoint (as train --resume
    does), logging every step once; a smaller budget only renders again."""
    pics = tmp_path / "pics"
    box(pics / "a.png", (4, 4, 12, 28))
    out, render = tmp_path / "out", {"frames": 3, "particles": 200, "size": 48}
    first = run_batch(pics, out, SMOKE.updated({"train.steps": 20}), render)
    assert [i.status for i in first] == ["done"]
    grown = run_batch(pics, out, SMOKE.updated({"train.steps": 45}), render)
    assert [(i.status, i.reason) for i in grown] == [("done", "resumed")]
    rows = (out / "a" / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 46))
    shrunk = run_batch(pics, out, SMOKE.updated({"train.steps": 30}), render)
    assert [(i.status, i.reason) for i in shrunk] == [("done", "rendered again")]
    assert load_checkpoint(out / "a" / CHECKPOINT)["step"] == 45
    done = json.loads((out / "a" / "done.json").read_text())
    assert done["steps"] == 45


def test_a_morph_leg_with_other_settings_is_refused(tmp_path: Path) -> None:
    a, b = box(tmp_path / "a.png", (4, 4, 12, 28)), box(tmp_path / "b.png", (8, 8, 28, 16))
    cfg = load_config("morph").updated({"train.steps": 5, "train.batch": 64})
    legs = plan([str(a), str(b)], cfg, tmp_path / "m")
    write_manifest(tmp_path / "m", legs)
    train_run(legs[0].end, cfg, legs[0].path, preview=False, start=legs[0].start)
    assert plan([str(a), str(b)], cfg, tmp_path / "m")[0].state == "done"
    assert plan([str(a), str(b)], cfg.updated({"train.steps": 9}), tmp_path / "m")[0].state == (
        "resume"
    )
    with pytest.raises(FlowgifError, match="other pictures or settings"):
        plan([str(a), str(b)], cfg.updated({"train.lr": 0.5}), tmp_path / "m")
