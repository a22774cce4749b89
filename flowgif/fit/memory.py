"""What a training run will need in memory, estimated before anything is allocated, so that a
run too large for the machine is refused in one line instead of being killed by the system."""

from __future__ import annotations

import torch

from flowgif.config import Config
from flowgif.errors import FlowgifError
from flowgif.flows import build

__all__ = ["available_bytes", "check_fits", "teacher_bytes", "training_bytes"]

COPIES = 5  # the weights, their gradients, Adam's two moments and the EMA
SAVED = 6  # float tensors the forward pass keeps per hidden unit for the backward (measured
# upper bound: the linear layer's input, the activation's input and output, their gradients)
SHARE = 0.8  # of the memory available now, the most a run may plan to use


def training_bytes(config: Config, pictures: int = 1) -> int:
    """Bytes one training step of ``pictures`` runs of ``config`` needs: the weights and their
    optimiser state (counted on the meta device, nothing allocated), the activations of one
    batch, and where flow matching may regress on the exact field, each picture's posterior
    table (at most :func:`~flowgif.flows.posterior.table_bytes`). The exact flow trains
    nothing: 0."""
    if config.train.objective == "exact":
        return 0
    if _params_bound(config) <= 10_000_000:  # small: built for real (at most 40 MB)
        params = sum(p.numel() for p in build(config).parameters())
    else:  # on the meta device, nothing allocated (it imports torch's compiler, seconds)
        with torch.device("meta"):
            params = sum(p.numel() for p in build(config).parameters())
    width = max(config.field.width, config.flow.hidden)
    depth = max(config.field.depth, config.flow.depth) + 1
    activations = config.train.batch * (config.field.augment + 2 + width * depth)
    return pictures * (4 * (COPIES * params + SAVED * activations) + teacher_bytes(config))


def teacher_bytes(config: Config) -> int:
    """At most the bytes of one picture's posterior table, where a run of ``config`` may
    regress on the exact field (:func:`~flowgif.objectives.flow_matching.exact_may_apply`);
    0 elsewhere."""
    from flowgif.flows.posterior import table_bytes
    from flowgif.objectives.flow_matching import exact_may_apply

    return table_bytes(config.density.resolution) if exact_may_apply(config) else 0


def _params_bound(config: Config) -> int:
    """An upper bound of the weights a config's flow has, from its sizes alone: a field's
    inputs, hidden layers and output, or a discrete flow's layers of coupling networks."""
    f, d = config.field, config.flow
    inputs = 2 + f.augment + 2 * f.time_features + 2 * f.fourier_features + 2
    field = (inputs + 1) * f.width + (f.depth + 1) * (f.width + 1) * (f.width + 4 + f.augment)
    layers = d.layers or 64
    flow = layers * ((d.depth + 2) * (d.hidden + 2) ** 2 + 16)
    return 2 * (field + flow)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a run on ``device`` now (CUDA: the device's; CPU: the system's
    ``MemAvailable``), or None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(config: Config, device: torch.device, pictures: int = 1) -> None:
    """Refuse a run whose estimate (:func:`training_bytes`) is over :data:`SHARE` of the memory
    available on ``device``.

    Raises:
        FlowgifError: it would not fit; says how much it needs and what to lower.
    """
    need = training_bytes(config, pictures)
    free = available_bytes(device)
    if free is None or need <= SHARE * free:
        return
    where = "the GPU" if device.type == "cuda" else "this machine"
    raise FlowgifError(
        f"this run needs about {need / 1e9:.1f} GB to train (train.batch "
        f"{config.train.batch}, field.width {config.field.width}, field.depth "
        f"{config.field.depth}), and {where} has {free / 1e9:.1f} GB free; lower the batch or "
        "the field's size"
    )
