"""Run configuration: the sections (dataclasses), the names they may take, and TOML files.

Imports nothing of flowgif above the core (errors, limits): every wing reads its config from
here, and none of them is imported back.
"""

from __future__ import annotations

from flowgif.config.choices import (
    CHOICES,
    DISCRETE,
    FAMILY_NAMES,
    FIXED_STEP,
    METHODS,
    OBJECTIVE_NAMES,
)
from flowgif.config.sections import (
    SECTIONS,
    Config,
    DensityConfig,
    FFJORDConfig,
    FieldConfig,
    FlowConfig,
    FMConfig,
    SolveConfig,
    TrainConfig,
)
from flowgif.config.toml import dump_toml, load_config, named_configs

__all__ = [
    "CHOICES",
    "DISCRETE",
    "FAMILY_NAMES",
    "FIXED_STEP",
    "METHODS",
    "OBJECTIVE_NAMES",
    "SECTIONS",
    "Config",
    "DensityConfig",
    "FFJORDConfig",
    "FMConfig",
    "FieldConfig",
    "FlowConfig",
    "SolveConfig",
    "TrainConfig",
    "dump_toml",
    "load_config",
    "named_configs",
]
