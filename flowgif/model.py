"""What a run holds, behind one interface: a continuous flow or a discrete one.

Rendering, sampling, evaluation and plots only use :class:`Flow`'s four operations, so every
method (flow matching, FFJORD, RealNVP, planar, radial) goes through the same code:

- ``noise(n, generator)``: ``(n, dim)`` draws of the base N(0, I);
- ``paths(z, times)``: ``(T, n, 2)`` points at ``times`` in [0, 1] (0 = noise, 1 = picture);
- ``push(z)``: samples ``(n, 2)`` and their ``log q``, for reverse-KL figures;
- ``log_prob(x)``: ``log q(x)`` at picture-side points (an ELBO for augmented flows); a
  continuous flow solves at ``solve.eval_tol`` unless given ``tol``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowgif.config import Config, SolveConfig
from flowgif.field import VectorField
from flowgif.flows import FAMILIES, DiscreteFlow, build_flow
from flowgif.ode import (
    AugmentedDynamics,
    SolveStats,
    augmented_solve,
    log_likelihood,
    normal_log_prob,
    paths_with_log_prob,
    sample_paths,
)

__all__ = ["ContinuousFlow", "Flow", "augment", "build_model", "sample", "wrap"]


class Flow:
    """The interface (see the module docstring); ``dim`` is the dimension of the noise."""

    dim: int

    def noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim, device=generator.device, generator=generator)


class ContinuousFlow(Flow):
    """A vector field with the solver settings that sample and evaluate it.

    Args:
        field: ``v(t, x)`` on ``2 + augment`` dimensions.
        solve: the sampling solver; likelihoods use dopri5 at ``solve.eval_tol``.
    """

    def __init__(self, field: VectorField, solve: SolveConfig) -> None:
        self.field, self.solve = field, solve
        self.dim = field.dim

    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor:
        s = self.solve
        out = sample_paths(self.field, z, times, s.method, s.atol, s.rtol, s.steps, stats=stats)
        return out[..., :2]

    def paths_with_log_prob(
        self, z: Tensor, times: Tensor, stats: SolveStats | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paths ``(T, N, 2)`` from ``z`` and each point's exact log-density ``(T, N)`` there.

        One solve of the augmented state ``(x, int div v)`` with dense output at ``times``
        (dopri5 at the sampling tolerances): ``log p_t(x_t) = log N(z) - int_0^t div v``.
        """
        s = self.solve
        return paths_with_log_prob(self.field, z, times, s.atol, s.rtol, stats=stats)

    def push(self, z: Tensor) -> tuple[Tensor, Tensor]:
        tol = self.solve.eval_tol
        with torch.no_grad():
            x, delta, _, _ = augmented_solve(
                AugmentedDynamics(self.field), z, "dopri5", tol, tol, adjoint=False, forward=True
            )
        return x[:, :2], normal_log_prob(z) + delta - normal_log_prob(x[:, 2:])

    def log_prob(
        self,
        x: Tensor,
        stats: SolveStats | None = None,
        generator: torch.Generator | None = None,
        tol: float | None = None,
    ) -> Tensor:
        xa, log_r = augment(x, self.dim - 2, generator)
        tol = tol or self.solve.eval_tol
        return log_likelihood(self.field, xa, "dopri5", tol, tol, stats=stats) - log_r


class _Discrete(Flow):
    """A discrete flow in the same interface (its paths interpolate between layer outputs)."""

    def __init__(self, flow: DiscreteFlow) -> None:
        self.flow, self.dim = flow, flow.dim

    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.flow.paths(part, times) for part in z.split(65536)], dim=1)

    def push(self, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self.flow(z)

    def log_prob(
        self,
        x: Tensor,
        stats: SolveStats | None = None,
        generator: torch.Generator | None = None,
        tol: float | None = None,
    ) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.flow.log_prob(part) for part in x.split(65536)])


def build_model(config: Config) -> nn.Module:
    """The trainable module of ``config``: a vector field or a discrete flow (untrained)."""
    method = config.train.method
    if method in FAMILIES:
        return build_flow(method, config.flow, config.train.seed)
    return VectorField(config.field, 2 + config.field.augment)


def wrap(model: nn.Module, config: Config) -> Flow:
    """The :class:`Flow` interface over a trained module."""
    if isinstance(model, DiscreteFlow):
        return _Discrete(model)
    return ContinuousFlow(model, config.solve)


def augment(x: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Picture points ``(N, 2)`` with ``k`` extra N(0, 1) coordinates, and their log-density.

    An augmented flow models ``q(x, a)`` with ``a ~ N(0, I)`` at the picture end, so
    ``log q(x) >= E_a[log q(x, a) - log N(a)]``: training on it is sound, and ``kl`` computed
    from it is an upper bound.
    """
    if k == 0:
        return x, torch.zeros(len(x), device=x.device, dtype=x.dtype)
    a = torch.randn(len(x), k, device=x.device, dtype=x.dtype, generator=generator)
    return torch.cat([x, a], dim=1), normal_log_prob(a)


def sample(
    flow: Flow,
    n: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    stats: SolveStats | None = None,
) -> Tensor:
    """``n`` samples ``(n, 2)`` of ``flow`` from seeded noise."""
    z = flow.noise(n, torch.Generator(device=device).manual_seed(seed))
    return flow.paths(z, torch.tensor([0.0, 1.0], device=device), stats)[-1]
