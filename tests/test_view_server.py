"""``flowgif view``'s server as an attacker and a careless user meet it: other sites, slow and
oversized bodies, a full queue, odd names and folders, two servers on one FOLDER, signals.
Each check fails on the break it names."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the view extra: pip install -e '.[test]'")

from starlette.testclient import TestClient

from flowgif.owned import SIGNATURE
from flowgif.view import app as view_app
from flowgif.view import saving
from flowgif.view.routes import pictures as view_pictures
from tests.test_view import bar_png, serve

CROSS = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of this machine is the same site
    {"Origin": "http://localhost:3000"},
    {"Origin": "null"},
]


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(view_app.make_app(tmp_path, ["testserver", "127.0.0.1"]))


def started(client: TestClient) -> int:
    return client.app.state.stats["started"]  # type: ignore[attr-defined]


def test_another_site_can_neither_compute_nor_look(client: TestClient, tiny_run: Path) -> None:
    """GETs from another site's page (an <img>, a no-cors fetch) to every /api/ route are 403
    before any work starts: no flow solved, no thumbnail's load event telling a run's name.
    The page's own requests, and a typed address or a command-line client, are answered."""
    import shutil

    shutil.copytree(tiny_run, Path(client.app.state.view.folder) / "mine")  # type: ignore[attr-defined]
    urls = ["/api/runs", "/api/runs/mine/flow?n=200", "/api/runs/mine/exact?n=200"]
    urls += ["/api/runs/mine/thumb", "/api/runs/mine/inside", "/api/progress/x"]
    for url in urls:
        for headers in CROSS:
            r = client.get(url, headers=headers)
            assert r.status_code == 403, (url, headers, r.status_code)
        assert client.post("/api/flow?text=hi", headers=CROSS[0]).status_code == 403
    assert started(client) == 0
    own = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert client.get("/api/runs/mine/thumb", headers=own).status_code == 200
    assert (
        client.get("/api/runs/mine/flow?n=200", headers={"Sec-Fetch-Site": "none"}).status_code
        == 200
    )
    assert client.get("/", headers=CROSS[0]).status_code == 200  # a link to the page itself


def test_head_computes_nothing(client: TestClient) -> None:
    for url in ("/api/runs", "/api/inside?id=x", "/api/runs/a/flow"):
        assert client.head(url).status_code == 405
    assert started(client) == 0
    assert client.head("/").status_code == 200


def test_every_address_of_the_machine_serves_localhost_too(tmp_path: Path) -> None:
    from flowgif.cli.view import served_names

    for bound in ("0.0.0.0", "::", "127.0.0.1"):
        app = TestClient(view_app.make_app(tmp_path, served_names(bound)))
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
            assert app.get("/", headers={"Host": host}).status_code == 200, (bound, host)
        assert app.get("/", headers={"Host": "evil.example:8000"}).status_code == 400


