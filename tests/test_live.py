"""Training watched live: ``flowgif train --live`` (its weights file, pause and continue), and
``flowgif view``'s Train (a real command per training, watched in a real browser; stop, pause,
a closed tab, a queue, a killed and a failed training)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from flowgif.store import CHECKPOINT, LIVE, load_run
from tests.test_view import bar_png

pytest.importorskip("starlette", reason="the view extra: pip install -e '.[test]'")

from flowgif.view import app as view_app
from flowgif.view import training as view_training
from tests.test_view import serve


def flowgif(*args: object, env: dict | None = None) -> subprocess.Popen:
    """``flowgif ARGS`` as its own process (as the page runs it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowgif", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait(condition, limit: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what or "not in time"
        time.sleep(0.05)


def weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    return {**{f"f.{k}": v for k, v in ckpt["field"].items()}, **ckpt["ema"]}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_live_writes_the_network_as_it_learns_and_pauses_without_changing_it(
    tmp_path: Path,
) -> None:
    """``--live`` keeps ``live.pt`` (a sampling checkpoint of the weights now) while it trains
    and removes it at the end; SIGUSR1 pauses at a step (nothing written, the clock stopped),
    SIGUSR2 continues; stopped and resumed, the run equals one trained straight through."""
    pic = bar_png(tmp_path / "l.png", 48)
    common = ["--img", pic, "--steps", 400, "--threads", 1, "--resolution", 48]
    run = tmp_path / "live"
    proc = flowgif("train", *common, "--out", run, "--live")
    try:
        wait(lambda: (run / LIVE).is_file(), 60, "no live.pt")
        first = load_run(run, file=LIVE)
        assert first.meta["step"] >= 0 and first.meta["pid"] == proc.pid  # from before step 1
        began = time.monotonic()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.6)  # the step under way ends, and its write
        stamp = (run / LIVE).stat().st_mtime_ns
        time.sleep(1.5)
        assert (run / LIVE).stat().st_mtime_ns == stamp  # paused: nothing trained, written
        proc.send_signal(signal.SIGUSR2)
        wait(lambda: (run / LIVE).stat().st_mtime_ns != stamp, 20, "it did not continue")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(60)
        wall = time.monotonic() - began
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint of step" in err and not (run / LIVE).exists()
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert ckpt["seconds"] - first.meta["seconds"] < wall - 1.5  # the pause is not counted
    resumed = flowgif("train", "--resume", run, "--steps", 400, "--threads", 1)
    straight = flowgif("train", *common, "--out", tmp_path / "straight")
    for p in (resumed, straight):
        p.communicate(120)
        assert p.returncode == 0
    assert not (run / LIVE).exists()
    assert same_weights(run, tmp_path / "straight")


@contextlib.contextmanager
def view_server(folder: Path, workers: int = 1) -> Iterator[tuple[str, object]]:
    app = view_app.make_app(folder, ["127.0.0.1", "localhost"], workers)
    try:
        with serve(app) as url:
            yield url, app
    finally:
        app.state.view.trainings.close()


def body_header(body: bytes) -> dict:
    (n,) = struct.unpack("<I", body[:4])
    return json.loads(body[4 : 4 + n])


