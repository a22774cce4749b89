"""What is fitted: the continuous field and the discrete families, built by name.

:data:`FAMILIES` is the registry (``train.family``): ``field`` (a vector field, the
continuous flow of an ODE; :mod:`flowgif.flows.field`), ``realnvp`` (affine couplings),
``planar`` and ``radial`` (Rezende & Mohamed), and ``exact`` (no weights: the field flow
matching trains toward, computed in closed form from the ends; :mod:`flowgif.flows.exact`),
and ``ot`` (no weights: the optimal-transport map between the ends, computed;
:mod:`flowgif.flows.transport`).
Each entry names the function that builds the family's module from a config; :func:`build`
calls it and :func:`wrap` puts the module behind the :class:`~flowgif.flows.model.Flow`
interface. The registry names modules rather than importing them, so reading the names (the
CLI's choices) costs no torch import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from flowgif.config import Config
    from flowgif.flows.model import Flow
    from flowgif.sources.base import Distribution

__all__ = ["FAMILIES", "build", "wrap"]

FAMILIES: dict[str, str] = {
    "field": "flowgif.flows.field:build",
    "realnvp": "flowgif.flows.realnvp:build",
    "planar": "flowgif.flows.planar:build",
    "radial": "flowgif.flows.radial:build",
    "exact": "flowgif.flows.exact:build",
    "ot": "flowgif.flows.transport:build",
}


def build(config: Config) -> nn.Module:
    """The trainable module of ``config.train.family`` (untrained)."""
    module, _, name = FAMILIES[config.train.family].partition(":")
    return getattr(import_module(module), name)(config)


def wrap(
    module: nn.Module,
    config: Config,
    start: Distribution | None = None,
    end: Distribution | None = None,
) -> Flow:
    """The :class:`~flowgif.flows.model.Flow` interface over a module, from ``start``
    (default N(0, I)); the exact flow (:mod:`flowgif.flows.exact`) is computed from ``end``.

    Raises:
        FlowgifError: a discrete flow with a start other than N(0, I).
    """
    from flowgif.errors import FlowgifError
    from flowgif.flows.base import DiscreteFlow
    from flowgif.flows.exact import ExactField, ExactFlow
    from flowgif.flows.model import ContinuousFlow, LayeredFlow
    from flowgif.flows.transport import OTField, OTFlow
    from flowgif.sources.noise import Noise

    if isinstance(module, ExactField):
        if end is None:
            raise FlowgifError("the exact flow is computed from its end: give it")
        return ExactFlow(end, start)  # type: ignore[arg-type]
    if isinstance(module, OTField):
        if end is None:
            raise FlowgifError("the optimal-transport flow is computed from its end: give it")
        return OTFlow(end, start)  # type: ignore[arg-type]
    if isinstance(module, DiscreteFlow):
        if start is not None and not isinstance(start, Noise):
            raise FlowgifError(
                f"a {module.family} flow carries N(0, I), its base, through its layers: it "
                "cannot start from anything else; use the continuous flow (fm or ffjord)"
            )
        return LayeredFlow(module)
    return ContinuousFlow(module, config.solve, start)
