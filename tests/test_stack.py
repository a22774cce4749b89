"""Stacked training (flowgif.fit.stack): each picture of a stack is trained as its solo run is.

The oracle is the solo trainer, :func:`flowgif.fit.train`, with the same seed: each picture
draws its batches from its own generator in a solo run's order, so its numbers can be compared
one to one. On the CPU they come out bit for bit; the tests allow rounding where the issue does
(batched matrix products may round differently on other machines).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from flowgif.batch import run_batch
from flowgif.config import Config, load_config
from flowgif.errors import FlowgifError, Interrupted
from flowgif.fit import TrainResult, open_run, train, train_run
from flowgif.fit.stack import auto_stack, stack_problem, train_stack
from flowgif.sources import Source
from flowgif.store import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
CPU = torch.device("cpu")


def config(steps: int = 40) -> Config:
    return load_config(SMOKE).updated({"train.steps": steps, "train.checkpoint_every": 15})


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three pictures of different sizes and aspect ratios."""
    where = tmp_path_factory.mktemp("stack")
    shapes = [
        ((40, 24), lambda d: d.rectangle([4, 2, 11, 21], fill=0)),
        ((24, 48), lambda d: d.ellipse([2, 10, 21, 40], fill=0)),
        ((32, 32), lambda d: d.polygon([(2, 30), (16, 2), (30, 30)], fill=0)),
    ]
    paths = []
    for i, (size, draw) in enumerate(shapes):
        img = Image.new("L", size, 255)
        draw(ImageDraw.Draw(img))
        paths.append(where / f"p{i}.png")
        img.save(paths[-1])
    return paths


def solo(picture: Path | Source, cfg: Config, out: Path) -> dict:
    """The solo run's checkpoint (the oracle)."""
    run = open_run(picture, cfg, out)
    train(run.config, run.end, CPU, checkpoint=run.save, start=run.start)
    return load_checkpoint(out / "checkpoint.pt", for_resume=True)


def same(a: dict, b: dict, exact: bool = True) -> None:
    """Two checkpoints hold the same weights, EMA, Adam state, generator and log."""
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-4, "atol": 1e-5}
    for key in ("field", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], **tol)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sa[i][key], sb[i][key], **tol)
    ga, gb = a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]
    assert len(ga) == len(gb)
    for x, y in zip(ga, gb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float) and not exact:
                assert x[key] == pytest.approx(y[key], rel=1e-6), key
            else:
                assert x[key] == y[key], key
    assert torch.equal(a["generator"], b["generator"])
    assert (a["step"], a["lr_scale"]) == (b["step"], b["lr_scale"])
    # the log: steps, losses and learning rates (not the wall-clock column)
    torch.testing.assert_close(a["losses"][:, [0, 2, 3]], b["losses"][:, [0, 2, 3]], **tol)


@pytest.mark.parametrize("target", ["conditional", "exact", "plan"])
def test_a_stack_of_one_is_the_solo_trainer_bit_for_bit(
    pictures: list[Path], tmp_path: Path, target: str
) -> None:
    cfg = config().updated({"fm.target": target, "fm.ot": target == "plan"})
    want = solo(pictures[0], cfg, tmp_path / "solo")
    (outcome,) = train_stack([open_run(pictures[0], cfg, tmp_path / "stack")], CPU)
    assert isinstance(outcome, TrainResult) and outcome.steps == 40
    same(load_checkpoint(tmp_path / "stack" / "checkpoint.pt", for_resume=True), want)


