"""What users install: the wheel (not the source tree), run from a folder that is not the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT

SOURCES = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "flowgif").rglob("*")
    if p.suffix in (".py", ".toml", ".html", ".js", ".css") and "__pycache__" not in p.parts
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built from a copy of the source (the repo stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "flowgif", src / "flowgif", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})",
        ],
        check=True,
        capture_output=True,
        cwd=src,
    )
    (wheel,) = dist.glob("flowgif-*.whl")
    (sdist,) = dist.glob("flowgif-*.tar.gz")
    return wheel, sdist


def test_wheel_and_sdist_hold_every_module_and_config(built: tuple[Path, Path]) -> None:
    wheel, sdist = built
    assert {
        "flowgif/cli/train.py",
        "flowgif/flows/realnvp.py",
        "flowgif/configs/fast.toml",
        "flowgif/view/static/view.js",
    } <= set(SOURCES)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [s for s in SOURCES if s not in in_wheel] == []
    with tarfile.open(sdist) as tar:
        in_sdist = {"/".join(n.split("/")[1:]) for n in tar.getnames()}
    assert [s for s in SOURCES if s not in in_sdist] == []


def test_installed_wheel_trains_and_renders_from_an_empty_folder(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, _ = built
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    here = tmp_path / "elsewhere"
    here.mkdir()
    img = Image.new("L", (30, 20), 255)
    img.paste(0, (5, 5, 20, 15))
    img.save(here / "pic.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def flowgif(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "flowgif", *args],
            cwd=here,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    where = subprocess.run(
        [sys.executable, "-c", "import flowgif; print(flowgif.__file__)"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the source tree
    from flowgif import __version__

    assert flowgif("--version").strip() == f"flowgif {__version__}"
    assert "smoke" in flowgif("configs")
    flowgif("train", "--img", "pic.png", "--config", "smoke", "--steps", "5")
    flowgif("render", "--frames", "3", "--particles", "200", "--size", "48")
    assert Image.open(here / "runs" / "pic" / "flow.gif").n_frames == 3
    script = site / "bin" / "flowgif"  # the console script pip wrote
    done = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and __version__ in done.stdout
