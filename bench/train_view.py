"""Training in ``flowgif view``, in headless Chromium: Train to the network's first flow on
screen, updates per second, the page's frames per second at 100,000 particles while it trains,
the training's steps per second against the same command alone, a drawn horse after 60 s
against its exact flow, and a morph's second drop to moving particles.

    python bench/train_view.py            # all of it (about 5 minutes)

The server is the real command (``python -m flowgif view FOLDER --no-open``, one worker), the
browser Debian's Chromium through selenium (software rendering), as bench/view.py.

- first flow: Train pressed (flow matching, 300 steps) on the drawn horse, to the page's first
  update of the learned panel (``window.flowgifView.training.firstAt``); median of 3.
- while training (the horse, 60 s, 100,000 particles on screen): updates of the learned panel
  per second, the page's frames per second (its own counter, read each second), each update's
  solve in the server (``solve_s``: loading ``live.pt`` and solving 4,000 paths), and the
  training's steps per second (its own count: steps over its seconds, as ``done:`` says it)
  against the same command without ``--live`` run alone in a shell with the same threads.
- the horse after 60 s: both panels at t = 1 in mono; the share of each canvas's dark pixels
  that lie on the drawn ink (through each panel's own view).
- morph: a 512-px picture shown, then 'Morph into a picture' with another: the time to the
  page's ``ready``; median of 3 pairs (star, maple leaf, ../shared/bench-imgs/github.png),
  each new to the server.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from PIL import Image  # noqa: E402
from view import pictures, serve, wait  # noqa: E402

from tests.test_gallery import browser  # noqa: E402
from tests.test_view import on_ink  # noqa: E402

LIVE = "return window.flowgifView.training"
GITHUB = ROOT.parent / "shared" / "bench-imgs" / "github.png"
# a horse on the 256-px pad, in pad pixels: body, neck, head, four legs, a tail
HORSE = [
    [(70, 120), (180, 120)],
    [(175, 118), (200, 75)],
    [(198, 75), (228, 88)],
    [(80, 125), (75, 195)],
    [(100, 125), (103, 195)],
    [(160, 125), (155, 195)],
    [(178, 125), (185, 195)],
    [(70, 118), (45, 150)],
]


def draw_horse(d) -> np.ndarray:
    """Draw the horse on the page's pad (pointer strokes) and flow it; the drawn ink."""
    from selenium.webdriver.common.action_chains import ActionChains

    d.find_element("css selector", "#drawing summary").click()
    pad = d.find_element("id", "pad")
    w = pad.rect["width"]
    f = w / 256
    for (x0, y0), (x1, y1) in HORSE:
        chain = ActionChains(d).move_to_element_with_offset(pad, (x0 - 128) * f, (y0 - 128) * f)
        steps = 12
        chain.click_and_hold()
        for _ in range(steps):
            chain.move_by_offset((x1 - x0) * f / steps, (y1 - y0) * f / steps)
        chain.release().perform()
    data = d.execute_script("return document.getElementById('pad').toDataURL()")
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",")[1]))).convert("L"))
    d.find_element("id", "pad-flow").click()
    wait(d, "ready")
    d.find_element("css selector", "#drawing summary").click()
    return drawn < 128


def train(d, budget: str, unit: str) -> tuple[float, float]:
    """Press Train; seconds to the network's first flow on screen, and to its first flow
    after a step (the page's own clock)."""
    d.execute_script(
        f"document.getElementById('budget').value = {budget};"
        f"document.getElementById('budget-unit').value = '{unit}';"
    )
    d.find_element("id", "train").click()
    wait(d, "training.trainedAt", 60)
    first, trained = d.execute_script(
        f"const l = {LIVE[7:]}; return [l.firstAt - l.startedAt, l.trainedAt - l.startedAt]"
    )
    return first / 1000, trained / 1000


def ended(d) -> bool:
    return d.execute_script(LIVE + ".state") in ("done", "stopped", "failed", "killed")


