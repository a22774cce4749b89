"""The config sections: documented dataclasses that map 1:1 to the TOML files in ``configs/``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from flowgif.config.choices import METHODS
from flowgif.errors import FlowgifError

__all__ = [
    "SECTIONS",
    "Config",
    "DensityConfig",
    "FFJORDConfig",
    "FMConfig",
    "FieldConfig",
    "FlowConfig",
    "SolveConfig",
    "TrainConfig",
]


@dataclass
class DensityConfig:
    """How a picture becomes a density (see :mod:`flowgif.sources.picture`).

    Attributes:
        resolution: longer side, in pixels, of the working grid; larger pictures are area-averaged
            down to it.
        invert: use lightness instead of darkness as ink (light shapes on a dark ground).
        ink_floor: ink below this level counts as paper and the rest is stretched to [0, 1]; 0.1
            clears the off-white paper of a photographed page.
        extent: half the longer side of the picture in model units; 2 suits N(0, I).
        ink: how pixels become ink (:mod:`flowgif.sources.ink`): ``auto`` (darkness on a clean
            picture, ``local`` on a photo or scan), ``darkness``, ``local`` (darker than the
            paper around it) or ``shape`` (every pixel unlike the background).
        start_blur: a picture at the start of a flow is blurred by this many working-grid
            cells (a Gaussian), so that its log-density is finite off the ink and a morph's
            likelihood exact (:class:`~flowgif.sources.picture.ImageDensity`). A morph's kl
            fell from 0.685 (0.5 cells) to 0.138 (2) and 0.054 (4 cells, 1.6 % of the longer
            side at 256) in 3 minutes (bench/RESULTS.md). Animations start from the picture
            itself, unblurred (:meth:`flowgif.flows.model.Flow.starts`).
    """

    resolution: int = 256
    invert: bool = False
    ink_floor: float = 0.0
    extent: float = 2.0
    ink: str = "auto"
    start_blur: float = 4.0


@dataclass
class FieldConfig:
    """The time-conditioned MLP ``v(t, x)`` (see :mod:`flowgif.flows.field`).

    Attributes:
        width: hidden units per layer.
        depth: number of hidden layers.
        activation: one of ``silu``, ``tanh``, ``softplus``, ``gelu``, ``relu``.
        time_features: sin/cos features of t (0 feeds t itself).
        fourier_features: random Fourier features of x (0 = off); they help sharp edges.
        fourier_scale: standard deviation of the Fourier frequencies, in cycles per model unit.
        late_features: sin/cos pairs of ``log(1 - t)`` (harmonics over ``1 - t`` from 1 to
            1e-3): they tell apart times near the picture, where the field sharpens.
        arch: ``mlp``, or ``concatsquash`` (every layer gated by t, as FFJORD's 2D models).
        augment: extra dimensions of the state (augmented flow): paths may then cross in the
            picture's plane. The extra coordinates are N(0, I) at both ends, so flow matching
            and maximum likelihood both apply, and ``eval``'s ``kl`` becomes an upper bound.
    """

    width: int = 128
    depth: int = 3
    activation: str = "silu"
    time_features: int = 8
    fourier_features: int = 64
    fourier_scale: float = 1.0
    late_features: int = 4
    arch: str = "mlp"
    augment: int = 0


@dataclass
class FlowConfig:
    """The discrete flows of ``train.method = realnvp | planar | radial`` (:mod:`flowgif.flows`).

    Attributes:
        layers: coupling (realnvp) or planar/radial layers; 0 = the family's usual depth
            (realnvp 8, planar and radial 32).
        hidden: hidden units of each coupling's scale-and-shift MLP (realnvp).
        depth: hidden layers of that MLP (realnvp).
        batchnorm: batch-norm layers between the couplings (realnvp).
    """

    layers: int = 0
    hidden: int = 128
    depth: int = 2
    batchnorm: bool = False


@dataclass
class TrainConfig:
    """What every trainer shares.

    Attributes:
        objective: how the flow is fitted (:mod:`flowgif.objectives`): ``fm`` (flow matching,
            no ODE solve while training), ``likelihood`` (maximum likelihood; for the field
            through the adjoint ODE, FFJORD) or ``reverse`` (reverse KL to an energy target,
            sampling from the flow).
        family: what is fitted (:mod:`flowgif.flows`): ``field`` (a continuous flow, the
            vector field of an ODE) or a discrete flow, ``realnvp``, ``planar`` or ``radial``.
            ``method`` names the usual pairs in one word (:data:`METHODS`).
        steps: optimisation steps; 0 means "as many as ``minutes`` allows".
        minutes: wall-time budget; training stops at whichever of steps/minutes comes first.
        batch: points of the picture per step.
        lr: peak Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``cosine`` (decay to 1% over the budget) or ``constant``.
        warmup: steps of linear learning-rate warm-up.
        grad_clip: clip the gradient norm to this (0 = off).
        ema: decay of the exponential moving average of the weights used for sampling (0 = off).
        seed: seeds every random stream.
        threads: torch CPU threads (0 = as many as there are idle cores now, at least one:
            :func:`flowgif.device.pick_threads`; bench/THREADS.md).
        device: ``auto``, ``cpu`` or ``cuda``.
        checkpoint_every: steps between checkpoints.
        precision: matrix precision of the flow-matching steps: ``fp32``, ``bf16`` (autocast;
            2-3x faster where the CPU has AMX or AVX512-BF16, or on a GPU) or ``auto`` (bf16
            where it is native, fp32 elsewhere). Likelihood solves always run in fp32.
        finetune: with ``fm``, the last fraction of the budget fine-tunes by maximum likelihood
            through the adjoint (the ``ffjord`` section's solver settings), a hybrid of both.
    """

    objective: str = "fm"
    family: str = "field"
    steps: int = 0
    minutes: float = 3.0
    batch: int = 1024
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 50
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    precision: str = "auto"
    finetune: float = 0.0

    @property
    def method(self) -> str:
        """The one-word name of this objective and family (the inverse of :data:`METHODS`)."""
        if self.family != "field":
            return self.family
        return {"likelihood": "ffjord"}.get(self.objective, self.objective)


@dataclass
class FMConfig:
    """Conditional flow matching on straight paths from N(0, I) to the picture.

    Attributes:
        ot: pair start and end points by optimal transport (straighter paths): by the whole
            plan between the ends where ``target`` allows (``plan``, or ``auto``), else by an
            exact assignment within each block of ``ot_batch`` points (minibatch OT).
        ot_batch: sub-batch size for the exact OT assignment (cost grows as its cube).
        time_sampling: ``uniform`` or ``logit_normal`` (t = sigmoid(N(time_loc, time_scale))).
        time_loc: location of the logit-normal; > 0 spends more steps near the picture.
        time_scale: scale of the logit-normal.
        late: the fraction of each batch's times drawn near the picture instead, ``1 - t``
            log-uniform in [1e-3, 0.1] (where the field sharpens and a network lags most).
        sigma: standard deviation of the Gaussian tube around each straight path.
        target: what the field regresses on: ``conditional`` (``x1 - x0`` of each pair),
            ``exact`` (the marginal field ``v*(t, x_t)`` itself, computed in closed form by
            :mod:`flowgif.flows.exact`: the same optimum, without the pairs' variance; for
            independent pairs on straight paths in two dimensions, to an end on cells),
            ``plan`` (with ``ot``: each start point paired with where the optimal-transport
            plan between the ends sends it, :mod:`flowgif.flows.transport`, so the target is
            ``T(x0) - x0``, McCann's paths; two dimensions, an end on cells), or ``auto``
            (exact or plan where it applies, conditional elsewhere: with ``sigma``, an
            augmented field, an energy; bench/EXACT.md, bench/OT.md).
    """

    ot: bool = False
    ot_batch: int = 512
    time_sampling: str = "logit_normal"
    time_loc: float = 1.0
    time_scale: float = 1.0
    late: float = 0.25
    sigma: float = 0.0
    target: str = "auto"


@dataclass
class FFJORDConfig:
    """Maximum likelihood through the instantaneous change of variables (FFJORD).

    Attributes:
        divergence: ``exact`` (two backward passes in 2D) or ``hutchinson`` (one, noisy).
        noise: Hutchinson noise, ``rademacher`` or ``gaussian``; fixed per solve.
        solver: torchdiffeq method, e.g. ``dopri5``, or a fixed-step one (``rk4``) with ``steps``.
        steps: equal steps of a fixed-step ``solver`` (0: adaptive solvers only).
        atol: absolute tolerance of the training solves.
        rtol: relative tolerance of the training solves.
        adjoint: backpropagate with the adjoint method (memory O(1) in the number of steps).
        kinetic: weight of the kinetic-energy regulariser (RNODE).
        jacobian: weight of the Jacobian Frobenius-norm regulariser (RNODE).
    """

    divergence: str = "exact"
    noise: str = "rademacher"
    solver: str = "dopri5"
    steps: int = 0
    atol: float = 1e-5
    rtol: float = 1e-5
    adjoint: bool = True
    kinetic: float = 0.0
    jacobian: float = 0.0


@dataclass
class SolveConfig:
    """The ODE solves used to sample, render and evaluate a trained field.

    Attributes:
        method: solver for sampling and rendering: ``rk4`` (fixed steps, cubic Hermite dense
            output; 37 NFE, as accurate as dopri5 at 1e-4 on flow-matching paths with ~60 % of its
            evaluations) or a
            torchdiffeq adaptive method such as ``dopri5`` (for the curvier paths of ``ffjord``).
        atol: absolute tolerance of an adaptive method.
        rtol: relative tolerance of an adaptive method.
        eval_tol: atol = rtol of the likelihood solves in ``flowgif eval``.
        steps: steps of ``method = "rk4"`` (fixed steps with cubic Hermite dense output).
        warp: how ``rk4``'s steps crowd toward the picture, ``t = 1 - (1 - u)^warp`` for ``u``
            evenly spaced (1: equal steps; 2, the default, measured as close as 64 equal steps
            with 9: bench/EXACT.md).
    """

    method: str = "rk4"
    atol: float = 1e-4
    rtol: float = 1e-4
    eval_tol: float = 1e-5
    steps: int = 9
    warp: float = 2.0


@dataclass
class Config:
    """Everything needed to reproduce a run; each attribute is one section of the TOML file."""

    density: DensityConfig = dataclasses.field(default_factory=DensityConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    flow: FlowConfig = dataclasses.field(default_factory=FlowConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    fm: FMConfig = dataclasses.field(default_factory=FMConfig)
    ffjord: FFJORDConfig = dataclasses.field(default_factory=FFJORDConfig)
    solve: SolveConfig = dataclasses.field(default_factory=SolveConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (TOML- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        """Build a validated config from nested dicts; unknown keys and wrong types are errors."""
        config = cls()
        if not isinstance(data, dict):
            raise FlowgifError(f"{source}: expected a table of sections")
        overrides = {}
        for section, values in data.items():
            if section not in SECTIONS:
                raise FlowgifError(
                    f"{source}: unknown section [{section}]; valid: {', '.join(SECTIONS)}"
                )
            if not isinstance(values, dict):
                raise FlowgifError(f"{source}: [{section}] must be a table")
            for key, value in values.items():
                overrides[f"{section}.{key}"] = value
        return config.updated(overrides, source)

    def updated(self, overrides: dict[str, Any], source: str = "option") -> Config:
        """A copy with ``{"section.key": value}`` overrides applied and validated."""
        new = Config(**{s: dataclasses.replace(getattr(self, s)) for s in SECTIONS})
        if "train.method" in overrides:  # the shorthand, spelled out first
            method = overrides["train.method"]
            if method not in METHODS:
                raise FlowgifError(
                    f"{source}: train.method = {method!r} is not one of: {', '.join(METHODS)}"
                )
            overrides = {**METHODS[method], **overrides}
            del overrides["train.method"]
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in SECTIONS:
                raise FlowgifError(f"{source}: unknown section '{section}'")
            part = getattr(new, section)
            types = {f.name: f.type for f in dataclasses.fields(part)}
            if key not in types:
                raise FlowgifError(
                    f"{source}: unknown key '{dotted}'; valid keys of [{section}]: "
                    f"{', '.join(types)}"
                )
            setattr(part, key, _coerce(dotted, value, types[key], source))
        new.validate(source)
        return new

    def validate(self, source: str = "config") -> None:
        """Raise FlowgifError naming the first option out of range (:mod:`.checks`)."""
        from flowgif.config.checks import validate

        validate(self, source)

    def get(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        return getattr(getattr(self, section), key)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def _coerce(dotted: str, value: Any, kind: Any, source: str) -> Any:
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
    ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool)
    )
    if not ok:
        raise FlowgifError(
            f"{source}: {dotted} must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return kind(value)
