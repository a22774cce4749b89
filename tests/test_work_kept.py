"""Work is never lost: a resumed folder must be flowgif's and its files provably so, a frames
folder is replaced only frame for frame as written, signatures are read as one whole field, and
two processes never work in one run folder (every refusal leaves the user's bytes as they were)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from flowgif.owned import HTML_SIGNATURE, SIGNATURE, html_seal, made_by_flowgif, xmp
from flowgif.store import MARKER, hold, let_go
from tests.conftest import ROOT
from tests.test_cli import SMOKE, assert_one_line_error, call
from tests.test_ownership import sums

RENDER = ("--frames", 3, "--particles", 200, "--size", 48)


@contextlib.contextmanager
def held_elsewhere(run: Path) -> Iterator[None]:
    """Another process holds ``run`` (:func:`flowgif.store.hold`) until the block ends."""
    code = (
        "import sys; from flowgif.store import hold; hold(sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("")


def _trained(tiny_png: Path, where: Path, steps: int = 12) -> Path:
    run = where / "run"
    result = call("train", "--img", tiny_png, "--config", SMOKE, "--steps", steps, "--out", run)
    assert result.exit_code == 0, result.output
    return run


def test_resume_refuses_a_folder_without_flowgifs_marker(tiny_png: Path, tmp_path: Path) -> None:
    run = _trained(tiny_png, tmp_path)
    mine = tmp_path / "my copy"
    mine.mkdir()
    shutil.copy(run / "checkpoint.pt", mine / "checkpoint.pt")  # a person's folder
    (mine / "config.toml").write_text("# my notes on this run\n[train]\nsteps = 12\n")
    (mine / "loss.csv").write_text("my,own,table\n")
    Image.new("L", (8, 8), 0).save(mine / "samples.png")
    before = sums(mine)
    result = call("train", "--resume", mine, "--steps", 20)
    assert_one_line_error(result, "not a run folder flowgif made")
    assert sums(mine) == before


def test_resume_refuses_a_persons_file_in_a_marked_folder(tiny_png: Path, tmp_path: Path) -> None:
    run = _trained(tiny_png, tmp_path)
    for name, write in (
        ("samples.png", lambda p: Image.new("L", (8, 8), 0).save(p)),
        ("config.toml", lambda p: p.write_text(p.read_text() + "# tried lr 1e-3: worse\n")),
        ("loss.csv", lambda p: p.write_text("step,seconds,loss,lr\n0,0,0,0\n")),
    ):
        saved = (run / name).read_bytes()
        write(run / name)
        before = sums(run)
        assert_one_line_error(call("train", "--resume", run, "--steps", 20), "did not write")
        assert sums(run) == before, name
        (run / name).write_bytes(saved)
    result = call("train", "--resume", run, "--steps", 16)  # its own files: resumed
    assert result.exit_code == 0, result.output
    assert "16 steps" in result.output


def test_a_frames_folder_is_replaced_only_frame_for_frame(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert call("render", tiny_run, "--out", out, *RENDER).exit_code == 0
    for change in ("edit", "add", "folder"):
        shutil.rmtree(out)
        assert call("render", tiny_run, "--out", out, *RENDER).exit_code == 0
        if change == "edit":
            Image.new("P", (48, 48), 3).save(out / "frame_0001.png")  # a frame they edited
        elif change == "add":
            shutil.copy(out / "frame_0000.png", out / "frame_0100.png")  # one they added
        else:
            (out / "frame_0007.png").mkdir()  # a folder named like a frame, with contents
            (out / "frame_0007.png" / "notes.txt").write_text("mine")
        before = sums(out)
        assert_one_line_error(call("render", tiny_run, "--out", out, *RENDER), "did not write")
        assert sums(out) == before, change
    shutil.rmtree(out)
    assert call("render", tiny_run, "--out", out, *RENDER).exit_code == 0
    assert call("render", tiny_run, "--out", out, "--frames", 2, "--particles", 200).exit_code == 0
    assert sorted(p.name for p in out.glob("frame_*")) == ["frame_0000.png", "frame_0001.png"]


def test_signatures_count_only_as_the_whole_field_of_their_format(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text(f"<html><!-- {HTML_SIGNATURE} --><body>mine</body></html>\n")
    assert not made_by_flowgif(page)
    page.write_text(f"<!doctype html>\n<html><head>\n{HTML_SIGNATURE}\n</head></html>\n")
    assert not made_by_flowgif(page)
    page.write_text(f"{HTML_SIGNATURE}\n<title>x</title>\n")
    assert not made_by_flowgif(page)  # no seal: nothing proves it unchanged
    page.write_text(html_seal(f"{HTML_SIGNATURE}\n<title>x</title>"))
    assert made_by_flowgif(page)
    page.write_text(page.read_text().replace("x", "mine"))  # edited since
    assert not made_by_flowgif(page)

    png = tmp_path / "a.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", SIGNATURE)  # the signature, in a field flowgif does not use
    Image.new("L", (4, 4)).save(png, pnginfo=info)
    assert not made_by_flowgif(png)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SIGNATURE)
    Image.new("L", (4, 4)).save(png, pnginfo=info)
    assert made_by_flowgif(png)

    gif = tmp_path / "a.gif"
    Image.new("P", (4, 4)).save(gif, comment=xmp(SIGNATURE))  # wrapped: not flowgif's field
    assert not made_by_flowgif(gif)
    Image.new("P", (4, 4)).save(gif, comment=SIGNATURE)
    assert made_by_flowgif(gif)


def test_a_gallery_never_replaces_a_page_that_quotes_the_signature(tmp_path: Path) -> None:
    from flowgif.render.gallery import write_gallery

    (tmp_path / "batch.json").write_text(json.dumps({"generator": SIGNATURE, "items": []}))
    page = tmp_path / "index.html"
    page.write_text(f"<!-- {HTML_SIGNATURE} -->\n<p>my page</p>\n")
    before = page.read_bytes()
    assert_one_line_error(call("gallery", tmp_path), "did not write")
    assert page.read_bytes() == before
    page.unlink()
    write_gallery(tmp_path)
    write_gallery(tmp_path)  # its own page: replaced
    assert page.read_text().startswith(HTML_SIGNATURE)
    edited = page.read_text().replace("</body>", "<p>my note</p></body>")  # a person's note
    page.write_text(edited)
    assert_one_line_error(call("gallery", tmp_path), "did not write")
    assert page.read_text() == edited  # kept as the person left it


def test_a_run_folder_in_use_is_refused_by_another_process(tiny_png: Path, tmp_path: Path) -> None:
    run = _trained(tiny_png, tmp_path)  # trained in this process, which let go of it after
    with held_elsewhere(run):  # as a batch, or a run still training, holds it
        before = sums(run)
        assert_one_line_error(call("train", "--resume", run, "--steps", 20), "in use")
        assert sums(run) == before
    hold(run)  # the holder is gone: its lock went with it
    let_go(run)
    assert (run / MARKER).is_file()


def test_a_process_lets_go_of_each_folder_it_finished(tiny_png: Path, tmp_path: Path) -> None:
    """A long-lived process (a library caller, a page server) holds a run folder only while
    it works in it: after train_run, and after a stacked batch, another process may hold each."""
    from flowgif.config import load_config
    from flowgif.fit import train_run
    from tests.test_ownership import box

    cfg = load_config(SMOKE).updated({"train.steps": 5})
    train_run(tiny_png, cfg, tmp_path / "run", preview=False)
    with held_elsewhere(tmp_path / "run"):
        pass
    box(tmp_path / "pics" / "a.png")
    box(tmp_path / "pics" / "b.png", (1, 1, 20, 14))
    from flowgif.batch import run_batch

    items = run_batch(tmp_path / "pics", tmp_path / "out", cfg, BATCH_RENDER, stack=2)
    assert [i.status for i in items] == ["done", "done"]
    for item in items:
        with held_elsewhere(Path(item.run)):
            pass


def test_a_failed_start_leaves_no_folder(tiny_png: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for _ in range(2):
        result = call("train", "--img", tiny_png, "--config", SMOKE, "--device", "cuda")
        assert_one_line_error(result, "no CUDA device")
    other = tmp_path / "other.png"
    shutil.copy(tiny_png, other)
    result = call("morph", tiny_png, other, "--config", SMOKE, "--device", "cuda")
    assert_one_line_error(result, "no CUDA device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png"]  # no runs/, no legs


BATCH_CONFIG = {"train.steps": 8}
BATCH_RENDER = {"frames": 3, "size": 48}


def _batch(pics: Path, out: Path, recursive: bool = False) -> list:
    from flowgif.batch import run_batch
    from flowgif.config import load_config

    cfg = load_config(SMOKE).updated(BATCH_CONFIG)
    return run_batch(pics, out, cfg, BATCH_RENDER, recursive=recursive)


def _done_batch(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A batch of one picture, done: its folder, output and run folder (let go, as a
    finished batch lets go of it)."""
    from tests.test_ownership import box

    pics, out = tmp_path / "pics", tmp_path / "out"
    box(pics / "a.png")
    (item,) = _batch(pics, out)
    return pics, out, Path(item.run)


