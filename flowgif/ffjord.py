"""Maximum-likelihood training of the field through the adjoint ODE (FFJORD, with RNODE terms).

Each step solves the augmented ODE from picture points back to the noise with an adaptive
solver and backpropagates through it with the adjoint method; the loss is the negative
log-likelihood in nats plus optional kinetic-energy and Jacobian-norm penalties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowgif.config import FFJORDConfig
from flowgif.ode import AugmentedDynamics, augmented_solve, normal_log_prob

__all__ = ["ffjord_loss", "hutchinson_noise", "regularised"]


def hutchinson_noise(
    shape: torch.Size, kind: str, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Probe with zero mean and identity covariance: Rademacher (+-1) or standard Gaussian."""
    if kind == "gaussian":
        return torch.randn(shape, device=device, generator=generator)
    return torch.randint(0, 2, shape, device=device, generator=generator).float() * 2 - 1


def ffjord_loss(
    dyn: AugmentedDynamics, x1: Tensor, config: FFJORDConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Regularised loss and the plain negative log-likelihood (nats) of a batch ``x1``."""
    dyn.noise = (
        hutchinson_noise(x1.shape, config.noise, generator, x1.device)
        if config.divergence == "hutchinson"
        else None
    )
    z, delta, kinetic, frob = augmented_solve(
        dyn, x1, config.solver, config.atol, config.rtol, config.adjoint, steps=config.steps
    )
    nll = -(normal_log_prob(z) + delta).mean()
    return regularised(nll, kinetic, frob, config), nll.detach()


def regularised(loss: Tensor, kinetic: Tensor, frob: Tensor, config: FFJORDConfig) -> Tensor:
    """``loss`` plus the RNODE kinetic-energy and Jacobian-norm penalties that are switched on."""
    return loss + config.kinetic * kinetic.mean() + config.jacobian * frob.mean()
