"""An adversarial run against ``flowgif view``: at least 100 cases an attacker or a careless
user would try, each against a real ``flowgif view`` process on loopback, with what it must
do. Prints a table by class (held / failed) and every failure; exit 1 if any failed.

    python bench/view_attack.py            # about 2 minutes on a 2-core CPU

Needs the view extra (``pip install '.[view]'``) and httpx. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
from PIL import Image

RESULTS: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)


def case(kind: str, name: str, ok: bool, got: object = "") -> None:
    RESULTS[kind].append((name, bool(ok), str(got)[:160]))


class View:
    """``flowgif view FOLDER`` as its own process on a free port."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowgif", "view", str(folder), "--no-open", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        self.url = re.search(r"http://\S+?/", line).group(0).rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.c = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                self.c.get("/")
                break
            assert time.monotonic() < deadline, "the view did not start"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err

    def peak_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024

    def raw(self, data: bytes) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(data)
        return s


def status_of(s: socket.socket) -> int:
    try:
        return int(s.recv(4096).split(b"\r\n", 1)[0].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def one_line(r: httpx.Response) -> bool:
    try:
        e = r.json()["error"]
    except Exception:
        return False
    return isinstance(e, str) and "\n" not in e and "Traceback" not in e and "/tmp/" not in e


def png(size: tuple[int, int] = (64, 64), mode: str = "L") -> bytes:
    img = Image.new(mode, size, 255 if mode != "1" else 1)
    w, h = size
    img.paste(0, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if "~flowgif" in p.name]


def attacks(root: Path) -> None:
    folder = root / "runs"
    folder.mkdir()
    run = folder / "r"
    train = [sys.executable, "-m", "flowgif", "train"]
    subprocess.run(
        [*train, "--text", "ok", "--method", "exact", "--out", str(run)],
        check=True,
        capture_output=True,
    )
    for name in ("-h", "[a] b", "ü ñ"):
        shutil.copytree(run, folder / name)
    (folder / "plain").mkdir()
    shutil.copytree(run, folder / "nan")
    (folder / "nan" / "eval.json").write_text('{"kl": NaN, "tv": 0.5}')
    outside = root / "outside"
    shutil.copytree(run, outside)
    (folder / "link").symlink_to(outside)
    v = View(folder)
    c = v.c
    host = f"127.0.0.1:{v.port}"

    # Host header (DNS rebinding)
    for h, want in [
        ("evil.example", 400),
        (f"evil.example:{v.port}", 400),
        ("127.0.0.1.evil.example", 400),
        ("[evil]", 400),
        ("localhost.", 400),
        ("", 400),
        (host, 200),
        (f"localhost:{v.port}", 200),
        ("[::1]:1", 200),
        ("192.0.2.7:80", 200),
    ]:
        r = c.get("/", headers={"Host": h})
        case("host header", f"Host {h!r} -> {want}", r.status_code == want, r.status_code)

    # another site's page: GET and POST to every /api/ route, before any work
    routes = [
        ("GET", "/api/runs"),
        ("GET", "/api/runs/r/flow?n=200"),
        ("GET", "/api/runs/r/exact?n=200"),
        ("GET", "/api/runs/r/thumb"),
        ("GET", "/api/runs/r/inside"),
        ("GET", "/api/inside?id=x"),
        ("GET", "/api/progress/x"),
        ("GET", "/api/files/view-x.gif"),
        ("POST", "/api/flow?text=hi"),
        ("POST", "/api/save?run=r"),
    ]
    cross = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://localhost:3000"},
        {"Origin": "null"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    ]
    for method, url in routes:
        for headers in cross:
            r = c.request(method, url, headers=headers)
            case("another site", f"{method} {url} {headers}", r.status_code == 403, r.status_code)
    for _, url in routes[:7]:
        r = c.head(url)
        case("HEAD", f"HEAD {url} -> 405", r.status_code == 405, r.status_code)
    r = c.get(
        "/api/runs/r/thumb", headers={"Sec-Fetch-Site": "same-origin", "Origin": f"http://{host}"}
    )
    case("another site", "the page's own request is answered", r.status_code == 200, r.status_code)

    # bodies: sizes, chunking, pauses, trickles
    big = b"x" * (17 * 1024 * 1024)
    r = c.post("/api/flow", content=big)
    case("bodies", "17 MB with a length -> 413", r.status_code == 413, r.status_code)

    def chunks():
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    r = c.post("/api/flow", content=chunks())
    case("bodies", "20 MB chunked -> 413", r.status_code == 413, r.status_code)
    r = c.post("/api/save?run=r", content=b"y" * 10_000)
    case("bodies", "a save with a 10 KB body -> 413", r.status_code == 413, r.status_code)
    r = c.post("/api/flow", content=b"")
    case("bodies", "an empty drop -> 400, one line", r.status_code == 400 and one_line(r), r.text)
    r = c.post("/api/flow", content=b"GIF89a not really")
    case(
        "bodies",
        "a broken picture -> 400, no server path",
        r.status_code == 400 and one_line(r),
        r.text,
    )
    head = f"POST /api/flow HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n".encode()
    s = v.raw(head + b"x")
    case("bodies", "a body that pauses -> 408", status_of(s) == 408)
    s.close()
    slow = [v.raw(head + b"x") for _ in range(5)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for t in slow:
                with contextlib.suppress(OSError):
                    t.send(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    clock = time.perf_counter()
    r = c.post("/api/flow?n=2000", content=png((512, 512)))
    took = time.perf_counter() - clock
    stop.set()
    case(
        "bodies",
        f"a real drop beside 5 slow uploads (answered in {took:.2f} s)",
        r.status_code == 200 and took < 3,
        (r.status_code, round(took, 2)),
    )
    for t in slow:
        t.close()
    s = v.raw(head)
    s.shutdown(socket.SHUT_WR)  # a client that leaves mid-upload
    s.close()

    # names and folders
    for name, want in [
        ("..", (400, 404, 405)),
        ("%2e%2e", (404,)),
        ("a%2Fb", (404,)),
        ("link", (404,)),
        ("plain", (404,)),
        ("n" * 5000, (404,)),
        ("a%00b", (404,)),
        ("nope", (404,)),
    ]:
        for what in ("thumb", "flow", "exact", "inside"):
            r = c.get(f"/api/runs/{name}/{what}?n=200")
            good = r.status_code in want and (r.status_code == 405 or one_line(r))
            case("run names", f"{name[:20]}/{what} -> {want}", good, r.status_code)
    for name in ("-h", "[a] b", "ü ñ"):
        r = c.get(f"/api/runs/{quote(name)}/flow?n=200")
        case("run names", f"a run named {name!r} plays", r.status_code == 200, r.status_code)
    runs = c.get("/api/runs").json()["runs"]
    names = sorted(x["name"] for x in runs)
    case(
        "run names",
        "the list: runs only, NaN figures dropped",
        names == sorted(["-h", "[a] b", "nan", "r", "ü ñ"])
        and next(x for x in runs if x["name"] == "nan")["eval"] == {"tv": 0.5},
        runs,
    )

    # words
    for word, want in [
        ("a\x00b", 400),
        ("a\nb", 400),
        ("w" * 65, 400),
        ("", 400),
        (" ", 400),
        ("ü", 200),
        ("[b]", 200),
        ("-h", 200),
        ("😀", 200),
    ]:
        r = c.post(f"/api/flow?text={quote(word)}&n=200")
        good = r.status_code == want and (want == 200 or one_line(r))
        case("words", f"word {word[:10]!r} -> {want}", good, (r.status_code, r.text[:80]))

    # settings the page does not have
    for q in ("n=abc", "ink=nonsense", "invert=2"):
        r = c.post(f"/api/flow?text=hi&{q}")
        case("settings", f"flow ?{q} -> 400", r.status_code == 400 and one_line(r), r.text)
    for q in ("trail=5", "format=webp", "color=x", "particles=x", "pace=x", "background=x"):
        r = c.post(f"/api/save?run=r&{q}")
        case("settings", f"save ?{q} -> 400", r.status_code == 400 and one_line(r), r.text)
    r = c.post("/api/save?id=never")
    case("settings", "save of a picture never sent -> 400", r.status_code == 400, r.text)

    # saves: run names as paths, downloads, closed tabs
    r = c.post("/api/save?run=-h&particles=1000")
    ok = (r.status_code == 200 and "./-h" in r.json()["command"]) or "/-h" in r.text
    case("saves", "a run named -h is passed as a path", ok, r.text[:200])
    if r.status_code == 200:
        got = c.get(f"/api/files/{quote(r.json()['file'])}")
        case("saves", "its file downloads", got.status_code == 200, got.status_code)
    Image.new("P", (4, 4)).save(folder / "view-mine.gif")
    (folder / "view-out.gif").symlink_to(outside / "samples.png")
    for name in (
        "view-mine.gif",
        "view-out.gif",
        "r",
        "..%2Foutside%2Fconfig.toml",
        "view-none.gif",
        "index.html",
    ):
        r = c.get(f"/api/files/{name}")
        case("downloads", f"{name} -> 404", r.status_code == 404, r.status_code)
    ident = c.post("/api/flow?text=zz&n=200")
    header_id = _header(ident.content)["id"]
    (folder / f"view-{header_id}-1.gif").symlink_to(root / "nowhere")
    r = c.post(f"/api/save?id={header_id}&particles=1000")
    case(
        "saves",
        "a dangling link named like the next file is passed over",
        r.status_code == 200 and r.json()["file"] == f"view-{header_id}-2.gif",
        r.text[:200],
    )
    with contextlib.suppress(httpx.TimeoutException):
        c.post(f"/api/save?id={header_id}&particles=300000&format=mp4", timeout=4)
    time.sleep(3)
    case(
        "saves",
        "a save whose tab closed leaves no temporary",
        not temporaries(folder),
        temporaries(folder),
    )

    # load and memory
    def drop(k: int) -> int:
        with httpx.Client(base_url=v.url, timeout=120) as d:
            return d.post(f"/api/flow?n=2000&text=w{k}").status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(drop, range(20)))
    case(
        "load",
        f"20 drops at once: {sorted(set(codes))}",
        set(codes) <= {200, 503} and 200 in codes,
        codes,
    )
    huge = png((14_000, 14_000), "1")
    r = c.post("/api/flow?n=2000", content=huge)
    case(
        "load",
        f"a 14,000 x 14,000 one-bit PNG of {len(huge) // 1024} KB",
        r.status_code in (200, 400),
        r.status_code,
    )
    peak = v.peak_mb()
    case("load", f"the server's peak memory {peak:.0f} MB < 2048", peak < 2048, peak)
    r = c.post("/api/flow?text=hi&n=200&job=fin")
    p = c.get("/api/progress/fin").json()
    case("load", "a finished job's progress is done", p == {"state": "done", "done": 1.0}, p)

    # a second server on the same folder, the same word saved at once by both
    w = View(folder)
    for srv in (v, w):
        srv.c.post("/api/flow?text=twin&n=200")
    tid = _header(v.c.post("/api/flow?text=twin&n=200").content)["id"]
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda s: s.c.post(f"/api/save?id={tid}&particles=1000"), (v, w)))
    files = {b.json().get("file") for b in both if b.status_code == 200}
    case(
        "two servers",
        "the same word saved by both: two files",
        len(files) == 2,
        [b.text[:100] for b in both],
    )
    rc, err = w.stop(signal.SIGTERM)
    case(
        "signals",
        "SIGTERM to a server -> exit 0, no traceback",
        rc == 0 and "Traceback" not in err,
        (rc, err[-200:]),
    )

    # odd folder states
    shutil.rmtree(folder / "plain")
    os.chmod(folder, 0o555)
    r = c.post(f"/api/save?id={tid}&particles=1000&format=gif")
    read_only = os.geteuid() == 0 or (r.status_code == 400 and one_line(r))
    case("folders", "a read-only FOLDER: a save is one line (root may write)", read_only, r.text)
    os.chmod(folder, 0o755)
    moved = root / "moved"
    folder.rename(moved)
    r = c.get("/api/runs")
    case(
        "folders",
        "FOLDER deleted while serving: the list is empty",
        r.status_code == 200 and r.json()["runs"] == [],
        r.text[:100],
    )
    r = c.post(f"/api/save?id={tid}&particles=1000")
    case("folders", "FOLDER deleted: a save makes it again", r.status_code == 200, r.text[:100])
    rc, err = v.stop(signal.SIGINT)
    case(
        "signals",
        "Ctrl-C to a server -> exit 0, no traceback",
        rc == 0 and "Traceback" not in err,
        (rc, err[-300:]),
    )
    case("signals", "nothing half-written anywhere", not temporaries(root), temporaries(root))
    file_as_folder = root / "a file"
    file_as_folder.write_text("x")
    r = subprocess.run(
        [sys.executable, "-m", "flowgif", "view", str(file_as_folder), "--no-open"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    case(
        "folders",
        "FOLDER is a file: one line, exit 1",
        r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1,
        r.stderr,
    )


def _header(body: bytes) -> dict:
    import json
    import struct

    n = struct.unpack("<I", body[:4])[0]
    return json.loads(body[4 : 4 + n])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        attacks(Path(tmp))
    total = sum(len(v) for v in RESULTS.values())
    failed = [(k, n, g) for k, v in RESULTS.items() for n, ok, g in v if not ok]
    print("| class | cases | held | failed |\n|---|---|---|---|")
    for k, v in RESULTS.items():
        bad = sum(not ok for _, ok, _ in v)
        print(f"| {k} | {len(v)} | {len(v) - bad} | {bad} |")
    print(f"| all | {total} | {total - len(failed)} | {len(failed)} |")
    for k, n, g in failed:
        print(f"FAILED [{k}] {n}: {g}")
    print("\nmeasured:")
    for k in ("bodies", "load"):
        for n, ok, _ in RESULTS[k]:
            if any(ch.isdigit() for ch in n) and ("s)" in n or "MB" in n or "drops" in n):
                print(f"- {n}: {'held' if ok else 'FAILED'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