def test_a_batch_remakes_a_deleted_output_but_not_in_a_folder_in_use(tmp_path: Path) -> None:
    """A done picture whose outputs were deleted is rendered again from its checkpoint (not
    trained again); while another process holds its folder, the batch leaves it alone."""
    pics, out, run = _done_batch(tmp_path)
    gone = ("flow.gif", "picture.png", "eval.json")
    for name in gone:
        (run / name).unlink()
    with held_elsewhere(run):
        before = sums(run)
        (busy,) = _batch(pics, out)
        assert busy.status == "failed" and "in use by another flowgif" in busy.reason
        assert sums(run) == before
    (again,) = _batch(pics, out)
    assert (again.status, again.reason, again.run) == ("done", "rendered again", str(run))
    assert all((run / name).is_file() for name in gone)
    (last,) = _batch(pics, out)
    assert last.status == "skipped"


def test_a_batch_keeps_a_done_picture_when_a_clashing_name_arrives(tmp_path: Path) -> None:
    from tests.test_ownership import box

    pics, out = tmp_path / "pics", tmp_path / "out"
    box(pics / "sub" / "a.png")
    (first,) = _batch(pics, out, recursive=True)
    kept = sums(Path(first.run))
    box(pics / "sub" / "a.bmp", (1, 1, 20, 14))  # another picture, the same stem
    items = {i.image: i for i in _batch(pics, out, recursive=True)}
    assert items["sub/a.png"].status == "skipped" and items["sub/a.png"].run == first.run
    assert items["sub/a.bmp"].status == "done" and items["sub/a.bmp"].run != first.run
    assert sums(Path(first.run)) == kept


def test_a_run_folder_works_with_its_picture_moved_away(tiny_png: Path, tmp_path: Path) -> None:
    """The checkpoint holds both ends: render, sample and eval need no picture on disk."""
    picture = tmp_path / "gone.png"
    shutil.copy(tiny_png, picture)
    run = tmp_path / "run"
    result = call("train", "--img", picture, "--config", SMOKE, "--steps", 10, "--out", run)
    assert result.exit_code == 0, result.output
    picture.unlink()
    assert call("render", run, "--out", tmp_path / "a.gif", *RENDER).exit_code == 0
    assert call("sample", run, "--n", 200, "--out", tmp_path / "s.npy").exit_code == 0
    done = call("eval", run, "--n-nll", 200, "--samples", 500, "--transport", 50)
    assert done.exit_code == 0, done.output
    assert json.loads((run / "eval.json").read_text())["ink_source"] == "grid"


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("CUDA out of memory. Tried")])
def test_running_out_of_memory_is_one_line(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    from flowgif.flows import model

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(model, "sample", full)
    result = call("sample", tiny_run, "--n", 100, "--out", tmp_path / "s.npy")
    assert_one_line_error(result, "out of memory")
    assert not (tmp_path / "s.npy").exists()
