"""``flowgif view``: the app in process (Starlette's test client) and the page in a real
browser (Debian's Chromium through selenium, as the gallery test does)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import assert_one_line_error, call
from tests.test_gallery import browser

pytest.importorskip("starlette", reason="the view extra: pip install -e '.[test]'")

from starlette.testclient import TestClient

from flowgif.view import app as view_app


def bar_png(path: Path, size: int = 48) -> Path:
    """A dark L on white: ink in two bars."""
    a = np.full((size, size), 255, np.uint8)
    a[size // 6 : -size // 6, size // 4 : size // 4 + size // 6] = 0
    a[-size // 3 : -size // 6, size // 4 : -size // 6] = 0
    Image.fromarray(a).save(path)
    return path


def decode(body: bytes) -> tuple[dict, np.ndarray]:
    (n,) = struct.unpack("<I", body[:4])
    header = json.loads(body[4 : 4 + n])
    data = np.frombuffer(body[4 + n :], "<i2").reshape(header["times"], header["particles"], 2)
    return header, data.astype(float) * header["scale"] / 32767


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(view_app.make_app(tmp_path, ["testserver", "127.0.0.1"]))


def test_a_dropped_picture_comes_back_as_paths_that_end_on_its_ink(
    client: TestClient, tmp_path: Path
) -> None:
    """The body is the header and int16 paths (T, N, 2); the points at t = 1, mapped to the
    picture's pixels, are on its ink (at least 98 %); the bytes are stated in the header's
    shape (4 per particle and time)."""
    pic = bar_png(tmp_path / "l.png")
    r = client.post("/api/flow?n=5000", content=pic.read_bytes())
    assert r.status_code == 200, r.text
    header, paths = decode(r.content)
    assert header["particles"] == 5000 and header["times"] == view_app.TIMES
    assert len(r.content) >= 4 * 5000 * view_app.TIMES
    hx, hy = header["half"]
    end = paths[-1]
    col = ((end[:, 0] + hx) / (2 * hx) * 48).astype(int).clip(0, 47)
    row = ((hy - end[:, 1]) / (2 * hy) * 48).astype(int).clip(0, 47)
    ink = np.asarray(Image.open(pic)) < 128
    assert ink[row, col].mean() >= 0.98
    word = client.post("/api/flow?text=hi&n=1000")
    assert word.status_code == 200 and decode(word.content)[0]["label"] == "text:hi"


def test_what_the_server_refuses(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Host (DNS rebinding): 400. A broken file: 400 and the CLI's one-line reason,
    naming no path of the server. Too large: 413. A run name reaching outside FOLDER: 404
    (or 405 where the client resolved ``..`` itself)."""
    evil = client.get("/", headers={"Host": "evil.example"})
    assert evil.status_code == 400
    broken = client.post("/api/flow", content=b"not a picture")
    assert broken.status_code == 400
    reason = broken.json()["error"]
    assert "Pillow" in reason and "/tmp" not in reason and "\n" not in reason
    monkeypatch.setattr(view_app, "MAX_UPLOAD", 1000)
    big = TestClient(view_app.make_app(tmp_path, ["testserver"]))
    assert big.post("/api/flow", content=b"x" * 5000).status_code == 413
    for name in ("..", "..%2F..%2Fetc", "%2e%2e"):
        r = client.get(f"/api/runs/{name}/flow")
        assert r.status_code in (404, 405), (name, r.status_code)  # 405: ".." resolved away
        assert b"error" in r.content or r.status_code == 405


def test_runs_are_listed_and_played(tmp_path: Path) -> None:
    """A run folder under FOLDER is listed and its flow comes back from the same noise."""
    pic = bar_png(tmp_path / "l.png")
    runs = tmp_path / "runs"
    assert call("train", "--img", pic, "--method", "ot", "--out", runs / "l").exit_code == 0
    (runs / "not-a-run").mkdir()
    client = TestClient(view_app.make_app(runs, ["testserver"]))
    listed = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in listed] == ["l"]
    r = client.get("/api/runs/l/flow?n=1000")
    assert r.status_code == 200
    header, paths = decode(r.content)
    assert header["method"] == "ot" and paths.shape == (view_app.TIMES, 1000, 2)


