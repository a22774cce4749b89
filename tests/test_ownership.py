"""flowgif replaces only what it can prove it wrote: ownership, atomic claims, symlinks, names,
moved pictures, Ray's reachability and one-line usage errors (the user's files are checked
byte for byte after every refusal)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from flowgif.batch import run_batch, scan
from flowgif.config import load_config
from flowgif.fit import train_run
from flowgif.store import MARKER, claim, load_checkpoint, new_run_dir, read_marker, safe_name
from tests.conftest import ROOT
from tests.test_cli import SMOKE, assert_one_line_error, call

CONFIG = load_config(SMOKE)
RENDER = {"frames": 3, "particles": 200, "size": 48}


def box(path: Path, rect: tuple[int, int, int, int] = (4, 4, 14, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("L", (24, 16), 255)
    img.paste(0, rect)
    img.save(path)
    return path


def sums(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- ownership ------------------------------------------------------------------------------


def test_a_batch_never_takes_over_a_run_made_by_train(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "star.png")
    out = tmp_path / "runs"
    train_run(pics / "star.png", CONFIG.updated({"train.steps": 30}), out / "star", preview=False)
    kept = sums(out / "star")
    items = run_batch(pics, out, CONFIG.updated({"train.steps": 10}), RENDER)
    assert [i.status for i in items] == ["done"]
    assert Path(items[0].run).name == "star-2"
    assert "star was made by flowgif train: kept, this run is star-2" in items[0].reason
    assert sums(out / "star") == kept  # byte for byte
    assert load_checkpoint(out / "star" / "checkpoint.pt")["step"] == 30
    report = json.loads((out / "batch.json").read_text())
    assert "made by flowgif train" in report["items"][0]["reason"]
    again = run_batch(pics, out, CONFIG.updated({"train.steps": 10}), RENDER)
    assert [(i.status, Path(i.run).name) for i in again] == [("skipped", "star-2")]


def test_a_batch_writes_beside_folders_it_cannot_prove_are_its_own(tmp_path: Path) -> None:
    pics, out = tmp_path / "pics", tmp_path / "out"
    box(pics / "a.png")
    box(pics / "b.png", (2, 2, 20, 6))
    (out / "a").mkdir(parents=True)
    (out / "a" / "checkpoint.pt").write_bytes(b"my own file, named like flowgif's")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    (out / "b").symlink_to(victim)
    before_a, before_victim = sums(out / "a"), sums(victim)
    items = {i.image: i for i in run_batch(pics, out, CONFIG.updated({"train.steps": 5}), RENDER)}
    assert Path(items["a.png"].run).name == "a-2" and items["a.png"].status == "done"
    assert "is not a run folder flowgif marked" in items["a.png"].reason
    assert Path(items["b.png"].run).name == "b-2" and "symbolic link" in items["b.png"].reason
    assert sums(out / "a") == before_a and sums(victim) == before_victim
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.txt"]


def test_a_batch_with_other_settings_keeps_the_earlier_runs(tmp_path: Path) -> None:
    pics, out = tmp_path / "pics", tmp_path / "out"
    box(pics / "a.png")
    run_batch(pics, out, CONFIG.updated({"train.steps": 5}), RENDER)
    first = sums(out / "a")
    items = run_batch(pics, out, CONFIG.updated({"train.steps": 5, "train.lr": 0.002}), RENDER)
    assert Path(items[0].run).name == "a-2" and "other settings" in items[0].reason
    assert sums(out / "a") == first
    back = run_batch(pics, out, CONFIG.updated({"train.steps": 5}), RENDER)
    assert [(i.status, Path(i.run).name) for i in back] == [("skipped", "a")]


def test_a_folder_holding_checkpoint_pt_is_not_taken_for_a_run(
    tiny_run: Path, tmp_path: Path
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "checkpoint.pt").write_bytes(b"their model")
    (proj / "results.gif").write_bytes(b"GIF89a their results")
    np.save(proj / "data.npy", np.zeros((7, 2), np.float32))
    Image.new("L", (4, 4)).save(proj / "figure.png")
    before = sums(proj)
    for args in (
        ("render", tiny_run, "--out", proj / "results.gif", "--frames", 3, "--particles", 50),
        ("sample", tiny_run, "--n", 10, "--out", proj / "data.npy"),
        ("plot", tiny_run, "--kind", "loss", "--out", proj / "figure.png"),
    ):
        assert_one_line_error(call(*args), "did not write")
    assert sums(proj) == before


def test_a_signature_must_be_the_whole_field(tiny_run: Path, tmp_path: Path) -> None:
    gif = tmp_path / "theirs.gif"
    Image.new("P", (4, 4)).save(gif, comment=b"this is NOT made with flowgif")
    fake = tmp_path / "clip.mp4"
    fake.write_text("made with flowgif")
    png = tmp_path / "theirs.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "made with flowgif, then edited by hand")
    Image.new("L", (4, 4)).save(png, pnginfo=info)
    before = sums(tmp_path)
    for out in (gif, fake):
        assert_one_line_error(call("render", tiny_run, "--out", out, "--frames", 3), "did not")
    assert_one_line_error(call("plot", tiny_run, "--kind", "loss", "--out", png), "did not")
    assert sums(tmp_path) == before
    ours = tmp_path / "ours.gif"
    for frames in (3, 4):  # its own output, signed: replaced, by the new render
        assert (
            call("render", tiny_run, "--out", ours, "--frames", frames, "--particles", 50)
        ).exit_code == 0
        with Image.open(ours) as img:
            assert img.n_frames == frames


def test_eval_never_replaces_a_report_it_did_not_sign(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "eval.json").write_text('{"kl": "my notes"}')
    assert_one_line_error(call("eval", run, "--n-nll", 100, "--samples", 200), "did not write")
    assert (run / "eval.json").read_text() == '{"kl": "my notes"}'
    (run / "eval.json").unlink()
    for _ in range(2):
        result = call("eval", run, "--n-nll", 100, "--samples", 200, "--transport", 10)
        assert result.exit_code == 0, result.output
    assert json.loads((run / "eval.json").read_text())["generator"] == "made with flowgif"


# --- atomic claims --------------------------------------------------------------------------


def _claim(args: tuple[str, int]) -> bool:
    folder, _ = args
    return claim(Path(folder), "train", "x")


def _new(args: tuple[str, int]) -> str:
    root, _ = args
    return str(new_run_dir(Path(root), "circle"))


def test_folders_are_claimed_by_one_process_only(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(6) as pool:
        won = pool.map(_claim, [(str(tmp_path / "one"), i) for i in range(12)])
        names = pool.map(_new, [(str(tmp_path / "runs"), i) for i in range(12)])
    assert sum(won) == 1
    assert len(set(names)) == 12  # every process got its own folder
    for name in names:
        assert read_marker(Path(name))["made_by"] == "train"


def test_two_trainings_started_together_keep_both_runs(tmp_path: Path) -> None:
    box(tmp_path / "circle.png")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "flowgif", "train", "--img", "circle.png", "--config", str(SMOKE)]
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["circle", "circle-2"]
    for name in runs:
        assert load_checkpoint(tmp_path / "runs" / name / "checkpoint.pt")["step"] > 0


# --- symlinks and scans ---------------------------------------------------------------------


def test_a_recursive_scan_visits_each_real_folder_once(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "a.png")
    box(pics / "sub" / "b.png")
    (pics / "sub" / "loop").symlink_to("..")
    (pics / "sub" / "again").symlink_to(pics / "sub")
    found = scan(pics, recursive=True)  # a loop followed would never return
    assert sorted(p.relative_to(pics).as_posix() for p in found.pictures) == ["a.png", "sub/b.png"]
    ignored = {p.relative_to(pics).as_posix(): why for p, why in found.ignored}
    assert "already searched" in ignored["sub/loop"]
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > 1

    from flowgif.errors import Interrupted

    with pytest.raises(Interrupted):
        scan(pics, recursive=True, stop=stop)


# --- names ----------------------------------------------------------------------------------


def test_names_that_do_not_decode_are_shown_and_recorded(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "plain.png")
    odd = os.fsencode(pics) + b"/caf\xe9.png"
    with open(odd, "wb") as f:
        f.write((pics / "plain.png").read_bytes())
    out = tmp_path / "out"
    done = call("batch", pics, "--out", out, "--config", SMOKE, "--steps", 5,
                "--render-args", "--frames 3 --particles 100 --size 32")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "caf\\xe9.png" in done.output
    report = json.loads((out / "batch.json").read_text())
    assert {i["image"]: i["status"] for i in report["items"]} == {
        "caf\\xe9.png": "done",
        "plain.png": "done",
    }
    assert (out / "caf_xe9" / "flow.gif").is_file()
    assert "caf\\xe9.png" in (out / "index.html").read_text(encoding="utf-8")
    again = call("gallery", out)
    assert again.exit_code == 0, again.output


def test_names_too_long_for_the_file_system_are_cut_with_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for length in (251, 255):
        name = "p" * (length - 4) + ".png"
        box(tmp_path / name)
        for _ in range(2):  # the second time takes the next free name
            done = call("train", "--img", name, "--config", SMOKE, "--steps", 3)
            assert done.exit_code == 0, done.output
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4 and all(len(r.name.encode()) <= 125 for r in runs)
    assert len({r.name for r in runs}) == 4
    assert safe_name("p" * 300) != safe_name("p" * 301)  # distinct long names stay distinct
    assert safe_name("a\nb") == "a_b"


# --- moved pictures -------------------------------------------------------------------------


def test_a_moved_start_picture_is_found_by_its_content(tmp_path: Path) -> None:
    a, b = box(tmp_path / "a.png"), box(tmp_path / "b.png", (2, 2, 20, 6))
    run = tmp_path / "leg"
    first = call("train", "--img", b, "--from", a, "--config", SMOKE, "--steps", 20, "--out", run)
    assert first.exit_code == 0, first.output
    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    a.rename(moved)
    assert_one_line_error(call("train", "--resume", run, "--steps", 30), "--from PATH")
    goes_on = call("train", "--resume", run, "--steps", 30, "--from", moved)
    assert goes_on.exit_code == 0, goes_on.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 30
    assert_one_line_error(call("train", "--resume", run, "--steps", 40, "--from", b), "start")


def test_train_from_a_picture_takes_the_morph_recipe_and_says_so(tmp_path: Path) -> None:
    a, b = box(tmp_path / "a.png"), box(tmp_path / "b.png", (2, 2, 20, 6))
    done = call("train", "--img", b, "--from", a, "--steps", 3, "--resolution", 32,
                "--out", tmp_path / "r")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "recipe: morph" in done.output
    stored = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]
    assert stored["fm"]["ot"] is True and stored == {
        **stored,
        "fm": {**stored["fm"], **load_config("morph").fm.__dict__},
    }


# --- Ray, usage errors and small refusals ---------------------------------------------------


def test_an_unreachable_ray_address_is_one_line_in_seconds(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    box(tmp_path / "pics" / "a.png")
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        clock = time.perf_counter()
        done = call("batch", tmp_path / "pics", "--out", tmp_path / "out", "--engine", "ray",
                    "--address", address)  # fmt: skip
        assert time.perf_counter() - clock < 30
        assert_one_line_error(done, "cannot reach the Ray cluster")
        assert len(done.output.strip().splitlines()) == 1, done.output


def test_the_ray_extra_brings_the_client_for_ray_addresses() -> None:
    pytest.importorskip("ray")
    import grpc  # noqa: F401
    import ray.util.client  # noqa: F401 - ray://HOST:PORT needs it


def test_usage_errors_are_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the ``flowgif`` entry point (typer's test runner draws its own boxes)."""
    from flowgif.cli import main

    for args, said in (
        (("render", "--frames", "0"), "--frames"),
        (("render", "--fram", "3"), "No such option"),
        (("traim",), "No such command"),
    ):
        monkeypatch.setattr(sys, "argv", ["flowgif", *args])
        with pytest.raises(SystemExit) as done:
            main()
        err = capsys.readouterr().err
        assert done.value.code == 2, err
        assert len(err.strip().splitlines()) == 1 and said in err, err


def test_small_refusals_are_one_line(tiny_run: Path, tmp_path: Path) -> None:
    box(tmp_path / "pics" / "a.png")
    result = call("batch", tmp_path / "pics", "--render-args", "--help")
    assert_one_line_error(result, "not --help")
    assert "Usage" not in result.output
    assert_one_line_error(call("plot", tiny_run, "--times", "nan,inf"), "between 0 and 1")


def test_a_16_bit_thumbnail_keeps_its_greys(tmp_path: Path) -> None:
    from flowgif.batch import write_thumbnail

    grey = np.full((32, 32), 32768, np.uint16)
    grey[:8] = 0
    Image.fromarray(grey).save(tmp_path / "g.png")
    write_thumbnail(tmp_path / "g.png", tmp_path / "t.png")
    t = np.asarray(Image.open(tmp_path / "t.png").convert("L"))
    assert abs(int(t[20, 20]) - 128) <= 1 and t[0, 0] == 0


def test_the_marker_is_flowgifs_own_format(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / MARKER).write_text('{"made_by": "train"}')
    assert read_marker(tmp_path / "x") is None
    assert claim(tmp_path / "y", "batch", "h") and read_marker(tmp_path / "y")["picture"] == "h"
