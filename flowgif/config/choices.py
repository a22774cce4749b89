"""What a config may hold: the names of flow families, objectives and methods, the other
choices, and the range of every number.

Plain strings, so that config imports no registry: the registries (:data:`flowgif.flows.FAMILIES`,
:data:`flowgif.objectives.OBJECTIVES`) live in their wings, and a test checks that their keys
equal :data:`FAMILY_NAMES` and :data:`OBJECTIVE_NAMES`.
"""

from __future__ import annotations

from flowgif.limits import MAX_SEED

__all__ = [
    "CHOICES",
    "COMPUTED",
    "DISCRETE",
    "FAMILY_NAMES",
    "FIXED_STEP",
    "LIMITS",
    "MEMORY_LIMIT",
    "METHODS",
    "NON_NEGATIVE",
    "OBJECTIVE_NAMES",
    "POSITIVE",
]

FAMILY_NAMES = ("field", "realnvp", "planar", "radial", "exact", "ot")  # train.family
OBJECTIVE_NAMES = ("fm", "likelihood", "reverse", "exact")  # train.objective
DISCRETE = ("realnvp", "planar", "radial")  # the discrete flow families
# ``train.method`` (``--method``): one word for an objective and a family.
METHODS: dict[str, dict[str, str]] = {
    "fm": {"train.objective": "fm", "train.family": "field"},
    "ffjord": {"train.objective": "likelihood", "train.family": "field"},
    "reverse": {"train.objective": "reverse", "train.family": "field"},
    **{f: {"train.objective": "likelihood", "train.family": f} for f in DISCRETE},
    # The exact flow is cheap: it works at 512 px, where the density's own cells no longer
    # blur thin strokes (bench/EXACT.md); --resolution still wins.
    "exact": {"train.objective": "exact", "train.family": "exact", "density.resolution": 512},
    # The optimal-transport map, computed the same way (bench/OT.md).
    "ot": {"train.objective": "exact", "train.family": "ot", "density.resolution": 512},
}
COMPUTED = ("exact", "ot")  # the families computed from their ends (train.objective "exact")
FIXED_STEP = ("rk4", "midpoint", "euler")  # torchdiffeq solvers that need a step size

CHOICES: dict[str, tuple[str, ...]] = {
    "density.ink": ("auto", "darkness", "local", "shape"),
    "field.activation": ("silu", "tanh", "softplus", "gelu", "relu"),
    "field.arch": ("mlp", "concatsquash"),
    "train.objective": OBJECTIVE_NAMES,
    "train.family": FAMILY_NAMES,
    "train.schedule": ("cosine", "constant"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16"),
    "fm.time_sampling": ("uniform", "logit_normal"),
    "fm.target": ("auto", "conditional", "exact", "plan"),
    "ffjord.divergence": ("exact", "hutchinson"),
    "ffjord.noise": ("rademacher", "gaussian"),
    "ffjord.solver": ("dopri5", "dopri8", "bosh3", "adaptive_heun", "rk4", "midpoint", "euler"),
    "solve.method": ("dopri5", "dopri8", "bosh3", "adaptive_heun", "rk4", "midpoint", "euler"),
}

# Options that must be positive, or at least zero.
POSITIVE = {
    "density.resolution",
    "density.extent",
    "field.width",
    "field.depth",
    "flow.hidden",
    "flow.depth",
    "train.batch",
    "train.lr",
    "train.checkpoint_every",
    "fm.ot_batch",
    "fm.time_scale",
    "ffjord.atol",
    "ffjord.rtol",
    "solve.atol",
    "solve.rtol",
    "solve.eval_tol",
    "solve.steps",
    "solve.warp",
}


NON_NEGATIVE = {
    "field.time_features",
    "field.fourier_features",
    "field.fourier_scale",
    "field.late_features",
    "field.augment",
    "flow.layers",
    "train.steps",
    "train.minutes",
    "train.weight_decay",
    "train.warmup",
    "train.grad_clip",
    "train.threads",
    "fm.sigma",
    "density.start_blur",
    "ffjord.kinetic",
    "ffjord.steps",
    "ffjord.jacobian",
}


# Upper limits: values past them cannot work on any machine flowgif targets (memory, time).
LIMITS: dict[str, float] = {
    "density.resolution": 4096,
    "density.extent": 1e3,
    "density.start_blur": 100,
    "field.width": 4096,
    "field.depth": 64,
    "field.time_features": 1024,
    "field.fourier_features": 8192,
    "field.fourier_scale": 1e4,
    "field.late_features": 1024,
    "field.augment": 64,
    "flow.layers": 1024,
    "flow.hidden": 4096,
    "flow.depth": 64,
    "train.steps": 1e9,
    "train.minutes": 100_000,
    "train.batch": 4_194_304,
    "train.lr": 10.0,
    "train.warmup": 1e9,
    "train.seed": MAX_SEED,
    "train.threads": 1024,
    "train.checkpoint_every": 1e9,
    "fm.ot_batch": 8192,
    "ffjord.steps": 10_000,
    "solve.steps": 10_000,
    "solve.warp": 16,
}


# Lower limits: below them a float32 solve cannot meet its tolerance (its step underflows), or
# a picture has no room in model units.
FLOORS: dict[str, float] = {
    "solve.warp": 1.0,  # below 1 the steps would crowd toward the start instead
    "ffjord.atol": 1e-8,
    "ffjord.rtol": 1e-7,
    "solve.atol": 1e-8,
    "solve.rtol": 1e-7,
    "solve.eval_tol": 1e-7,
    "density.extent": 1e-2,
}


MEMORY_LIMIT = 2e9  # floats of hidden activations per training step (8 GB): batch x width x depth