def test_view_without_a_free_port_or_with_a_bad_host_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = call("view", tmp_path, "--no-open", "--port", port)
    assert_one_line_error(result, "cannot serve on 127.0.0.1 port")
    assert_one_line_error(
        call("view", tmp_path, "--no-open", "--host", "203.0.113.9"), "cannot serve"
    )
    assert_one_line_error(call("view", tmp_path, "--port", "70000"), "--port", code=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        view_app.make_app(tmp_path, ["127.0.0.1", "localhost"]),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_twenty_drops_at_once_are_each_answered(server: str, tmp_path: Path) -> None:
    """20 drops from separate connections: each gets its flow or 503 with Retry-After;
    nothing crashes, and a drop made afterwards works."""
    import httpx

    body = bar_png(tmp_path / "l.png", 32).read_bytes()

    def drop(_: int) -> httpx.Response:
        with httpx.Client(timeout=120) as c:
            return c.post(f"{server}/api/flow?n=2000", content=body)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(drop, range(20)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 503}, codes
    assert 200 in codes
    assert all(r.headers.get("retry-after") for r in answers if r.status_code == 503)
    assert drop(0).status_code == 200


@pytest.mark.parametrize("width", [1200, 390])  # a desktop, a phone
def test_the_page_plays_a_chosen_picture_in_a_real_browser(
    server: str, tmp_path: Path, width: int
) -> None:
    """The file button is shown; a picture set on it plays; at t = 1 at least 90 % of the
    canvas's dark pixels are on the picture's ink; with 100,000 particles the page counts at
    least 30 frames per second (headless, software rendering); every request went to the
    server."""
    pic = bar_png(tmp_path / "l.png", 96)
    d = browser(tmp_path, width, 900)
    try:
        d.get(server + "/")
        button = d.find_element("css selector", "label.button")
        assert button.is_displayed() and button.rect["width"] <= width
        d.find_element("id", "file").send_keys(str(pic))
        deadline = time.monotonic() + 60
        while not d.execute_script("return window.flowgifView.ready"):
            assert time.monotonic() < deadline, d.execute_script("return window.flowgifView.error")
            time.sleep(0.05)
        d.execute_script("document.getElementById('particles').value = 100000")
        time.sleep(2.5)
        fps = d.execute_script("return window.flowgifView.fps")
        assert fps >= 30, fps
        d.execute_script(
            "document.getElementById('color').value = 'mono'; window.flowgifView.pause();"
            "window.flowgifView.seek(1)"
        )
        frames = d.execute_script("return window.flowgifView.frames")
        while d.execute_script("return window.flowgifView.frames") < frames + 3:
            time.sleep(0.02)
        png = tmp_path / "canvas.png"
        png.write_bytes(d.find_element("id", "exact").screenshot_as_png)
        origins = d.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
        )
        assert set(origins) <= {server}, origins
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        d.quit()
    shot = np.asarray(Image.open(png).convert("L")).astype(float)
    dark = shot < 128
    assert dark.sum() > 500
    # the picture's frame fills the canvas (with a 5 % margin): map the canvas onto it
    h, w = shot.shape
    ys, xs = np.nonzero(dark)
    u = ((xs / w - 0.5) * 1.05 + 0.5) * 96
    v = ((ys / h - 0.5) * 1.05 + 0.5) * 96
    ink = np.asarray(Image.open(pic)) < 128
    on = ink[v.astype(int).clip(0, 95), u.astype(int).clip(0, 95)]
    assert on.mean() >= 0.9, on.mean()


def test_save_writes_what_the_command_it_shows_writes(tmp_path: Path) -> None:
    """ "Save GIF" writes a fresh file in FOLDER and shows the ``flowgif render`` line; that
    line, run by hand (here: in process), writes the same bytes. A second save gets a new
    name; a download serves it; names outside the saved files are refused."""
    import shlex

    folder = tmp_path / "runs"
    client = TestClient(view_app.make_app(folder, ["testserver"]))
    pic = bar_png(tmp_path / "l.png", 40)
    header, _ = decode(client.post("/api/flow?n=1000", content=pic.read_bytes()).content)
    q = f"id={header['id']}&particles=1500&color=mono&background=dark&format=gif"
    first = client.post(f"/api/save?{q}")
    assert first.status_code == 200, first.text
    answer = first.json()
    saved = folder / answer["file"]
    assert saved.is_file()
    args = shlex.split(answer["command"])
    assert args[:2] == ["flowgif", "render"]
    by_hand = tmp_path / "by-hand.gif"
    args[args.index("--out") + 1] = str(by_hand)
    result = call(*args[1:])
    assert result.exit_code == 0, result.output
    assert by_hand.read_bytes() == saved.read_bytes()
    second = client.post(f"/api/save?{q}").json()
    assert second["file"] != answer["file"]
    assert client.get(f"/api/files/{answer['file']}").content == saved.read_bytes()
    assert client.get("/api/files/..%2Fl.png").status_code == 404
    assert client.post("/api/save?id=nothing").status_code == 400
