"""Configs: files map 1:1 to the dataclasses; bad keys and types are named."""

from __future__ import annotations

import tomllib

import pytest

from flowgif.config import Config, dump_toml, load_config
from flowgif.errors import FlowgifError
from tests.conftest import ROOT


def test_default_toml_is_the_built_in_default() -> None:
    assert load_config(ROOT / "configs" / "default.toml") == Config()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.stem)
def test_every_bundled_config_loads_and_round_trips(path) -> None:
    config = load_config(path)
    assert Config.from_dict(tomllib.loads(dump_toml(config.to_dict()))) == config


def test_errors_name_the_key_and_the_type() -> None:
    with pytest.raises(FlowgifError, match=r"unknown key 'train\.stepz'"):
        Config().updated({"train.stepz": 1})
    with pytest.raises(FlowgifError, match=r"train\.batch must be int"):
        Config().updated({"train.batch": 1.5})
    with pytest.raises(FlowgifError, match="not one of"):
        Config().updated({"train.method": "gan"})
    with pytest.raises(FlowgifError, match="must be > 0"):
        Config().updated({"train.batch": 0})
    with pytest.raises(FlowgifError, match="unknown section"):
        Config.from_dict({"trian": {}})


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()