def test_bodies_are_bounded_with_or_without_a_length(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the cap: 413 when the length is said, and when it is not (chunked); a save's body
    is small too."""
    monkeypatch.setattr(view_app, "MAX_UPLOAD", 1000)
    small = TestClient(view_app.make_app(client.app.state.view.folder, ["testserver"]))  # type: ignore[attr-defined]
    assert small.post("/api/flow", content=b"x" * 5000).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 500

    r = small.post("/api/flow", content=chunks())
    assert r.status_code == 413 and "over" in r.json()["error"]
    assert small.post("/api/save?id=x", content=b"y" * 10_000).status_code == 413
    assert started(small) == 0


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """The app on a free loopback port (one worker, a queue of 4), its exact flows slowed
    to 2 s so that a queue forms."""
    slow = view_pictures.picture_scene

    def picture_scene(*args: object) -> object:
        time.sleep(2)
        return slow(*args)

    monkeypatch.setattr(view_pictures, "picture_scene", picture_scene)
    app = view_app.make_app(tmp_path, ["127.0.0.1"])
    with serve(app) as url:
        yield url, app


def raw(url: str, head: str, body: bytes = b"") -> socket.socket:
    """A connection that sent ``head`` (and ``body``) and waits."""
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head.encode() + body)
    return s


def status_of(s: socket.socket) -> int:
    line = s.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1])


def test_a_full_queue_refuses_before_reading_the_upload(served: tuple[str, object]) -> None:
    """One worker and a queue of 4: of 8 drops at once exactly 5 are answered and 3 get 503
    with Retry-After; an upload sent while it is full is refused before its body comes."""
    import httpx

    url, app = served

    def drop(k: int) -> int:
        with httpx.Client(timeout=120) as c:
            return c.post(f"{url}/api/flow?text=w{k}&n=300").status_code

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(drop, k) for k in range(8)]
        time.sleep(1.0)  # all 8 are in: one running, four waiting, three refused
        head = "POST /api/flow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
        s = raw(url, head)  # its body never comes: an answer now means it was not waited for
        assert status_of(s) == 503
        s.close()
        codes = sorted(a.result() for a in answers)
    assert codes == [200] * 5 + [503] * 3, codes
    assert app.state.stats["started"] == 5  # type: ignore[attr-defined]


def test_slow_uploads_hold_no_place(served: tuple[str, object], tmp_path: Path) -> None:
    """Five uploads trickling a byte at a time: a real drop is still answered, and a body that
    pauses longer than the guard allows gets 408."""
    import httpx

    url, _ = served
    head = "POST /api/flow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
    slow = [raw(url, head, b"x") for _ in range(5)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    try:
        body = bar_png(tmp_path / "l.png", 32).read_bytes()
        with httpx.Client(timeout=60) as c:
            assert c.post(f"{url}/api/flow?n=300", content=body).status_code == 200
    finally:
        stop.set()
    paused = raw(url, head, b"x")  # then nothing
    assert status_of(paused) == 408
    for s in [*slow, paused]:
        s.close()


def test_odd_names_and_files_are_one_line(client: TestClient, tiny_run: Path) -> None:
    """A plain sub-folder, a 5,000-character name, a word with a NUL byte or over 64
    characters, an eval.json holding NaN: one line each (404 or 400), never a 500; the runs
    are still listed; a finished job's progress says done."""
    import shutil

    folder = Path(client.app.state.view.folder)  # type: ignore[attr-defined]
    (folder / "plain").mkdir()
    shutil.copytree(tiny_run, folder / "nan")
    (folder / "nan" / "eval.json").write_text('{"kl": NaN, "tv": 0.5, "on_ink": Infinity}')
    for what in ("thumb", "flow", "exact", "inside"):
        r = client.get(f"/api/runs/plain/{what}")
        assert r.status_code == 404 and "\n" not in r.json()["error"], r.text
        assert client.get(f"/api/runs/{'n' * 5000}/{what}").status_code == 404
    from urllib.parse import quote

    for word in ("a\x00b", "a\nb", "w" * 65):
        r = client.post(f"/api/flow?text={quote(word)}")
        assert r.status_code == 400 and "\n" not in r.json()["error"], (word, r.text)
    for url in ("/api/nothing", "/api/runs/a%2Fb/flow", "/api/runs/nan/nonsense"):
        r = client.get(url)  # a path the table lacks: one line of JSON too
        assert r.status_code == 404 and "\n" not in r.json()["error"], (url, r.text)
    r = client.get("/api/flow")  # a method the route lacks
    assert r.status_code == 405 and r.json()["error"], r.text
    runs = client.get("/api/runs").json()["runs"]
    assert runs == [{"name": "nan", "training": False, "eval": {"tv": 0.5}}]
    assert client.post("/api/flow?text=hi&n=200&job=j1").status_code == 200
    assert client.get("/api/progress/j1").json() == {"state": "done", "done": 1.0}


def test_downloads_only_what_a_save_signed(client: TestClient, tmp_path: Path) -> None:
    folder = Path(client.app.state.view.folder)  # type: ignore[attr-defined]
    Image.new("P", (4, 4)).save(folder / "view-mine.gif")  # a person's own file, unsigned
    Image.new("P", (4, 4)).save(folder / "other.gif", comment=SIGNATURE)  # not view-*
    Image.new("P", (4, 4)).save(tmp_path.parent / "outside.gif", comment=SIGNATURE)
    (folder / "view-link.gif").symlink_to(tmp_path.parent / "outside.gif")
    for name in ("view-mine.gif", "other.gif", "view-link.gif", "view-none.gif"):
        assert client.get(f"/api/files/{name}").status_code == 404, name
    Image.new("P", (4, 4)).save(folder / "view-ours.gif", comment=SIGNATURE)
    assert client.get("/api/files/view-ours.gif").status_code == 200


def test_names_are_claimed_across_processes(tmp_path: Path) -> None:
    """Another process holding view-X-1's claim (a second server saving the same word): this
    one takes view-X-2; a claim whose process is gone is taken over; a dangling symbolic link
    named like the next file is passed over, not fought forever."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from flowgif.view.saving import "
            "claim_name; claim_name(Path(sys.argv[1]), 'view-X', 'gif'); print('held', "
            "flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        out, claim = saving.claim_name(tmp_path, "view-X", "gif")
        assert out.name == "view-X-2.gif"
        claim.unlink()
    finally:
        holder.kill()
        holder.wait()
    out, claim = saving.claim_name(tmp_path, "view-X", "gif")  # its holder is gone
    assert out.name == "view-X-1.gif"
    (tmp_path / "view-Y-1.gif").symlink_to(tmp_path / "nowhere")
    out2, claim2 = saving.claim_name(tmp_path, "view-Y", "gif")
    assert out2.name == "view-Y-2.gif"
    for c in (claim, claim2):
        c.unlink()


def test_a_save_proves_the_run_folder_it_uses(tmp_path: Path, tiny_run: Path) -> None:
    """A run copied into FOLDER/view-ID (of another picture, no marker of this one) is not
    rendered for this word: the save trains its own beside it; a run folder named like an
    option is passed as a path."""
    import shutil

    client = TestClient(view_app.make_app(tmp_path, ["testserver"], workers=1))
    pid = client.post("/api/flow?text=ok&n=200").headers  # noqa: F841 (remembered)
    from flowgif.view.routes.pictures import picture_id

    ident = picture_id(None, "ok", "auto", False)
    shutil.copytree(tiny_run, tmp_path / f"view-{ident}")
    r = client.post(f"/api/save?id={ident}&particles=1000&format=gif")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (
        f"--out ./view-{ident}-r2" in answer["commands"][0]
        or f"view-{ident}-r2" in answer["commands"][0]
    ), answer
    assert (tmp_path / f"view-{ident}" / "checkpoint.pt").read_bytes() == (
        tiny_run / "checkpoint.pt"
    ).read_bytes()  # the copy is left as it was
    shutil.copytree(tiny_run, tmp_path / "-h")
    r = client.post("/api/save?run=-h&particles=1000&format=gif")
    assert r.status_code == 200, r.text
    assert r.json()["command"].endswith(" ./-h") or "/-h" in r.json()["command"]
    assert (tmp_path / r.json()["file"]).is_file()
    assert not [p.name for p in tmp_path.iterdir() if "~flowgif" in p.name]


def test_render_stopped_by_sigterm_exits_130_and_leaves_nothing(
    tiny_run: Path, tmp_path: Path
) -> None:
    """``flowgif render`` sent SIGTERM (what the page's stop sends) mid-way: exit 130, says
    so, and leaves no temporary beside its output."""
    out = tmp_path / "long.gif"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowgif",
            "render",
            str(tiny_run),
            "--out",
            str(out),
            "--frames",
            "400",
            "--particles",
            "60000",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if "~flowgif" in p.name] and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_view_command_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgif", "view", str(tmp_path), "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("flowgif view: http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_full_disk_is_one_line_in_train(tiny_png: Path, tmp_path: Path) -> None:
    """Training (exact or trained) into a disk with no room: one line, exit 1."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], check=True)
    try:
        for method in ("exact", "fm"):
            args = ["train", "--img", str(tiny_png), "--out", str(disk / method), "--steps", "5"]
            args += ["--method", method]
            r = subprocess.run(
                [sys.executable, "-m", "flowgif", *args], capture_output=True, text=True
            )
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            assert lines[-1].startswith("error:") and "space" in lines[-1], lines[-1]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_huge_one_bit_picture_stays_under_2_gb(tmp_path: Path, client: TestClient) -> None:
    """14,000 x 14,000 pixels (under the 200-megapixel guard, 41 KB as a one-bit PNG; it took
    8.9 GB): ``train --method exact`` peaks under 2 GB, in the file's own pixel frame; the
    page, which flows on a 256-px grid, refuses it in one line before decoding it."""
    big = tmp_path / "big.png"
    img = Image.new("1", (14_000, 14_000), 1)
    img.paste(0, (3000, 4000, 9000, 8000))
    img.save(big, optimize=True)
    del img
    run = tmp_path / "run"
    code = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    train = [sys.executable, "-m", "flowgif", "train", "--img", str(big), "--method", "exact"]
    r = subprocess.run(
        [sys.executable, "-c", code, *train, "--out", str(run)], capture_output=True, text=True
    )
    rc, peak_kb = r.stdout.splitlines()[-1].split()
    assert rc == "0", r.stderr
    assert int(peak_kb) < 2 * 1024 * 1024, peak_kb
    from flowgif.store import load_run

    assert load_run(run).density.size == (14_000, 14_000)
    answer = client.post("/api/flow?n=200", content=big.read_bytes())
    assert answer.status_code == 400 and "pixels" in answer.json()["error"], answer.text
    mid = tmp_path / "mid.png"  # 64 megapixels: under Pillow's own guard, over the page's
    Image.new("1", (8000, 8000), 1).save(mid, optimize=True)
    answer = client.post("/api/flow?n=200", content=mid.read_bytes())
    assert answer.status_code == 400 and "8000 x 8000 pixels" in answer.json()["error"]


def test_an_ot_start_one_pixel_wide_or_high(tiny_png: Path, tmp_path: Path) -> None:
    """A start of 1 x 1, 1 x 5, 5 x 1 pixels (and a 1 x 1 end): the OT flow is computed,
    rendered, evaluated and sampled."""
    from tests.test_cli import call

    for w, h in ((1, 1), (1, 5), (5, 1)):
        start = tmp_path / f"p{w}x{h}.png"
        Image.new("L", (w, h), 0).save(start)
        run = tmp_path / f"r{w}x{h}"
        r = call("train", "--img", tiny_png, "--from", start, "--method", "ot", "--out", run)
        assert r.exit_code == 0, r.output
        assert call("eval", run).exit_code == 0
        assert call("sample", run, "--out", tmp_path / f"s{w}{h}.npy", "--n", 500).exit_code == 0
        r = call(
            "render", run, "--frames", 4, "--particles", 500, "--out", tmp_path / f"{w}{h}.gif"
        )
        assert r.exit_code == 0, r.output
    one = tmp_path / "p1x1.png"
    r = call(
        "train", "--img", one, "--from", tiny_png, "--method", "ot", "--out", tmp_path / "rev"
    )
    assert r.exit_code == 0, r.output


def test_a_batch_never_takes_a_folder_another_picture_took_meanwhile(tmp_path: Path) -> None:
    """Two batches into one OUT, each with its own star.png: the folder the second chose was
    claimed and trained for the first's picture before it got there; it goes beside it."""
    from flowgif.batch.work import _prepare, _take, hashes, run_folder
    from flowgif.config import load_config
    from flowgif.store import CHECKPOINT, claim, let_go

    config = load_config("default").updated({"train.steps": 5})
    a, b = tmp_path / "a" / "star.png", tmp_path / "b" / "star.png"
    for p, box in ((a, (4, 4, 20, 20)), (b, (10, 2, 30, 12))):
        p.parent.mkdir()
        img = Image.new("L", (32, 32), 255)
        img.paste(0, box)
        img.save(p)
    out = tmp_path / "out"
    render: dict = {}
    kb = hashes(b, config, render)
    chosen, _ = run_folder(out, "star", kb, config)  # b looks: star is free
    ka = hashes(a, config, render)
    assert claim(out / "star", "batch", ka["image"])  # a claims and trains it meanwhile
    (out / "star" / CHECKPOINT).write_bytes(b"a's checkpoint")
    assert _take(chosen, kb, config) is None
    job = _prepare(b, chosen, config, render, "star.png", lambda: False)
    assert (
        job.run == out / "star-2"
        and json.loads((out / "star-2" / ".flowgif-run").read_text())["picture"] == kb["image"]
    )
    let_go(job.run)
    assert (out / "star" / CHECKPOINT).read_bytes() == b"a's checkpoint"
    assert not math.isnan(0.0)
