"""The gallery page of a batch, opened in a real headless browser (Debian's Chromium)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.test_cli import SMOKE, call

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser(tmp_path: Path, width: int, height: int):
    """Headless Chromium driven through chromedriver, both from Debian's packages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).is_file()]
    assert not missing, f"{missing}: install Debian's chromium and chromium-driver (.ci/browser)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)  # fmt: skip
    # the console, and the network (every request Chromium sends: tests check their hosts)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pics")
    for i, name in enumerate(("ring [1].png", "bär & co.png")):
        img = Image.new("RGB", (40, 28), "white")
        ImageDraw.Draw(img).ellipse((4 + 8 * i, 3, 26 + 8 * i, 25), fill=(0, 60 * i, 160))
        img.save(folder / name)
    (folder / "broken.png").write_bytes(b"not a picture")
    out = folder.parent / "out"
    result = call("batch", folder, "--out", out, "--config", SMOKE,
                  "--render-args", "--frames 8 --particles 400 --size 96")  # fmt: skip
    assert result.exit_code == 1, result.output  # the broken file
    return out


@pytest.mark.parametrize("width, height", [(1200, 900), (390, 844)])  # a desktop, a phone
def test_the_gallery_loads_every_image_without_errors(
    batch_out: Path, tmp_path: Path, width: int, height: int
) -> None:
    driver = browser(tmp_path, width, height)
    try:
        driver.get((batch_out / "index.html").resolve().as_uri())
        driver.execute_script("sortBy('kl'); sortBy('name');")  # the sort buttons' script runs
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
            " i.naturalWidth]);"
        )
        assert len(images) == 4  # picture and animation of the two pictures
        assert all(complete and w > 0 for _, complete, w in images), images
        names = driver.execute_script(
            "return Array.from(document.querySelectorAll('.card h2')).map(h => h.textContent);"
        )
        assert sorted(names) == ["broken.png", "bär & co.png", "ring [1].png"]
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth;"
        )
        assert overflow <= 0  # readable at this width without scrolling sideways
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = tmp_path / f"gallery-{width}.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= min(width, 390) - 20
    finally:
        driver.quit()


def test_gallery_rebuilds_the_page_and_refuses_a_foreign_one(batch_out: Path) -> None:
    page = batch_out / "index.html"
    before = page.read_text()
    page.unlink()
    rebuilt = call("gallery", batch_out)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert page.read_text() == before
    text = page.read_text()
    assert "ring%20%5B1%5D/flow.gif" in text  # links are relative and quoted
    assert "bär &amp; co.png" in text and "not a picture Pillow can decode" in text
    figures = json.loads((batch_out / "ring [1]" / "eval.json").read_text())
    assert f"{figures['kl']:.3f}" in text
    other = batch_out.parent / "mine"
    other.mkdir()
    (other / "index.html").write_text("<html>my own page</html>")
    (other / "batch.json").write_text(json.dumps({"items": []}))
    refused = call("gallery", other)
    assert refused.exit_code == 1 and "did not write" in refused.output
    assert (other / "index.html").read_text() == "<html>my own page</html>"
    assert shutil.which("python3")