def test_a_drawing_trains_in_the_page_beside_its_exact_flow_and_resumes_as_the_cli(
    tmp_path: Path,
) -> None:
    """Train on a drawn picture: the learned panel shows the network within seconds and is
    replaced as it learns; pause holds its step, continue goes on, stop keeps a checkpoint;
    the folder resumes with ``flowgif train --resume`` to the weights of the same command run
    straight through in a shell; every request went to the page's own server."""
    from tests.test_gallery import browser
    from tests.test_view import draw_an_l

    folder = tmp_path / "runs"
    with view_server(folder) as (url, app):
        d = browser(tmp_path, 1200, 1000)
        try:
            d.get(url + "/")
            draw_an_l(d)
            d.find_element("id", "pad-flow").click()
            wait(lambda: d.execute_script("return window.flowgifView.ready"))
            d.find_element("css selector", "#drawing summary").click()  # the pad closes
            d.execute_script("document.getElementById('budget').value = 3000")
            d.find_element("id", "train").click()
            live = "return window.flowgifView.training"
            wait(lambda: d.execute_script(live + ".updates") >= 2, 60, "no learned flow")
            assert d.execute_script("return window.flowgifView.flows.run.particles") == 20_000
            step = lambda: d.execute_script(live + ".figures.step")  # noqa: E731
            s0 = step()
            wait(lambda: step() > s0 + 50, 30, "the network did not learn on")
            assert not d.find_element("id", "run-figure").get_attribute("hidden")
            figures = d.find_element("id", "train-figures").text
            assert "steps/s" in figures and "field error" in figures, figures
            command = d.find_element("id", "train-command").text
            assert command.startswith("flowgif train --img ") and "--live" in command
            d.find_element("id", "train-pause").click()
            wait(lambda: d.execute_script(live + ".state") == "paused", 10)
            time.sleep(1.0)
            held = step()
            time.sleep(1.5)
            assert step() == held
            d.find_element("id", "train-pause").click()  # continue
            wait(lambda: step() > held, 20, "it did not continue")
            d.find_element("id", "train-stop").click()
            wait(lambda: d.execute_script(live + ".state") == "stopped", 30, "not stopped")
            assert "checkpoint of step" in d.execute_script(live + ".status.line")
            wait(lambda: d.execute_script("return window.flowgifView.trained"), 30)
            sent = [
                json.loads(e["message"])["message"]["params"]["request"]["url"]
                for e in d.get_log("performance")
                if '"Network.requestWillBeSent"' in e["message"]
            ]
            hosts = {u.split("/")[2] for u in sent if u.startswith(("http:", "https:", "ws"))}
            assert hosts == {url.split("/")[2]}, sent
            severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
            assert not severe, severe
        finally:
            d.quit()
        t = next(iter(app.state.view.trainings.all.values()))
    run = t.folder
    assert (run / CHECKPOINT).is_file() and not (run / LIVE).exists()
    args = t.args[1:]
    assert args[args.index("--out") + 1] == str(run)
    resumed = flowgif("train", "--resume", run, "--steps", 3000, "--threads", 1)
    straight_args = [a for a in args if a != "--live"]
    straight_args[straight_args.index("--out") + 1] = str(tmp_path / "straight")
    straight = flowgif("train", *straight_args)
    for p in (resumed, straight):
        _, err = p.communicate(300)
        assert p.returncode == 0, err
    assert same_weights(run, tmp_path / "straight")


def test_trainings_queue_stop_unwatched_and_say_when_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker: a second training waits in the queue, more than the queue get 503; a
    training no page watches stops with its checkpoint unless asked to keep training; one
    killed with SIGKILL is said so, and its folder resumes from its checkpoint."""
    import httpx

    monkeypatch.setattr(view_training, "GRACE", 1.0)
    monkeypatch.setattr(view_training, "QUEUE", 1)
    folder = tmp_path / "runs"
    with view_server(folder) as (url, app):
        trainings = app.state.view.trainings
        trainings.queue = 1
        c = httpx.Client(base_url=url, headers={"Origin": url}, timeout=60)
        pid = body_header(c.post("/api/flow?text=hi&n=1000").content)["id"]
        first = c.post(f"/api/train?id={pid}&steps=100000&keep=1").json()
        second = c.post(f"/api/train?id={pid}&steps=100000").json()
        assert first["state"] == "starting" and second["state"] == "queued"
        third = c.post(f"/api/train?id={pid}&steps=100000")
        assert third.status_code == 503 and "busy" in third.json()["error"]
        t1 = trainings.get(first["name"])
        wait(lambda: (t1.folder / CHECKPOINT).is_file(), 120, "no checkpoint")
        # unwatched for over GRACE, the first keeps training (keep=1); the queued second,
        # unwatched, is dropped
        time.sleep(1.5)
        assert t1.state == "training"
        assert trainings.get(second["name"]).state == "cancelled"
        os.kill(t1.proc.pid, signal.SIGKILL)
        wait(lambda: t1.state == "killed", 20)
        assert "SIGKILL" in t1.line and "resumes from its last checkpoint" in t1.line
        assert not (t1.folder / LIVE).exists()
        got = body_header(c.get(f"/api/train/{first['name']}/next?state=training").content)
        assert got["status"]["state"] == "killed"
        # a training whose page watches it, then goes: stopped with its checkpoint
        fourth = c.post(f"/api/train?run={first['name']}&steps=100000").json()
        t4 = trainings.get(fourth["name"])
        assert "--resume" in t4.args
        after = ""
        for _ in range(40):
            q = f"after={after}&state={got['status']['state']}" if after else ""
            got = body_header(c.get(f"/api/train/{fourth['name']}/next?{q}").content)
            after = got["stamp"]
            if got["status"]["state"] == "training" and got["figures"]:
                break
        assert got["status"]["state"] == "training", (t4.state, list(t4.lines))
        wait(lambda: t4.state in ("stopped", "stopping"), 20, "an unwatched run went on")
        wait(lambda: t4.state == "stopped", 60)
        assert "checkpoint of step" in t4.line
    ckpt = torch.load(t4.folder / CHECKPOINT, weights_only=True)
    assert ckpt["step"] > 1000


HOOKS = {
    # the gradient turns NaN at every step: training rolls back, then gives up
    "diverged": "import torch\n"
    "torch.nn.utils.clip_grad_norm_ = lambda *a, **k: torch.tensor(float('nan'))\n",
    # the disk fills: every checkpoint's write fails
    "no space left": "import errno, torch\n"
    "def full(*a, **k):\n"
    "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "torch.save = full\n",
}


@pytest.mark.parametrize("case", sorted(HOOKS))
def test_a_failed_training_says_the_clis_line_and_leaves_what_the_cli_leaves(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training that diverges to NaN, or whose disk is full, fails in the page with the
    command's own one line, and its folder is what the same command leaves in a shell."""
    import httpx

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOKS[case])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *sys.path])}
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    folder = tmp_path / "runs"
    with view_server(folder) as (url, app):
        c = httpx.Client(base_url=url, headers={"Origin": url}, timeout=60)
        pid = body_header(c.post("/api/flow?text=hi&n=1000").content)["id"]
        name = c.post(f"/api/train?id={pid}&steps=300").json()["name"]
        t = app.state.view.trainings.get(name)
        got = {"state": ""}
        while got["state"] not in ("done", "failed", "killed"):
            got = body_header(c.get(f"/api/train/{name}/next?state={got['state']}").content)[
                "status"
            ]
    assert got["state"] == "failed" and case in got["line"], got
    shell = tmp_path / "shell"
    args = list(t.args)
    args[args.index("--out") + 1] = str(shell)
    proc = flowgif(*args, env=env)  # the command the page shows, run in a shell
    _, err = proc.communicate(120)
    assert proc.returncode == 1
    line = err.strip().splitlines()[-1].removeprefix("error: ")
    assert got["line"] == line.replace(str(shell), str(t.folder))
    listing = lambda p: sorted(os.listdir(p)) if p.exists() else None  # noqa: E731
    assert listing(t.folder) == listing(shell)


