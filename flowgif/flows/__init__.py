"""Discrete normalizing flows, one family per module, built by name from a run's config.

``realnvp`` (affine couplings, maximum likelihood), ``planar`` and ``radial`` (Rezende &
Mohamed; reverse KL on energy targets, maximum likelihood through their inverses elsewhere).
"""

from __future__ import annotations

from flowgif.config import DISCRETE, FlowConfig
from flowgif.flows.base import DiscreteFlow, Layer
from flowgif.flows.planar import planar
from flowgif.flows.radial import radial
from flowgif.flows.realnvp import realnvp

__all__ = ["DEFAULT_LAYERS", "FAMILIES", "DiscreteFlow", "Layer", "build_flow"]

FAMILIES = DISCRETE
DEFAULT_LAYERS = {"realnvp": 8, "planar": 32, "radial": 32}  # the tutorials' usual depths


def build_flow(family: str, config: FlowConfig, seed: int = 0) -> DiscreteFlow:
    """The discrete flow ``family`` as ``config`` describes it (``layers = 0``: the default)."""
    layers = config.layers or DEFAULT_LAYERS[family]
    if family == "realnvp":
        return realnvp(layers, config.hidden, config.depth, config.batchnorm)
    if family == "planar":
        return planar(layers, seed)
    if family == "radial":
        return radial(layers, seed)
    raise ValueError(f"unknown flow family {family!r}; choose one of {FAMILIES}")
