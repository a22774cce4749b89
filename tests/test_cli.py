"""The command line: every command end to end on a tiny run, and one clear line per bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flowgif import __version__
from flowgif.cli import app
from tests.conftest import ROOT

runner = CliRunner()
SMOKE = str(ROOT / "configs" / "smoke.toml")


def call(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, pattern: str, code: int = 1) -> None:
    """What the README promises of bad input: exit ``code`` (1; 2 where the parser itself
    refuses), exactly one line on stderr, starting ``error:`` and naming ``pattern``, nothing
    on stdout, and no exception but the exit itself."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert pattern.lower() in lines[0].lower(), lines[0]


def assert_error_after_start(result, pattern: str) -> None:
    """A run that started (it said what it would do) and then failed (a full disk, training
    that diverged): exit 1, nothing on stdout, no exception but the exit, and its last line on
    stderr — the only one that starts ``error:`` — naming ``pattern``."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert pattern.lower() in lines[-1].lower(), lines[-1]


def test_version_and_help() -> None:
    assert call("--version").output.strip() == f"flowgif {__version__}"
    for command in ("train", "render", "sample", "eval", "morph", "batch", "gallery", "plot"):
        result = call(command, "--help")
        assert result.exit_code == 0 and "--help" in result.output


def test_train_sample_eval_render_end_to_end(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--steps", 15)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "ell"
    assert (run / "checkpoint.pt").is_file() and "15 steps" in result.output
    again = call("train", "--img", tiny_png, "--config", SMOKE, "--steps", 5)
    assert again.exit_code == 0 and (tmp_path / "runs" / "ell-2").is_dir()  # never overwrites

    assert call("sample", run, "--n", 500, "--out", tmp_path / "s.npy").exit_code == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (500, 2) and s.dtype == np.float32
    assert call("eval", run, "--n-nll", 500, "--samples", 2000).exit_code == 0
    figures = json.loads((run / "eval.json").read_text())
    assert {"kl", "nll", "entropy", "tv", "on_ink", "nfe"} <= figures.keys()

    result = call("render", "--frames", 4, "--particles", 300, "--size", 64)  # latest run
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "runs" / "ell-2" / "flow.gif").n_frames == 4


def test_config_file_values_and_cli_override(tiny_png: Path, tmp_path: Path) -> None:
    result = call(
        "train",
        "--img",
        tiny_png,
        "--config",
        SMOKE,
        "--steps",
        3,
        "--out",
        tmp_path / "r",
        "--method",
        "fm",
        "--lr",
        "0.01",
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "config.toml").read_text()
    assert "lr = 0.01" in text and "steps = 3" in text and "width = 32" in text


@pytest.mark.parametrize(
    "case", ["missing", "folder", "text", "blank", "empty", "long name", "a word as a path"]
)
def test_bad_pictures_get_one_line(case: str, tmp_path: Path) -> None:
    path = {
        "long name": tmp_path / ("a" * 3000 + ".png"),  # past the system's name limit
        "a word as a path": Path("text:hi"),
        "missing": tmp_path / "nope.png",
        "folder": tmp_path,
        "text": tmp_path / "t.png",
        "blank": tmp_path / "b.png",
        "empty": tmp_path / "e.png",
    }[case]
    if case == "text":
        path.write_text("not a picture")
    if case == "blank":
        Image.new("L", (20, 20), 255).save(path)
    if case == "empty":
        path.write_bytes(b"")
    expected = {
        "long name": "cannot read",
        "a word as a path": "not found: text:hi (a word: --text WORD)",
        "missing": "not found",
        "folder": "folder",
        "text": "not an image",
        "blank": "no ink",
        "empty": "empty",
    }[case]
    result = call("train", "--img", path, "--config", SMOKE, "--out", tmp_path / "run")
    assert_one_line_error(result, expected)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bad_options_are_refused_at_parse_time(tiny_png: Path) -> None:
    said = "'--method': Value error, 'magic' is not one of 'fm'"
    assert_one_line_error(call("train", "--img", tiny_png, "--method", "magic"), said, 2)
    said = "'--steps': Input should be greater than or equal to 1"
    assert_one_line_error(call("train", "--img", tiny_png, "--steps", "-3"), said, 2)
    said = "'--frames': Input should be greater than or equal to 2"
    assert_one_line_error(call("render", "--frames", "0"), said, 2)
    said = "'--particles': Input should be greater than or equal to 1"
    assert_one_line_error(call("render", "--particles", "0"), said, 2)


def test_options_that_do_not_fit_the_target_leave_no_folder(
    tiny_png: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    reverse = call("train", "--img", tiny_png, "--method", "reverse", "--out", out)
    assert_one_line_error(reverse, "reverse KL fits an energy known up to a constant")
    augment = call(
        "train", "--target", "moons", "--method", "radial", "--augment", 1, "--out", out
    )
    assert_one_line_error(augment, "continuous")
    assert not out.exists()


def test_bad_config_names_the_key(tiny_png: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nstepz = 3\n")
    assert_one_line_error(call("train", "--img", tiny_png, "--config", cfg), "stepz")
    cfg.write_text('[train]\nsteps = "many"\n')
    said = "--steps must be int, got str 'many'"
    assert_one_line_error(call("train", "--img", tiny_png, "--config", cfg), said)
    assert_one_line_error(
        call("train", "--img", tiny_png, "--config", tmp_path / "x.toml"), "not found"
    )


def test_unwritable_output_folder(tiny_png: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--out", blocker / "run")
    assert_one_line_error(result, "cannot write")


def test_bad_checkpoints_are_refused_and_left_alone(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = run / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert_one_line_error(call("render", run, "--frames", 2), "corrupt")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # left alone, byte for byte

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(ckpt, "wb") as f:
        pickle.dump({"format": "flowgif-checkpoint/1", "x": Evil()}, f)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = call("sample", run, "--n", 10)
    assert_one_line_error(result, "carries code or objects that are not plain data")
    assert "code ran" not in result.output
    assert_one_line_error(call("eval", tmp_path / "nowhere"), "run folder not found")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_render_to_unknown_suffix(tiny_run: Path, tmp_path: Path) -> None:
    assert_one_line_error(call("render", tiny_run, "--out", tmp_path / "x.avi"), ".gif")


def test_batch_finishes_good_pictures_reports_bad_and_skips_done(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("L", (24, 16), 255).save(pics / "blank.png")  # no ink: fails
    img = Image.new("L", (24, 16), 255)
    img.paste(0, (4, 4, 14, 12))
    img.save(pics / "box.png")
    img.save(pics / "box_no_suffix", format="PNG")  # found by content
    (pics / "notes.png").write_text("not a picture")  # says picture, does not decode: fails
    (pics / "readme.txt").write_text("notes")  # not a picture: ignored, with its reason
    (pics / "old").mkdir()  # a sub-folder, without --recursive: ignored, with its reason
    out = tmp_path / "runs"
    args = [
        "batch",
        pics,
        "--out",
        out,
        "--config",
        SMOKE,
        "--steps",
        10,
        "--render-args",
        "--frames 3 --particles 200 --size 48",
    ]
    first = call(*args)
    assert first.exit_code == 1, first.output  # two failures
    report = json.loads((out / "batch.json").read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (2, 0, 2)
    reasons = {i["image"]: (i["status"], i["reason"]) for i in report["items"]}
    assert len(reasons) == 6  # every entry of the folder is in the report
    assert reasons["blank.png"][0] == "failed" and "no ink" in reasons["blank.png"][1]
    assert reasons["notes.png"][0] == "failed" and "decode" in reasons["notes.png"][1]
    assert reasons["readme.txt"] == ("ignored", "not a picture")
    assert reasons["old"] == ("ignored", "a sub-folder; a recursive batch includes it")
    assert Image.open(out / "box" / "flow.gif").n_frames == 3
    assert (out / "box_no_suffix" / "done.json").is_file()
    second = call(*args)
    report = json.loads((out / "batch.json").read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (0, 2, 2)
    changed = call(*args[:-1], "--frames 4 --particles 200 --size 48")  # new render options
    report = json.loads((out / "batch.json").read_text())
    assert report["done"] == 2 and changed.exit_code == 1 and second.exit_code == 1


def test_batch_rejects_bad_render_args(tmp_path: Path) -> None:
    said = (
        "--render-args: Invalid value for '--frames': Input should be greater than or equal to 2"
    )
    assert_one_line_error(call("batch", tmp_path, "--render-args", "--frames -1"), said)
    assert_one_line_error(call("batch", tmp_path / "none"), "not a folder")


def test_checkpoint_from_another_format_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    import torch

    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    torch.save({"format": "flowgif-checkpoint/0", "field": {}}, run / "checkpoint.pt")
    said = "is not a flowgif-checkpoint/1 checkpoint (found 'flowgif-checkpoint/0'); retrain"
    assert_one_line_error(call("render", run), said)