def share(d, key: str) -> float:
    """The share of a panel's dark pixels on the drawn ink, at t = 1 in mono."""
    shot = np.asarray(
        Image.open(io.BytesIO(d.find_element("id", key).screenshot_as_png)).convert("L")
    )
    return shot


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shot", type=Path, help="a screenshot of the page 20 s into the 60")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc, url = serve(tmp / "runs")
        d = browser(tmp, 1200, 1000)
        try:
            d.get(url + "/")
            ink = draw_horse(d)
            time.sleep(3)  # the ready process imports torch meanwhile, as while one looks
            firsts = []
            for _ in range(3):
                firsts.append(train(d, "300", "steps"))
                while not ended(d):
                    time.sleep(0.2)
                time.sleep(3)
            for k, what in enumerate(("the network's first flow", "its first trained flow")):
                each = [f[k] for f in firsts]
                print(
                    f"Train -> {what}: median {statistics.median(each):.2f} s "
                    f"(each {', '.join(f'{s:.2f}' for s in each)})",
                    flush=True,
                )
            d.execute_script("document.getElementById('particles').value = 100000")
            train(d, "1", "minutes")
            updates, fps, solves, figures = [], [], [], []
            began = time.perf_counter()
            while not ended(d):
                time.sleep(1.0)
                if args.shot and 20 < time.perf_counter() - began < 21.5:
                    d.execute_script("window.scrollTo(0, 0)")
                    d.save_screenshot(str(args.shot))
                u, f, fig = d.execute_script(
                    f"return [{LIVE[7:]}.updates, window.flowgifView.fps, {LIVE[7:]}.figures]"
                )
                updates.append((time.perf_counter(), u))
                fps.append(f)
                figures.append(fig)
                if fig.get("solve_s"):
                    solves.append(fig["solve_s"])
            command = d.execute_script(LIVE + ".command")
            line = d.execute_script(LIVE + ".status.line")
            mid = updates[len(updates) // 6 : -len(updates) // 6 or None]
            rate = (mid[-1][1] - mid[0][1]) / (mid[-1][0] - mid[0][0])
            print(f"command: {command}")
            print(f"updates of the learned panel: {rate:.2f}/s over the middle of the run")
            print(
                f"page fps at 100,000 particles, training: {statistics.median(fps):.0f} (median)"
            )
            print(f"server solve per update: median {statistics.median(solves):.3f} s")
            print(f"in the page: {line}")
            wait(d, "trained", 120)
            d.execute_script(
                "document.getElementById('color').value = 'mono'; window.flowgifView.pause();"
                "window.flowgifView.seek(1)"
            )
            time.sleep(1.5)
            shares = {}
            for key in ("exact", "run"):
                shot = share(d, key)
                view = d.execute_script(f"return window.flowgifView.viewOf('{key}')")
                half = d.execute_script(f"return window.flowgifView.flows.{key}.half")
                dark = shot < 128
                h, w = shot.shape
                ys, xs = np.nonzero(dark)
                vx, vy = view
                pts = np.stack([((xs + 0.5) / w * 2 - 1) * vx, (1 - (ys + 0.5) / h * 2) * vy], 1)
                shares[key] = float(on_ink(pts, half, ink).mean())
            print(
                f"horse after 60 s, on ink at t = 1: learned {shares['run']:.3f}, exact "
                f"{shares['exact']:.3f} (difference {shares['exact'] - shares['run']:.3f})"
            )
            same = [a for a in shlex.split(command)[1:] if a != "--live"]
            same[same.index("--out") + 1] = str(tmp / "alone")
            alone = subprocess.run(
                [sys.executable, "-m", "flowgif", *same], capture_output=True, text=True
            )
            print(f"alone in a shell: {alone.stdout.strip().splitlines()[-1]}")
            for text, who in ((line, "page"), (alone.stdout, "alone")):
                m = re.search(r"(\d+) steps in (\d+) s", text)
                if m:
                    print(f"  {who}: {int(m[1]) / int(m[2]):.1f} steps/s")
            pics = list(pictures(tmp).values())
            if GITHUB.is_file():
                github = Image.open(GITHUB).convert("RGB")
                github.thumbnail((512, 512), Image.Resampling.LANCZOS)
                github.save(tmp / "github-512.png")
                pics.append(tmp / "github-512.png")
            morphs = []
            for k in range(3):  # each a new pair (a pair's map is kept once solved)
                first, second = pics[k % len(pics)], pics[(k + 1) % len(pics)]
                d.get(url + "/")
                d.find_element("id", "file").send_keys(str(first))
                wait(d, "ready")
                t0 = time.perf_counter()
                d.find_element("id", "morph-file").send_keys(str(second))
                wait(d, "chain")
                wait(d, "ready")
                morphs.append(time.perf_counter() - t0)
            print(
                f"morph, second drop -> moving: median {statistics.median(morphs):.2f} s "
                f"(each {', '.join(f'{s:.2f}' for s in morphs)})"
            )
        finally:
            d.quit()
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


if __name__ == "__main__":
    main()
