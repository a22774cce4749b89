"""How a flow is fitted: each objective takes the flow (with its start) and the end.

:data:`OBJECTIVES` is the registry (``train.objective``):

- ``fm`` (:mod:`~flowgif.objectives.flow_matching`): regress the field on straight paths
  between start and end samples, no ODE solve while training (the field only);
- ``likelihood`` (:mod:`~flowgif.objectives.likelihood`): maximum likelihood of end
  samples, through the adjoint ODE for the field (FFJORD), through the inverse layers for a
  discrete flow;
- ``reverse`` (:mod:`~flowgif.objectives.reverse_kl`): reverse KL to an energy known up to
  a constant, from the flow's own samples;
- ``exact``: nothing to fit — the exact flow (:mod:`flowgif.flows.exact`) is computed whole.

A new objective is one module with an :class:`~flowgif.objectives.base.Objective` and one
line here. Entries name their class rather than import it, so the names cost no torch import.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowgif.objectives.base import Objective

__all__ = ["OBJECTIVES", "objective"]

OBJECTIVES: dict[str, str] = {
    "fm": "flowgif.objectives.flow_matching:FlowMatching",
    "likelihood": "flowgif.objectives.likelihood:Likelihood",
    "reverse": "flowgif.objectives.reverse_kl:ReverseKL",
    "exact": "flowgif.objectives.base:Computed",
}


@cache
def objective(name: str) -> Objective:
    """The objective registered as ``name``."""
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(import_module(module), cls)()
