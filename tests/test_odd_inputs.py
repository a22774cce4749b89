"""Odd names, absurd values and awkward folders: each one a clear line, a result, or a reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flowgif.sources.picture import ink_map
from tests.conftest import ROOT
from tests.test_cli import SMOKE, assert_one_line_error, call

RENDER_ARGS = "--frames 2 --particles 100 --size 32"


def box(path: Path, size: tuple[int, int] = (24, 16)) -> Path:
    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).rectangle([3, 3, size[0] // 2, size[1] - 4], fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def batch(pics: Path, out: Path, *extra: object) -> tuple[object, dict]:
    """``flowgif batch`` of tiny 2-step runs; the result and the batch.json it wrote."""
    result = call(
        "batch", pics, "--out", out, "--config", SMOKE, "--steps", 2, "--render-args",
        RENDER_ARGS, *extra,
    )  # fmt: skip
    return result, json.loads((out / "batch.json").read_text())


# --- markup: square brackets and :emoji: codes are text -----------------------------------------


@pytest.mark.parametrize(
    "name", ["[draft] logo", "x[i]y", "[bold red]boo[", "a\\[b]", "go :smile: b:", ":b:"]
)
def test_square_brackets_in_names_are_shown_as_written(name: str, tmp_path: Path) -> None:
    folder = tmp_path / f"scans [{name}]"
    pic = box(folder / f"{name}.png")
    out = tmp_path / "runs" / name
    result = call("train", "--img", pic, "--config", SMOKE, "--steps", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert name in result.output and str(out) in result.output  # nothing eaten
    word = f"{name}[/b]"
    text = call("train", "--text", word, "--config", SMOKE, "--steps", 2, "--out", tmp_path / "t")
    assert text.exit_code == 0 and f"text:{word}" in text.output, text.output
    missing = call("train", "--img", folder / f"{name}-gone.png", "--config", SMOKE)
    assert_one_line_error(missing, f"{name}-gone.png")


def test_bracketed_names_do_not_stop_a_batch(tmp_path: Path) -> None:
    pics = tmp_path / "in [b]"
    for name in ("[draft] a.png", "b[i]x[red].png", "c.png"):
        box(pics / name)
    result, report = batch(pics, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert report["done"] == 3
    assert {i["image"] for i in report["items"]} == {"[draft] a.png", "b[i]x[red].png", "c.png"}
    assert str(pics / "c.png") not in result.output  # shown relative to the folder given


# --- batch ---------------------------------------------------------------------------------------


def test_batch_gives_same_named_pictures_their_own_runs(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "logo.png")
    box(pics / "logo.jpg", (30, 20))
    box(pics / "sub" / "logo.png", (16, 16))
    result, report = batch(pics, tmp_path / "out", "--recursive")
    assert result.exit_code == 0, result.output
    runs = {i["image"]: Path(i["run"]).name for i in report["items"]}
    assert len(set(runs.values())) == 3, runs
    _, again = batch(pics, tmp_path / "out", "--recursive")
    assert again["skipped"] == 3 and again["done"] == 0


def test_batch_output_inside_its_folder_is_not_trained_on(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "one.png")
    box(pics / "deep" / "two.png")
    for _ in range(2):
        result, report = batch(pics, pics / "runs", "--recursive")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (pics / "runs").iterdir() if p.is_dir()) == ["deep__two", "one"]
    ignored = [i for i in report["items"] if i["status"] == "ignored"]
    assert [i["reason"] for i in ignored] == ["the output folder"]
    result, report = batch(pics, tmp_path / "o2", "--recursive")
    assert report["done"] == 2, result.output  # the old output folder is flowgif's own


def test_batch_stops_on_sigterm_and_reports_every_picture(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    for name in ("a.png", "b.png"):
        box(pics / name)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "flowgif",
        "batch",
        str(pics),
        "--out",
        str(out),
        "--config",
        SMOKE,
        "--steps",
        "100000",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60
    while not (out / "a" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = json.loads((out / "batch.json").read_text())
    status = {i["image"]: i["status"] for i in report["items"]}
    assert status == {"a.png": "interrupted", "b.png": "not started"}


# --- absurd values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, said, code",
    [
        (("render", "--hold", "1e9"), "'--hold': Input should be less than or equal to 60", 2),
        (("render", "--hold", "inf"), "'--hold': Input should be less than or equal to 60", 2),
        (("render", "--seed", "99999999999999999999"), "'--seed'", 2),
        (("render", "--frames", "100000"), "'--frames': Input should be less than or equal", 2),
        (
            ("render", "--frames", "9000", "--particles", "4000000"),
            "points (--frames x --particles)",
            1,
        ),
        (("sample", "--n", "10000000000"), "'--n': Input should be less than or equal to", 2),
        (("train", "--batch", "100000000000"), "'--batch': Input should be less than", 2),
        (("train", "--seed", "-1"), "'--seed': Input should be greater than or equal to 0", 2),
    ],
)
def test_absurd_values_are_refused_in_one_line(
    tiny_run: Path, tiny_png: Path, tmp_path: Path, args: tuple[str, ...], said: str, code: int
) -> None:
    target = ("--img", tiny_png, "--out", tmp_path / "r") if args[0] == "train" else (tiny_run,)
    result = call(args[0], *target, *args[1:])
    assert_one_line_error(result, said, code)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text, said",
    [
        ("[field]\nwidth = 1000000\n", "width"),
        ("[train]\nbatch = 3000000\n[field]\nwidth = 1024\n", "activations"),
    ],
)
def test_configs_too_big_to_train_leave_nothing(
    tiny_png: Path, tmp_path: Path, text: str, said: str
) -> None:
    cfg = tmp_path / "big.toml"
    cfg.write_text(text)
    result = call("train", "--img", tiny_png, "--config", cfg, "--out", tmp_path / "r")
    assert_one_line_error(result, said)
    assert not (tmp_path / "r").exists()


def test_float_pictures_keep_their_shape(tmp_path: Path) -> None:
    a = np.ones((20, 30), dtype=np.float32)  # white paper, lightness 1.0
    a[5:15, 4:12] = 0.0  # a black block
    path = tmp_path / "float.tif"
    Image.fromarray(a, mode="F").save(path)
    from flowgif.sources.picture import load_image

    ink = ink_map(load_image(path))
    assert ink[5:15, 4:12].min() == 1.0 and ink.sum() == 80.0
    wide = Image.fromarray((a * 4000 - 1000).astype(np.int32), mode="I")  # any range
    assert np.array_equal(ink_map(wide), ink)


def test_transparent_picture_is_called_transparent(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(path)
    for extra in ((), ("--invert",)):
        result = call("train", "--img", path, "--config", SMOKE, *extra)
        assert_one_line_error(result, "transparent")
        assert "--invert" not in result.output


def test_named_configs_resolve_from_any_folder(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    listed = call("configs")
    names = [line.split()[0] for line in listed.output.strip().splitlines()]
    assert listed.exit_code == 0 and {"fast", "default", "smoke", "realnvp"} <= set(names)
    shipped = sorted(p.stem for p in (ROOT / "flowgif" / "configs").glob("*.toml"))
    assert names == shipped
    result = call("train", "--img", tiny_png, "--config", "smoke", "--steps", 2)
    assert result.exit_code == 0, result.output
    assert_one_line_error(call("train", "--img", tiny_png, "--config", "fastest"), "fast,")


def test_top_level_configs_are_the_shipped_ones() -> None:
    from flowgif.config import load_config, named_configs

    top = ROOT / "configs"
    assert top.resolve() == (ROOT / "flowgif" / "configs").resolve()
    for name in named_configs():
        assert load_config(name) == load_config(top / f"{name}.toml")


def test_batch_ignores_what_flowgif_wrote_beside_the_pictures(tmp_path: Path) -> None:
    """A GIF rendered into the pictures' folder is flowgif's own output, ignored with that
    reason (fitting it would fit its first frame: noise); the same picture unsigned is fit."""
    pics = tmp_path / "pics"
    one = box(pics / "one.png")
    run = tmp_path / "run"
    assert call("train", "--img", one, "--method", "exact", "--out", run).exit_code == 0
    assert call("render", run, "--out", pics / "one.gif", *RENDER_ARGS.split()).exit_code == 0
    last = np.asarray(Image.open(pics / "one.gif").convert("RGB"))
    Image.fromarray(last).save(pics / "plain.gif")  # its pixels, without the signature
    result, report = batch(pics, tmp_path / "out")
    assert result.exit_code == 0, result.output
    status = {Path(i["image"]).name: (i["status"], i.get("reason", "")) for i in report["items"]}
    assert status["one.gif"] == (
        "ignored",
        "flowgif's own output (an animation or picture it wrote)",
    )
    assert status["plain.gif"][0] == "done" and status["one.png"][0] == "done", status


def test_batch_leaves_its_folder_as_it_was(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "a.png")
    before = {p.name: p.read_bytes() for p in pics.iterdir()}
    batch(pics, tmp_path / "o")
    assert {p.name: p.read_bytes() for p in pics.iterdir()} == before
