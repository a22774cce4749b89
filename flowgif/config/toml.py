"""Configs as TOML: the named configs shipped in ``flowgif/configs/``, reading and writing."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from flowgif.config.sections import Config
from flowgif.errors import FlowgifError

__all__ = ["dump_toml", "load_config", "named_configs"]


def named_configs() -> dict[str, str]:
    """The configs shipped with flowgif (``flowgif/configs/*.toml``): name -> first sentence.

    They are package data, read with :mod:`importlib.resources`, so they resolve from any
    folder once flowgif is installed.
    """
    out = {}
    for entry in _configs_dir().iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[: -len(".toml")]] = _summary(entry.read_text(encoding="utf-8"))
    return dict(sorted(out.items()))


def _configs_dir() -> Any:
    from importlib.resources import files

    return files("flowgif") / "configs"


def _summary(text: str) -> str:
    """The first sentence of a config file's leading comment."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]


def load_config(path: Path | str | None) -> Config:
    """Read a TOML config (defaults where a key is absent): a file, or a shipped config's name.

    Args:
        path: a TOML file, or the name of a shipped config (``fast``, ``default``,
            ``realnvp`` ... see :func:`named_configs`); a file of that name wins. None: the
            built-in defaults.

    Raises:
        FlowgifError: the file is missing, not TOML, or has an unknown key or a wrong type.
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        entry = _configs_dir() / f"{path.name}.toml"
        if not entry.is_file():
            names = ", ".join(named_configs())
            raise FlowgifError(
                f"no config file or named config '{path}'; the named configs are: {names}"
            )
        return _parse(entry.read_text(encoding="utf-8"), f"config '{path.name}'")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlowgifError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise FlowgifError(f"config {path} is a folder, not a TOML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FlowgifError(f"cannot read config {path}: {err}") from None
    return _parse(text, str(path))


def _parse(text: str, source: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FlowgifError(f"{source} is not valid TOML: {err}") from None
    return Config.from_dict(data, source=source)


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    """Write sections of scalars as TOML (all that a Config holds)."""
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = json.dumps(value)  # JSON string escapes are valid TOML basic strings
            elif isinstance(value, float):
                text = repr(value)
            else:
                text = str(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)
