"""``flowgif view`` in headless Chromium: drop to the first moving frame, frames per second,
bytes per picture, and the server's memory under 20 drops at once.

    python bench/view.py                 # all of it (about 2 minutes)
    python bench/view.py --drops 5       # drops per picture for the median

The server is the real command (``python -m flowgif view FOLDER --no-open``, one worker, its
default threads), the browser Debian's Chromium through selenium (software rendering, as
tests/test_gallery.py starts it). Pictures are 512 px on the longer side, made here from the
bundled star (line art, upscaled) and ../shared/bench-imgs/maple_leaf.jpg (a colour photo).

- drop: a fresh page, the file set on the file button; the time until the page reports
  ``ready`` (the first frame of the flow is drawn on the next animation frame); median of
  ``--drops``, after one warm-up drop.
- fps: the page's own counter (``window.flowgifView.fps``, frames in the last second) after
  3 s at each particle count, in each drawing mode; median of 3 readings a second apart.
- bytes: the flow's body (``POST /api/flow``) and what is inside (``GET /api/inside``).
- memory: the server's peak resident memory (VmHWM) after 20 drops of the photo from 20
  connections at once, and what each got.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.test_gallery import browser  # noqa: E402

LEAF = ROOT.parent / "shared" / "bench-imgs" / "maple_leaf.jpg"


def pictures(tmp: Path) -> dict[str, Path]:
    out = {}
    star = Image.open(ROOT / "imgs" / "star.png")
    out["star (line art)"] = tmp / "star-512.png"
    star.resize((512, 512), Image.Resampling.LANCZOS).save(out["star (line art)"])
    if LEAF.is_file():
        leaf = Image.open(LEAF).convert("RGB")
        leaf.thumbnail((512, 512), Image.Resampling.LANCZOS)
        out["maple leaf (colour photo)"] = tmp / "leaf-512.jpg"
        leaf.save(out["maple leaf (colour photo)"], quality=92)
    return out


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgif", "view", str(folder), "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    url = re.search(r"http://\S+", line).group(0).rstrip("/")
    port, deadline = int(url.rsplit(":", 1)[1]), time.monotonic() + 30
    while True:  # the URL is printed as the server starts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return proc, url


def wait(d, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not d.execute_script(f"return window.flowgifView.{what}"):
        if time.monotonic() > deadline:
            raise RuntimeError(d.execute_script("return window.flowgifView.error"))
        time.sleep(0.01)


def drop_seconds(url: str, pic: Path, tmp: Path) -> float:
    d = browser(tmp, 1200, 1000)
    try:
        d.get(url + "/")
        t0 = time.perf_counter()
        d.find_element("id", "file").send_keys(str(pic))
        wait(d, "ready")
        return time.perf_counter() - t0
    finally:
        d.quit()


def fps_table(url: str, pic: Path, tmp: Path) -> list[tuple[str, int, float]]:
    d = browser(tmp, 1200, 1000)
    rows = []
    try:
        d.get(url + "/")
        d.find_element("id", "file").send_keys(str(pic))
        wait(d, "ready")
        modes = [
            ("position", ""),
            ("density", ""),
            ("position, trail 8", "document.getElementById('trail').value = '8';"),
            (
                "position, p_t and v",
                "for (const id of ['show-density', 'show-field']) {"
                " const b = document.getElementById(id); b.checked = true;"
                " b.dispatchEvent(new Event('change')); }",
            ),
        ]
        for name, script in modes:
            color = "density" if name == "density" else "position"
            d.execute_script(
                f"document.getElementById('color').value = '{color}';"
                "document.getElementById('trail').value = '0';" + script
            )
            if "p_t" in name:
                wait(d, "insideReady")
            for n in (20_000, 100_000, 300_000):
                d.execute_script(f"document.getElementById('particles').value = {n}")
                time.sleep(3)
                readings = []
                for _ in range(3):
                    readings.append(d.execute_script("return window.flowgifView.fps"))
                    time.sleep(1)
                rows.append((name, n, statistics.median(readings)))
    finally:
        d.quit()
    return rows


def sizes(url: str, pic: Path) -> tuple[int, int]:
    import httpx

    with httpx.Client(timeout=120) as c:
        body = c.post(f"{url}/api/flow", content=pic.read_bytes()).content
        import json
        import struct

        (n,) = struct.unpack("<I", body[:4])
        pid = json.loads(body[4 : 4 + n])["id"]
        inside = c.get(f"{url}/api/inside?id={pid}").content
    return len(body), len(inside)


def load(url: str, pic: Path, pid: int) -> tuple[list[int], float]:
    import httpx

    body = pic.read_bytes()

    def drop(_: int) -> int:
        with httpx.Client(timeout=300) as c:
            return c.post(f"{url}/api/flow", content=body).status_code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(drop, range(20)))
    wall = time.perf_counter() - t0
    return codes, wall


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pics = pictures(tmp)
        proc, url = serve(tmp / "runs")
        try:
            print("| picture | drop -> first moving frame, s (median) | each | body | inside |")
            print("|---|---|---|---|---|")
            first = next(iter(pics.values()))
            drop_seconds(url, first, tmp)  # warm-up: imports, first allocations
            for name, pic in pics.items():
                each = [drop_seconds(url, pic, tmp) for _ in range(args.drops)]
                body, inside = sizes(url, pic)
                print(
                    f"| {name} | {statistics.median(each):.2f} | "
                    f"{', '.join(f'{s:.2f}' for s in each)} | {body / 1e6:.2f} MB | "
                    f"{inside / 1e6:.2f} MB |",
                    flush=True,
                )
            print()
            print("| drawing | particles | fps (median of 3) |")
            print("|---|---|---|")
            for name, n, fps in fps_table(url, first, tmp):
                print(f"| {name} | {n:,} | {fps:.0f} |", flush=True)
            print()
            before = peak_mb(proc.pid)
            codes, wall = load(url, list(pics.values())[-1], proc.pid)
            after = peak_mb(proc.pid)
            got = {c: codes.count(c) for c in sorted(set(codes))}
            print(
                f"20 drops at once: {got} in {wall:.1f} s; server peak memory {before:.0f} MB "
                f"before, {after:.0f} MB after"
            )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            print(f"Ctrl-C: exit {proc.returncode}")


if __name__ == "__main__":
    main()
