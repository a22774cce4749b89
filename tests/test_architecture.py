"""The architecture holds: the import-linter contracts in pyproject.toml, and the names config
keeps in sync with the registries it never imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from flowgif.config import FAMILY_NAMES, METHODS, OBJECTIVE_NAMES
from flowgif.flows import FAMILIES
from flowgif.objectives import OBJECTIVES
from tests.conftest import ROOT


def test_every_import_points_down_the_layers() -> None:
    """``lint-imports`` checks every contract of pyproject.toml (layers, forbidden imports)."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_config_names_equal_the_registries() -> None:
    assert tuple(FAMILIES) == FAMILY_NAMES
    assert tuple(OBJECTIVES) == OBJECTIVE_NAMES
    for method, settings in METHODS.items():
        assert settings["train.objective"] in OBJECTIVES, method
        assert settings["train.family"] in FAMILIES, method


def test_config_imports_no_wing() -> None:
    """Reading a config loads none of the wings (no registry, no torch)."""
    code = (
        "import sys, flowgif.config\n"
        "wings = [m for m in sys.modules if m.startswith(('flowgif.flows', 'flowgif.objectives',"
        " 'flowgif.sources', 'flowgif.store'))]\n"
        "assert not wings, wings\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_the_command_line_answers_without_torch_or_ray() -> None:
    """``flowgif --help`` imports neither torch nor Ray: every command imports them inside."""
    code = (
        "import sys, flowgif.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_no_module_is_over_400_lines() -> None:
    """One module per idea: none of flowgif's Python or JavaScript modules is over 400 lines
    (the next feature lands in a module of its own)."""
    from pathlib import Path

    import flowgif

    root = Path(flowgif.__file__).parent
    long = {
        str(p.relative_to(root)): n
        for p in [*root.rglob("*.py"), *root.rglob("*.js")]
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, long
