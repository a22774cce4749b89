"""Nothing a user does loses their work: outputs, run folders, resumes, full disks, stale temps."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowgif.errors import FlowgifError, Interrupted
from flowgif.files import FRAMES_MARKER, TAG
from tests.conftest import ROOT
from tests.test_cli import SMOKE, assert_error_after_start, assert_one_line_error, call

RENDER = ("--frames", 3, "--particles", 100, "--size", 48)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run."""
    path = tmp_path / "my run"
    shutil.copytree(tiny_run, path)
    return path


# --- render outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["user folder", "run folder", "parent of runs", "plain file"])
def test_render_never_replaces_what_it_did_not_write(
    run: Path, tmp_path: Path, where: str
) -> None:
    out = {
        "user folder": tmp_path / "holiday photos",
        "run folder": run,
        "parent of runs": tmp_path,
        "plain file": tmp_path / "notes",
    }[where]
    if where == "user folder":
        out.mkdir()
        (out / "beach.jpg").write_bytes(b"precious")
    if where == "plain file":
        out.write_text("my notes, no suffix")
    before = tree(tmp_path)
    assert_one_line_error(call("render", run, "--out", out, *RENDER), str(out.name))
    assert tree(tmp_path) == before


def test_render_refuses_the_current_folder(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    assert_one_line_error(call("render", run, "--out", ".", *RENDER), "current folder")
    assert_one_line_error(call("render", run, "--out", "..", *RENDER), "current folder")
    assert list(here.iterdir()) == [] and not list(tmp_path.glob(".*"))


def test_frames_folder_new_empty_and_rewritten(run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "frames"
    empty.mkdir()
    assert call("render", run, "--out", empty, "--frames", 5, "--size", 48).exit_code == 0
    assert sorted(p.name for p in empty.iterdir())[:1] == [FRAMES_MARKER]
    assert len(list(empty.glob("frame_*.png"))) == 5
    again = call("render", run, "--out", empty, "--frames", 2, "--size", 48)
    assert again.exit_code == 0, again.output
    assert len(list(empty.glob("frame_*.png"))) == 2  # replaced whole, no stale frame 4
    (empty / "my edit.png").write_bytes(b"x")  # the user adds something: now it is theirs
    assert_one_line_error(call("render", run, "--out", empty, *RENDER), "did not write")
    assert (empty / "my edit.png").read_bytes() == b"x"
    assert not [p for p in tmp_path.iterdir() if TAG in p.name]


def test_failed_frames_leave_the_previous_frames(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "frames"
    assert call("render", run, "--out", out, *RENDER).exit_code == 0
    before = tree(out)
    real_save, saved = Image.Image.save, []

    def full_disk(self, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert_one_line_error(call("render", run, "--out", out, "--frames", 4), "no space left")
    assert tree(out) == before
    assert not [p for p in tmp_path.iterdir() if TAG in p.name]


FAKE_FFMPEG = """#!{python}
import sys
out = sys.argv[-1]
sys.stdin.buffer.read()
with open(out, "wb") as f:
    f.write({data!r})
sys.stderr.write("av_interleaved_write_frame(): No space left on device\\n")
sys.exit({code})
"""


@pytest.mark.parametrize(
    "code, data, said",
    [
        (1, b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16, "no space left"),  # ffmpeg says it
        (0, b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16 + b"\x00\x10\x00\x00mdat", "damaged"),
    ],
    ids=["encoder-fails", "encoder-lies"],
)
def test_a_failed_mp4_never_replaces_a_good_one(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, data: bytes, said: str
) -> None:
    out = tmp_path / "flow.mp4"
    assert call("render", run, "--out", out, *RENDER).exit_code == 0
    good = out.read_bytes()
    from flowgif.render.writers import mp4_problem

    assert mp4_problem(out) == ""
    fake = tmp_path / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(python=sys.executable, data=data, code=code))
    fake.chmod(0o755)
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))
    assert_one_line_error(call("render", run, "--out", out, *RENDER), said)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_stale_temps_of_dead_processes_are_swept_and_nothing_else(
    run: Path, tmp_path: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = run / f".flow.gif.{TAG}@{host}@{dead.pid}@k2j4.gif"
    stale_dir = run / f".frames.{TAG}@{host}@{dead.pid}@zz9"
    live = run / f".flow.gif.{TAG}@{host}@{os.getpid()}@abcd.gif"  # a writer still at work
    mine = run / ".flow.gif.backup"  # the user's own hidden file
    for path in (stale, live, mine):
        path.write_bytes(b"half")
    stale_dir.mkdir()
    (stale_dir / "frame_0000.png").write_bytes(b"half")
    assert call("render", run, *RENDER).exit_code == 0
    assert not stale.exists() and live.exists() and mine.exists()
    assert call("render", run, "--out", run / "frames", *RENDER).exit_code == 0
    assert not stale_dir.exists()


# --- run folders ------------------------------------------------------------------------------


def test_train_never_writes_into_an_existing_run_or_file(
    tiny_png: Path, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(run)
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--steps", 2, "--out", run)
    assert_one_line_error(result, "already holds a run")
    assert tree(run) == before
    plain = tmp_path / "plain"
    plain.write_text("mine")
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--steps", 2, "--out", plain)
    assert_one_line_error(result, "not a folder")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "ell").write_text("a file where the default run would go")
    assert call("train", "--img", tiny_png, "--config", SMOKE, "--steps", 2).exit_code == 0
    assert (tmp_path / "runs" / "ell").read_text().startswith("a file")
    assert (tmp_path / "runs" / "ell-2" / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    "change",
    [("--method", "realnvp"), ("--augment", "1"), ("--lr", "0.5"), ("--config", "fast")],
    ids=lambda c: c[0],
)
def test_resume_refuses_a_different_model_and_changes_nothing(
    run: Path, change: tuple[str, str]
) -> None:
    before = tree(run)
    result = call("train", "--resume", run, "--steps", 100, *change)
    assert_one_line_error(result, change[0])
    assert tree(run) == before


def test_resume_of_a_finished_run_says_what_to_do(run: Path) -> None:
    result = call("train", "--resume", run, "--steps", 10)
    assert_one_line_error(result, "already has")
    assert "nan" not in result.output.lower()


def test_resume_from_another_folder_finds_the_picture(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(tiny_png, home / "pic.png")
    monkeypatch.chdir(home)
    assert call("train", "--img", "pic.png", "--config", SMOKE, "--steps", 4).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = call("train", "--resume", home / "runs" / "pic", "--steps", 6)
    assert result.exit_code == 0, result.output
    (home / "pic.png").unlink()
    result = call("train", "--resume", home / "runs" / "pic", "--steps", 8)
    assert_one_line_error(result, "--img")


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_state(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(run)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    result = call("train", "--resume", run, "--steps", 60)
    assert_error_after_start(result, "no space left")
    assert tree(run) == before  # config.toml too: it is written after the checkpoint


def test_divergence_says_nothing_was_saved_and_leaves_no_folder(
    tiny_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowgif.objectives.flow_matching as fm

    monkeypatch.setattr(
        fm,
        "fm_loss",
        lambda model, *a: model(torch.zeros(1), torch.zeros(1, 2)).sum() * float("nan"),
    )
    out = tmp_path / "r"
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--out", out)
    assert_error_after_start(result, "nothing was saved")
    assert not out.exists()


def test_stop_before_the_first_step_writes_nothing(tiny_png: Path, tmp_path: Path) -> None:
    from flowgif.config import load_config
    from flowgif.fit import train_run

    with pytest.raises(Interrupted) as stopped:
        train_run(tiny_png, load_config(SMOKE), tmp_path / "r", stop=lambda: True)
    assert not stopped.value.saved and stopped.value.checkpoint_step is None
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_a_step_boundary_that_resumes_bit_for_bit(
    tiny_png: Path, tmp_path: Path, sig: int
) -> None:
    """A signal lands mid-step; the checkpoint must equal an uninterrupted run at that step."""
    from flowgif.config import load_config
    from flowgif.fit import train_run
    from flowgif.store import load_checkpoint

    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "flowgif", "train", "--img", str(tiny_png), "--config", SMOKE]
    cmd += ["--steps", "100000", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)  # triggered by progress (the first checkpoint), not by a delay
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    cut = load_checkpoint(out / "checkpoint.pt", for_resume=True)
    assert f"checkpoint of step {cut['step']} saved" in err and "Traceback" not in err
    assert cut["step"] >= 20  # at or past the periodic checkpoint, at a step boundary

    seen: list[int] = []
    ref = tmp_path / "ref"
    cfg = load_config(SMOKE).updated({"train.steps": 100000, "train.minutes": 0.0})
    with pytest.raises(Interrupted):
        train_run(
            tiny_png,
            cfg,
            ref,
            progress=lambda p: seen.append(p.step),
            stop=lambda: bool(seen) and seen[-1] >= cut["step"],
            preview=False,
        )
    same = load_checkpoint(ref / "checkpoint.pt", for_resume=True)
    assert same["step"] == cut["step"]
    for key in ("field", "ema"):
        assert all(torch.equal(same[key][k], cut[key][k]) for k in same[key]), key
    assert torch.equal(same["generator"], cut["generator"])
    result = call("train", "--resume", out, "--steps", cut["step"] + 5)  # and it goes on
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "checkpoint.pt")["step"] == cut["step"] + 5


def test_damaged_checkpoint_fields_are_refused_in_one_line(run: Path) -> None:
    path = run / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    for damage, said in [
        ({"optimizer": None}, "optimiser"),
        ({"generator": torch.zeros(3)}, "generator"),
        ({"step": "many"}, "step"),
        ({"losses": torch.zeros(5)}, "loss log"),
    ]:
        torch.save({**good, **damage}, path)
        assert_one_line_error(call("train", "--resume", run, "--steps", 999), said)
        assert call("render", run, *RENDER).exit_code == 0  # still renders
    for damage, said in [
        ({"size": [0, 0]}, "size"),
        ({"ink": torch.zeros(4, 4)}, "blank"),
        ({"colors": torch.zeros(2)}, "colour"),
        ({"field": {"w": "x"}}, "weights"),
    ]:
        torch.save({**good, **damage}, path)
        assert_one_line_error(call("render", run, *RENDER), said)


def test_library_refuses_a_folder_as_a_file(tmp_path: Path) -> None:
    from flowgif.files import atomic_write_text

    (tmp_path / "x.json").mkdir()
    with pytest.raises(FlowgifError, match="folder"):
        atomic_write_text(tmp_path / "x.json", "{}")


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".mp4"])
def test_render_replaces_its_own_file_but_not_a_users(
    run: Path, tmp_path: Path, suffix: str
) -> None:
    mine = tmp_path / f"anim{suffix}"
    assert call("render", run, "--out", mine, *RENDER).exit_code == 0
    first = mine.read_bytes()
    again = call("render", run, "--out", mine, "--frames", 2, "--size", 40)
    assert again.exit_code == 0, again.output  # flowgif's own file: replaced
    assert mine.read_bytes() != first  # by the new render: 2 frames of 40 px
    if suffix == ".gif":
        with Image.open(mine) as img:
            assert (img.n_frames, max(img.size)) == (2, 40)
    theirs = tmp_path / f"source{suffix}"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(theirs) if suffix != ".mp4" else (
        theirs.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))
    )
    before = theirs.read_bytes()
    assert_one_line_error(call("render", run, "--out", theirs, *RENDER), "did not write")
    assert theirs.read_bytes() == before


