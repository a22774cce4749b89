"""Named training recipes: what a config becomes for the ends it is asked to join.

Chosen here, by the caller, never by a source: a source only says what it is.

- An energy end (``target:u1``-``u4``) has no samples, so it is fitted by reverse KL. A
  continuous field gets :data:`ENERGY_RECIPE` (``configs/energy.toml``) unless the config
  already asks for reverse KL; a discrete flow keeps its family; the exact flow is computed
  from the energy rasterised on its window.
- A toy end lives on its own square window: ``density.extent`` becomes that window.
"""

from __future__ import annotations

from typing import Any

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.sources import Source, toy_extent

__all__ = ["ENERGY_RECIPE", "check_ends", "for_ends"]

# How a continuous flow fits an energy: reverse KL through 8 fixed RK4 steps, backpropagated
# directly, on a smooth small field, with RNODE's kinetic and Jacobian penalties. Without them
# the field learns to exploit the 8 steps' error in the log-density after ~400 steps (the
# training bound falls to -9 while the true one rises to +5). configs/energy.toml; README.
ENERGY_RECIPE: dict[str, Any] = {
    "train.objective": "reverse",
    "train.family": "field",
    "field.width": 64,
    "field.activation": "tanh",
    "field.fourier_features": 0,
    "ffjord.solver": "rk4",
    "ffjord.steps": 8,
    "ffjord.adjoint": False,
    "ffjord.kinetic": 0.05,
    "ffjord.jacobian": 0.05,
}


def for_ends(config: Config, end: Source) -> Config:
    """``config`` adapted to the end it fits (module docstring); the same when applied twice."""
    if end.energy is not None and config.train.objective not in ("reverse", "exact"):
        if config.train.family == "field":
            config = config.updated(ENERGY_RECIPE)
        else:
            config = config.updated({"train.objective": "reverse"})
    extent = toy_extent(end)
    if extent is not None and config.density.extent != extent:
        config = config.updated({"density.extent": extent})
    return config


def check_ends(config: Config, start: Source, end: Source) -> None:
    """Refuse a start, end and config that cannot train together.

    Raises:
        FlowgifError: reverse KL without an energy end; a discrete flow from a start other
            than N(0, I).
    """
    from flowgif.objectives import objective

    if objective(config.train.objective).needs_energy and end.energy is None:
        raise FlowgifError(
            f"reverse KL fits an energy known up to a constant (target:u1 to target:u4), not "
            f"{end.label}"
        )
    if config.train.family not in ("field", "exact", "ot") and not start.is_noise:
        raise FlowgifError(
            f"a {config.train.family} flow carries N(0, I), its base, through its layers: it "
            f"cannot start from {start.label}; use the continuous flow (fm or ffjord)"
        )