def test_a_morph_set_on_the_pages_inputs_starts_on_the_first_picture_and_ends_on_the_second(
    tmp_path: Path,
) -> None:
    """A picture, then 'Morph into a picture': the optimal-transport morph plays; at t = 0 the
    canvas's dark pixels lie on the first picture's ink, at t = 1 on the second's (at least
    90 % each); a third picture chains a second leg, played as one animation."""
    from PIL import Image

    from tests.test_gallery import browser
    from tests.test_view import at_the_end, settle, share_on_ink

    first = bar_png(tmp_path / "l.png", 96)
    ring = np.full((96, 96), 255, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    ring[(r > 22) & (r < 36)] = 0
    second = tmp_path / "ring.png"
    Image.fromarray(ring).save(second)
    with view_server(tmp_path / "runs") as (url, _):
        d = browser(tmp_path, 1200, 1000)
        try:
            d.get(url + "/")
            d.find_element("id", "file").send_keys(str(first))
            wait(lambda: d.execute_script("return window.flowgifView.ready"))
            d.find_element("id", "morph-file").send_keys(str(second))
            wait(lambda: d.execute_script("return window.flowgifView.chain?.length === 2"))
            wait(lambda: d.execute_script("return window.flowgifView.ready"))
            caption = d.find_element("id", "exact-caption").text
            assert "l.png → ring.png" in caption, caption
            png = tmp_path / "end.png"
            shown = at_the_end(d, png)
            at_end = share_on_ink(png, shown, ring < 128)
            settle(d, 0)
            start = tmp_path / "start.png"
            start.write_bytes(d.find_element("id", "exact").screenshot_as_png)
            shown0 = d.execute_script(
                "return {view: window.flowgifView.view, half: window.flowgifView.half}"
            )
            ink0 = np.asarray(Image.open(first).convert("L")) < 128
            at_start = share_on_ink(start, shown0, ink0)
            d.find_element("id", "morph-file").send_keys(str(first))  # back into the L
            wait(lambda: d.execute_script("return window.flowgifView.chain?.length === 3"))
            wait(lambda: d.execute_script("return window.flowgifView.ready"))
            shown = at_the_end(d, png)
            back = share_on_ink(png, shown, ink0)
            severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
            assert not severe, severe
        finally:
            d.quit()
    assert at_end >= 0.9 and at_start >= 0.9 and back >= 0.9, (at_start, at_end, back)


def test_a_run_a_shell_trains_shows_as_training_and_its_flow_refreshes(tmp_path: Path) -> None:
    """A ``flowgif train --live`` started in a shell into FOLDER is listed as training and
    watched like the page's own (its state from the folder's hold, its flow from live.pt);
    when it ends it is listed as done."""
    import httpx

    folder = tmp_path / "runs"
    folder.mkdir()
    pic = bar_png(tmp_path / "l.png", 48)
    proc = flowgif(
        "train", "--img", pic, "--steps", 100000, "--threads", 1, "--resolution", 48,
        "--out", folder / "shell", "--live",
    )  # fmt: skip
    try:
        with view_server(folder) as (url, _):
            c = httpx.Client(base_url=url, headers={"Origin": url}, timeout=60)
            wait(lambda: (folder / "shell" / LIVE).is_file(), 60, "no live.pt")
            assert c.get("/api/runs").json()["runs"] == [{"name": "shell", "training": True}]
            steps, after = [], ""
            while len(steps) < 3:
                got = body_header(c.get(f"/api/train/shell/next?after={after}").content)
                assert got["status"]["state"] == "training" and "command" not in got["status"]
                if got["stamp"] != after and "paths" in got["blocks"]:
                    steps.append(got["figures"]["step"])
                after = got["stamp"]
            assert steps == sorted(steps) and steps[-1] > steps[0]
            assert c.post("/api/train/shell/stop").status_code == 404  # not this server's
            proc.send_signal(signal.SIGTERM)
            proc.communicate(60)
            listed = c.get("/api/runs").json()["runs"]
            assert listed == [{"name": "shell", "training": False}]
    finally:
        proc.kill()


def test_two_tabs_train_at_once_the_second_waits_its_turn(tmp_path: Path) -> None:
    """One worker, two tabs of one browser: the second tab's training waits in the queue (the
    page says so) and starts when the first tab stops its own."""
    from tests.test_gallery import browser

    live = "return window.flowgifView.training"
    with view_server(tmp_path / "runs") as (url, app):
        d = browser(tmp_path, 1200, 1000)
        try:
            tabs = []
            for _ in range(2):
                if tabs:
                    d.switch_to.new_window("tab")
                d.get(url + "/")
                d.find_element("id", "text").send_keys("hi")
                d.find_element("css selector", "#word button").click()
                wait(lambda: d.execute_script("return window.flowgifView.ready"))
                d.execute_script("document.getElementById('budget').value = 100000")
                d.find_element("id", "train").click()
                tabs.append(d.current_window_handle)
            wait(lambda: d.execute_script(live + ".state") == "queued", 20)
            assert "queued" in d.find_element("id", "train-figures").text
            d.switch_to.window(tabs[0])
            wait(lambda: d.execute_script(live + ".updates") >= 1, 60, "the first did not train")
            d.find_element("id", "train-stop").click()
            wait(lambda: d.execute_script(live + ".state") == "stopped", 30)
            d.switch_to.window(tabs[1])
            wait(lambda: d.execute_script(live + ".updates") >= 1, 60, "the second did not start")
            assert d.execute_script(live + ".state") == "training"
            d.find_element("id", "train-stop").click()
            wait(lambda: d.execute_script(live + ".state") in ("stopped", "done"), 30)
        finally:
            d.quit()
        names = [t.name for t in app.state.view.trainings.all.values()]
    assert len(names) == 2 and names[0] != names[1]


@pytest.mark.parametrize(
    "line, code, said",
    [("", 0, ""), ('["--version"]', 0, "flowgif "), ("nonsense", 2, "error: the command is")],
)
def test_the_ready_process_runs_one_command_or_says_why_not(
    line: str, code: int, said: str
) -> None:
    """``python -m flowgif.cli.ready`` says ready, then runs the one command it reads (the
    end of input: nothing), or refuses what is not a list of arguments in one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "flowgif.cli.ready"],
        input=line + "\n" if line else "",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("ready\n")
    assert said in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_runs_computed_from_their_ends_are_marked_as_such(tmp_path: Path) -> None:
    """The list marks the exact flow's run ``computed`` (the page offers no 'continue
    training' under it); a trained run is not."""
    import httpx

    from tests.test_cli import call

    pic = bar_png(tmp_path / "l.png", 32)
    runs = tmp_path / "runs"
    args = ("--resolution", 32, "--threads", 1)
    assert (
        call("train", "--img", pic, "--method", "exact", *args, "--out", runs / "e").exit_code == 0
    )
    assert call("train", "--img", pic, "--steps", 5, *args, "--out", runs / "t").exit_code == 0
    with view_server(runs) as (url, _):
        listed = httpx.get(url + "/api/runs", timeout=30).json()["runs"]
    assert listed == [
        {"name": "e", "training": False, "computed": True},
        {"name": "t", "training": False},
    ]