def test_sample_and_plot_never_replace_a_users_file(run: Path, tmp_path: Path) -> None:
    picture = tmp_path / "drawing.png"
    Image.new("L", (8, 8), 0).save(picture)
    data = tmp_path / "data.npy"
    np_bytes = b"\x93NUMPY not really"
    data.write_bytes(np_bytes)
    before = picture.read_bytes()
    assert_one_line_error(call("plot", run, "--kind", "loss", "--out", picture), "did not write")
    assert_one_line_error(call("sample", run, "--n", 10, "--out", data), "did not write")
    assert picture.read_bytes() == before and data.read_bytes() == np_bytes
    for n in (10, 12):  # its own samples in the run folder: recorded there, so replaced
        assert call("sample", run, "--n", n).exit_code == 0
        assert np.load(run / "samples.npy").shape == (n, 2)  # the new samples
    mine = tmp_path / "s.npy"  # outside a run folder a .npy proves nothing: --force replaces it
    assert call("sample", run, "--n", 10, "--out", mine).exit_code == 0
    assert_one_line_error(call("sample", run, "--n", 10, "--out", mine), "did not write")
    assert call("sample", run, "--n", 10, "--out", mine, "--force").exit_code == 0
    user = tmp_path / "coords.npy"  # a user's own (N, 2) float32 array: never taken for ours
    np.save(user, np.zeros((500, 2), np.float32))
    kept = user.read_bytes()
    assert_one_line_error(call("sample", run, "--n", 10, "--out", user), "did not write")
    assert user.read_bytes() == kept
