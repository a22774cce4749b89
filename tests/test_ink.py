"""Pictures as people have them: photos and scans give their strokes, clean pictures stay exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from flowgif.sources.ink import ink_of
from flowgif.sources.toys import text_image
from tests.test_cli import SMOKE, call


def photo(seed: int = 0, size: tuple[int, int] = (360, 240)) -> tuple[Image.Image, np.ndarray]:
    """Handwriting-like strokes on grey paper lit unevenly, with sensor noise; and the strokes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 0.46 + 0.16 * xx / w + 0.06 * yy / h  # a lightness gradient across the page
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    font = ImageFont.load_default(size=h // 5)
    draw.text((w // 18, h // 8), "x^2 + 1", fill=255, font=font)
    for _ in range(4):  # a few pen strokes
        pts = rng.uniform((10, h // 2), (w - 10, h - 10), (5, 2))
        draw.line([tuple(p) for p in pts], fill=255, width=3)
    strokes = np.asarray(mask) / 255.0
    light = paper * (1 - 0.5 * strokes) + rng.normal(0, 0.015, (h, w))
    return Image.fromarray(np.clip(255 * light, 0, 255).astype(np.uint8), mode="L"), strokes > 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_a_photo_gives_its_strokes_not_its_paper(seed: int) -> None:
    img, strokes = photo(seed)
    made = ink_of(img, "auto")
    assert made.model == "local" and "paper" in made.reason
    on = (made.ink * strokes).sum() / made.ink.sum()
    assert on >= 0.8, on
    plain = ink_of(img, "darkness").ink
    assert (plain * strokes).sum() / plain.sum() < 0.2  # what darkness did: the paper's mass


def test_clean_pictures_keep_darkness_exactly() -> None:
    silhouette = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(silhouette).ellipse([10, 5, 290, 195], fill=0)  # far bigger than any block
    edge = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(edge).rectangle([0, 0, 70, 89], fill="black")  # a shape touching the border
    full = Image.new("RGB", (40, 20), (230, 20, 20))  # no paper at all: every pixel is ink
    for img in (silhouette, text_image("Ada"), edge, full):
        made = ink_of(img, "auto")
        assert made.model == "darkness"
        assert np.array_equal(made.ink, ink_of(img, "darkness").ink)
    filled = ink_of(silhouette, "auto").ink
    assert filled[100, 150] == 1.0  # the middle of the big shape is still full ink


def test_shape_makes_a_colour_logo_its_silhouette() -> None:
    logo = Image.new("RGB", (160, 120), (255, 255, 255))
    draw = ImageDraw.Draw(logo)
    draw.ellipse([10, 10, 70, 70], fill=(250, 200, 40))  # light yellow: little darkness
    draw.rectangle([90, 30, 150, 100], fill=(30, 60, 220))
    ink = ink_of(logo, "shape").ink
    inside = np.zeros(ink.shape, dtype=bool)
    inside[20:60, 20:60] = True
    inside[35:95, 95:145] = True
    outside = np.ones(ink.shape, dtype=bool)
    outside[5:76, 5:76] = False
    outside[25:106, 85:156] = False
    assert np.all(ink[inside] == 1.0) and np.all(ink[outside] == 0.0)
    darkness = ink_of(logo, "darkness").ink
    assert darkness[40, 40] < 0.3 < darkness[60, 120]  # why shape exists: yellow was faint


def test_shape_on_a_transparent_ground_is_the_opaque_part() -> None:
    logo = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle([20, 15, 60, 45], fill=(255, 255, 255, 255))  # white!
    ink = ink_of(logo, "shape").ink
    assert ink[30, 40] == 1.0 and ink[5, 5] == 0.0


def test_train_says_which_ink_and_shows_it(tmp_path: Path) -> None:
    img, _ = photo(2, (120, 80))
    img.save(tmp_path / "page.png")
    out = tmp_path / "run"
    result = call("train", "--img", tmp_path / "page.png", "--config", SMOKE, "--steps", 3,
                  "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ink: local" in result.output and "paper" in result.output
    panels = Image.open(out / "samples.png")
    assert panels.width > 3 * panels.height  # picture | ink map | samples, side by side
    forced = call("train", "--img", tmp_path / "page.png", "--config", SMOKE, "--steps", 3,
                  "--out", tmp_path / "dark", "--ink", "darkness")  # fmt: skip
    assert "ink: darkness" in forced.output
    import tomllib

    assert tomllib.loads((out / "config.toml").read_text())["density"]["ink"] == "auto"
    from flowgif.evaluate import _reference_ink
    from flowgif.store import load_run

    scored, source = _reference_ink(load_run(out))  # eval scores against what was fitted
    assert source == "image" and np.array_equal(scored, ink_of(img, "auto").ink)


def test_runs_from_before_the_ink_models_resume_with_darkness(
    tiny_run: Path, tmp_path: Path
) -> None:
    import shutil

    import torch

    from flowgif.store import checkpoint_config, load_checkpoint

    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["density"]["ink"]
    torch.save(ckpt, run / "checkpoint.pt")
    assert checkpoint_config(load_checkpoint(run / "checkpoint.pt")).density.ink == "darkness"
    result = call("train", "--resume", run, "--steps", 45)
    assert result.exit_code == 0, result.output
    assert "ink: darkness" in result.output


def test_runs_from_before_the_late_times_load_and_resume_as_they_trained(
    tiny_png: Path, tmp_path: Path
) -> None:
    """A checkpoint whose config has no ``field.late_features`` nor ``fm.late`` (trained
    before them, on fields without those inputs) loads with both 0, samples, and resumes."""
    import torch

    from flowgif.config import load_config
    from flowgif.fit import train_run
    from flowgif.store import checkpoint_config, load_checkpoint, load_run

    smoke = load_config(SMOKE)
    run = tmp_path / "old"
    train_run(tiny_png, smoke.updated({"field.late_features": 0, "fm.late": 0.0}), run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["field"]["late_features"], ckpt["config"]["fm"]["late"]
    torch.save(ckpt, run / "checkpoint.pt")
    config = checkpoint_config(load_checkpoint(run / "checkpoint.pt"))
    assert (config.field.late_features, config.fm.late) == (0, 0.0)
    assert load_run(run).flow.paths(torch.zeros(3, 2), torch.tensor([0.0, 1.0])).isfinite().all()
    result = call("train", "--resume", run, "--steps", 45)
    assert result.exit_code == 0, result.output