@pytest.mark.parametrize("target", ["conditional", "auto"])
def test_each_picture_of_a_stack_of_three_gets_its_solo_run(
    pictures: list[Path], tmp_path: Path, target: str
) -> None:
    """Pictures of three sizes and aspect ratios; each one's weights, EMA, Adam moments and
    losses equal its solo run's (here bit for bit; within rounding is what is promised) — with
    the pairs' target, and with the exact field that ``auto`` takes for a solo run."""
    cfg = config().updated({"fm.target": target})
    wants = [solo(p, cfg, tmp_path / f"solo{i}") for i, p in enumerate(pictures)]
    runs = [open_run(p, cfg, tmp_path / f"stack{i}") for i, p in enumerate(pictures)]
    outcomes = train_stack(runs, CPU)
    assert all(isinstance(o, TrainResult) for o in outcomes)
    for i, want in enumerate(wants):
        got = load_checkpoint(tmp_path / f"stack{i}" / "checkpoint.pt", for_resume=True)
        same(got, want, exact=False)
        assert got["image_hash"] == want["image_hash"] and got["size"] == want["size"]
    # and the run folders are ordinary: config.toml, loss.csv with one row per step
    rows = (tmp_path / "stack1" / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 41))


def spoiled(picture: Path, cfg: Config, calls: set[int], after: int | None = None) -> Source:
    """The picture, whose points turn to NaN on the draws named (the n-th call to ``draws``,
    counted from 1; ``after``: every draw from that one on)."""
    from flowgif.sources import load_source

    source = load_source(picture, cfg.density)
    density, draws, count = source.density, source.density.draws, []

    def spoilt(n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        count.append(1)
        (cells,) = draws(n, generator)
        if len(count) in calls or len(count) >= (after or 1e9):
            cells = cells.clone()
            cells[:, 1:] = float("nan")  # NaN places in the cells: NaN points
        return [cells]

    density.draws = spoilt  # type: ignore[method-assign]
    density.to = lambda device: density  # type: ignore[method-assign]
    return source


def test_a_nan_rolls_back_its_picture_alone(pictures: list[Path], tmp_path: Path) -> None:
    cfg = config()
    wants = [solo(p, cfg, tmp_path / f"solo{i}") for i, p in enumerate(pictures)]
    bad_alone = solo(spoiled(pictures[1], cfg, {30}), cfg, tmp_path / "bad-solo")
    ends = [pictures[0], spoiled(pictures[1], cfg, {30}), pictures[2]]
    runs = [open_run(p, cfg, tmp_path / f"stack{i}") for i, p in enumerate(ends)]
    outcomes = train_stack(runs, CPU)
    assert all(isinstance(o, TrainResult) and o.steps == 40 for o in outcomes)
    got = [load_checkpoint(tmp_path / f"stack{i}" / "checkpoint.pt") for i in range(3)]
    assert got[1]["lr_scale"] == 0.5  # rolled back once, at half the learning rate
    same(got[1], bad_alone, exact=False)  # as its solo run rolled back
    for i in (0, 2):  # its stack-mates never noticed
        assert got[i]["lr_scale"] == 1.0
        same(got[i], wants[i], exact=False)


def test_a_picture_that_keeps_diverging_fails_alone(pictures: list[Path], tmp_path: Path) -> None:
    cfg = config()
    want = solo(pictures[0], cfg, tmp_path / "solo")
    ends = [pictures[0], spoiled(pictures[1], cfg, set(), after=20)]
    runs = [open_run(p, cfg, tmp_path / f"stack{i}") for i, p in enumerate(ends)]
    good, bad = train_stack(runs, CPU)
    assert isinstance(good, TrainResult) and good.steps == 40
    same(load_checkpoint(tmp_path / "stack0" / "checkpoint.pt"), want, exact=False)
    assert isinstance(bad, FlowgifError) and "diverged at step 19" in str(bad)
    assert "the checkpoint of step 15 is kept" in str(bad)
    assert load_checkpoint(tmp_path / "stack1" / "checkpoint.pt")["step"] == 15


def test_a_stack_cut_in_the_middle_resumes_bit_for_bit_in_any_grouping(
    pictures: list[Path], tmp_path: Path
) -> None:
    """Cut after 22 steps (a stop request between steps), then go on: picture 0 alone with the
    solo trainer (``train --resume`` reads a stacked run unchanged), pictures 1 and 2 as a new
    stack. Each ends where an uncut solo run ends."""
    cfg = config()
    wants = [solo(p, cfg, tmp_path / f"solo{i}") for i, p in enumerate(pictures)]
    runs = [open_run(p, cfg, tmp_path / f"stack{i}") for i, p in enumerate(pictures)]
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 22

    outcomes = train_stack(runs, CPU, stop=stop)
    assert all(isinstance(o, Interrupted) and o.step == 22 and o.saved for o in outcomes)
    for i in range(3):
        assert load_checkpoint(tmp_path / f"stack{i}" / "checkpoint.pt")["step"] == 22
    train_run(pictures[0], cfg, tmp_path / "stack0", resume=True, preview=False)
    again = [open_run(pictures[i], cfg, tmp_path / f"stack{i}", resume=True) for i in (1, 2)]
    assert all(isinstance(o, TrainResult) for o in train_stack(again, CPU))
    for i, want in enumerate(wants):
        same(load_checkpoint(tmp_path / f"stack{i}" / "checkpoint.pt"), want, exact=False)


def test_a_checkpoint_that_does_not_fit_fails_its_picture_alone(
    pictures: list[Path], tmp_path: Path
) -> None:
    cfg = config(20)
    train_run(pictures[1], cfg, tmp_path / "b", preview=False)
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    ckpt["optimizer"]["state"].pop(3)
    torch.save(ckpt, tmp_path / "b" / "checkpoint.pt")
    runs = [
        open_run(pictures[0], cfg, tmp_path / "a"),
        open_run(pictures[1], cfg.updated({"train.steps": 30}), tmp_path / "b", resume=True),
    ]
    with pytest.raises(FlowgifError, match="share one training config"):
        train_stack(runs, CPU)
    runs[1] = open_run(pictures[1], cfg, tmp_path / "b", resume=True)
    good, bad = train_stack(runs, CPU)
    assert isinstance(good, TrainResult) and good.steps == 20
    assert isinstance(bad, FlowgifError) and "cannot be resumed" in str(bad)


def test_what_does_not_stack_says_why() -> None:
    assert stack_problem(Config()) == ""
    assert "flow matching" in stack_problem(Config().updated({"train.method": "ffjord"}))
    assert "mlp" in stack_problem(Config().updated({"field.arch": "concatsquash"}))
    assert "augment" in stack_problem(Config().updated({"field.augment": 1}))
    assert auto_stack(Config(), 64, CPU) == 1  # measured: no gain on a CPU (bench/STACK.md)


def blank(path: Path) -> Path:
    Image.new("L", (30, 20), 255).save(path)
    return path


def box(path: Path, where: tuple[int, int, int, int]) -> Path:
    img = Image.new("L", (32, 32), 255)
    ImageDraw.Draw(img).rectangle(where, fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_a_stacked_batch_fails_a_bad_picture_alone_and_skips_on_rerun(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "a.png", (4, 4, 12, 28))
    box(pics / "b.png", (8, 8, 28, 16))
    blank(pics / "c.png")  # a picture that decodes but has no ink: fails when opened
    out = tmp_path / "out"
    render = {"frames": 4, "particles": 500}
    items = run_batch(pics, out, config(20), render, stack=3)
    status = {i.image: (i.status, i.reason) for i in items}
    assert status["a.png"][0] == status["b.png"][0] == "done"
    assert status["c.png"][0] == "failed" and "no ink" in status["c.png"][1]
    for name in ("a", "b"):
        assert load_checkpoint(out / name / "checkpoint.pt")["step"] == 20
        assert (out / name / "flow.gif").is_file() and (out / name / "done.json").is_file()
    assert not (out / "c").exists()
    again = {i.image: i.status for i in run_batch(pics, out, config(20), render, stack=3)}
    assert again == {"a.png": "skipped", "b.png": "skipped", "c.png": "failed"}
    with pytest.raises(FlowgifError, match=r"batch\.stack 2: only flow matching"):
        run_batch(pics, out, config(20).updated({"train.method": "ffjord"}), render, stack=2)


def test_a_stacked_batch_cut_by_sigterm_resumes_each_picture(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    box(pics / "a.png", (4, 4, 12, 28))
    box(pics / "b.png", (8, 8, 28, 16))
    out = tmp_path / "out"
    args = ["batch", str(pics), "--out", str(out), "--config", str(SMOKE), "--stack", "2"]
    args += ["--render-args", "--frames 4 --particles 500"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args += ["--steps", "300"]  # 15 checkpoints: the signal comes at the first (step 20)
    cmd = [sys.executable, "-m", "flowgif", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 90
    while not (out / "b" / "loss.csv").exists() and time.time() < deadline:
        time.sleep(0.05)  # both pictures checkpointed (every 20 steps with smoke.toml)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = json.loads((out / "batch.json").read_text())
    assert {i["image"]: i["status"] for i in report["items"]} == {
        "a.png": "interrupted",
        "b.png": "interrupted",
    }
    cut = [load_checkpoint(out / n / "checkpoint.pt")["step"] for n in ("a", "b")]
    assert cut[0] == cut[1] and 0 < cut[0] < 300  # saved together at the stop
    done = subprocess.run(
        [sys.executable, "-m", "flowgif", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "batch.json").read_text())
    assert {(i["status"], i["reason"]) for i in report["items"]} == {("done", "resumed")}
    for name in ("a", "b"):
        rows = (out / name / "loss.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == list(range(1, 301))


def test_stack_option_is_checked_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowgif.cli import app

    box(tmp_path / "p" / "a.png", (4, 4, 12, 28))
    for value, said in (("0", "--stack must be"), ("x", "--stack must be")):
        result = CliRunner().invoke(app, ["batch", str(tmp_path / "p"), "--stack", value])
        assert result.exit_code == 1 and said in result.output
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "ml.toml").write_text('[train]\nmethod = "ffjord"\n')
    args = ["batch", str(tmp_path / "p"), "--stack", "2", "--config", str(tmp_path / "ml.toml")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "--stack 2: only flow matching (--objective fm) trains stacked" in result.output
    assert not (tmp_path / "o").exists()


def test_pictures_placed_together_are_each_pictures_own_samples(pictures: list[Path]) -> None:
    """Sharp and blurred pictures of three sizes, one of them idle: each row is exactly what
    that picture's ``sample`` gives from the same generator state."""
    from flowgif.sources import load_source
    from flowgif.sources.stacked import StackedPictures

    cfg = config()
    dens = [load_source(p, cfg.density).density for p in pictures]
    dens[1] = dens[1].blurred(2.0)
    dens.append(dens[0].blurred(0.5))
    gens = [torch.Generator().manual_seed(s) for s in range(len(dens))]
    states = [g.get_state() for g in gens]
    draws = [
        d.draws(300, g) if m != 2 else None
        for m, (d, g) in enumerate(zip(dens, gens, strict=True))
    ]
    together = StackedPictures(dens).place(draws, 300)
    assert together.shape == (4, 300, 2)
    for m, (d, g, state) in enumerate(zip(dens, gens, states, strict=True)):
        if m == 2:
            assert torch.equal(g.get_state(), state)  # the idle picture drew nothing
            continue
        g.set_state(state)
        assert torch.equal(together[m], d.sample(300, g))


def test_each_batch_worker_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with several GPUs every worker process takes one device from the queue
    the batch fills (one per visible GPU), so that no two share one."""
    import queue as queues

    from flowgif.batch import local as batch

    taken: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", taken.append)
    devices: queues.Queue[int] = queues.Queue()
    for device in (0, 1):
        devices.put(device)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        batch._worker_init(devices)
        batch._worker_init(devices)
        batch._worker_init(devices)  # a queue run dry (a CPU batch's is empty): no device
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert taken == [0, 1]


def test_a_stack_out_of_device_memory_says_to_stack_fewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowgif.fit.stack

    def full(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(flowgif.fit.stack, "train_stack", full)
    pics = tmp_path / "pics"
    box(pics / "a.png", (4, 4, 12, 28))
    box(pics / "b.png", (8, 8, 28, 16))
    items = run_batch(pics, tmp_path / "out", config(20), {"frames": 4}, stack=2)
    assert {(i.status, i.reason) for i in items} == {
        ("failed", "the device ran out of memory with 2 pictures stacked; give a smaller --stack")
    }
    assert not (tmp_path / "out" / "a").exists()  # nothing half-made is left
