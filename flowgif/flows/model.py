"""What a run holds, behind one interface: a continuous flow or a discrete one, from a start.

Rendering, sampling, evaluation and plots use :class:`Flow`'s operations only, so every family
(the continuous field, RealNVP, planar, radial) and every start (N(0, I), a picture ...) goes
through the same code:

- ``starts(n, generator)``: ``(n, dim)`` draws of the start (an augmented field's extra
  coordinates are N(0, 1));
- ``paths(z, times)``: ``(T, n, 2)`` points at ``times`` in [0, 1] (0 = start, 1 = end);
- ``push(z)``: end points ``(n, 2)`` and their ``log q``, for reverse-KL figures;
- ``log_prob(x)``: ``log q(x)`` at end points (an ELBO for augmented flows); a continuous flow
  solves at ``solve.eval_tol`` unless given ``tol``;

and, with gradients, what the objectives (:mod:`flowgif.objectives`) train through:

- ``fit_log_prob(x1, config, generator)``: ``log q(x1)`` and the regularisers' penalty;
- ``fit_push(z, config)``: end points, their ``log q`` and the penalty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from flowgif.config import FFJORDConfig, SolveConfig
from flowgif.flows.base import DiscreteFlow
from flowgif.flows.field import VectorField
from flowgif.flows.ode import (
    AugmentedDynamics,
    SolveStats,
    augmented_solve,
    log_likelihood,
    paths_with_log_prob,
    sample_paths,
)
from flowgif.sources.base import Distribution
from flowgif.sources.noise import Noise, normal_log_prob
from flowgif.sources.picture import ImageDensity

__all__ = ["ContinuousFlow", "Flow", "LayeredFlow", "augment", "sample"]


class Flow(ABC):
    """The interface (see the module docstring).

    Attributes:
        module: the trainable :class:`torch.nn.Module`.
        start: the distribution at t = 0 (2-D).
        dim: dimension of the state (2, or more for an augmented field).
    """

    module: nn.Module
    start: Distribution
    dim: int

    def starts(self, n: int, generator: torch.Generator, shown: bool = False) -> Tensor:
        """``n`` start points ``(n, dim)``.

        With ``shown`` (points to be drawn), a blurred picture start gives points of the
        picture itself: the blur makes its likelihood exact everywhere, it is not meant to be
        seen, and the field (trained on the blurred picture, which covers the picture) carries
        these points onto the end just the same.
        """
        start = self.start
        if shown and isinstance(start, ImageDensity):
            start = start.sharp()
        z = start.sample(n, generator).to(generator.device)
        if self.dim == 2:
            return z
        extra = torch.randn(n, self.dim - 2, device=z.device, generator=generator)
        return torch.cat([z, extra], dim=1)

    def start_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of start points ``(N, dim)``."""
        out = self.start.log_prob(z[:, :2])
        return out if self.dim == 2 else out + normal_log_prob(z[:, 2:])

    @abstractmethod
    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor: ...

    @abstractmethod
    def push(self, z: Tensor) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def log_prob(
        self,
        x: Tensor,
        stats: SolveStats | None = None,
        generator: torch.Generator | None = None,
        tol: float | None = None,
    ) -> Tensor: ...

    @abstractmethod
    def fit_log_prob(
        self, x1: Tensor, config: FFJORDConfig, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def fit_push(self, z: Tensor, config: FFJORDConfig) -> tuple[Tensor, Tensor, Tensor]: ...


class ContinuousFlow(Flow):
    """A vector field from a start, with the solver settings that sample and evaluate it.

    Args:
        field: ``v(t, x)`` on ``2 + augment`` dimensions.
        solve: the sampling solver; likelihoods use dopri5 at ``solve.eval_tol``.
        start: the distribution at t = 0 (default N(0, I)).
    """

    def __init__(
        self, field: VectorField, solve: SolveConfig, start: Distribution | None = None
    ) -> None:
        self.field = self.module = field
        self.solve = solve
        self.start = start if start is not None else Noise()
        self.dim = field.dim

    def paths(self, z: Tensor, times: Tensor, stats: SolveStats | None = None) -> Tensor:
        s = self.solve
        out = sample_paths(
            self.field, z, times, s.method, s.atol, s.rtol, s.steps, stats=stats, warp=s.warp
        )
        return out[..., :2]

    def paths_with_log_prob(
        self, z: Tensor, times: Tensor, stats: SolveStats | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paths ``(T, N, 2)`` from ``z`` and each point's exact log-density ``(T, N)`` there.

        One solve of the augmented state ``(x, int div v)`` with dense output at ``times``
        (dopri5 at the sampling tolerances): ``log p_t(x_t) = log p_0(z) - int_0^t div v``.
        """
        s = self.solve
        return paths_with_log_prob(
            self.field, z, times, self.start_log_prob, s.atol, s.rtol, stats=stats
        )

    def push(self, z: Tensor) -> tuple[Tensor, Tensor]:
        tol = self.solve.eval_tol
        with torch.no_grad():
            x, delta, _, _ = augmented_solve(
                AugmentedDynamics(self.field), z, "dopri5", tol, tol, adjoint=False, forward=True
            )
        return x[:, :2], self.start_log_prob(z) + delta - normal_log_prob(x[:, 2:])

    def log_prob(
        self,
        x: Tensor,
        stats: SolveStats | None = None,
        generator: torch.Generator | None = None,
        tol: float | None = None,
    ) -> Tensor:
        xa, log_r = augment(x, self.dim - 2, generator)
        tol = tol or self.solve.eval_tol
        log_p0 = self.start_log_prob
        return log_likelihood(self.field, xa, log_p0, "dopri5", tol, tol, stats=stats) - log_r

    def fit_log_prob(
        self, x1: Tensor, config: FFJORDConfig, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Differentiable ``log q(x1)`` through the adjoint solve (FFJORD), and the penalty."""
        xa, log_r = augment(x1, self.dim - 2, generator)
        probe = None
        if config.divergence == "hutchinson":
            probe = _hutchinson(xa.shape, config.noise, generator, xa.device)
        z, delta, penalty = self._fit_solve(xa, config, probe, forward=False)
        return self.start_log_prob(z) + delta - log_r, penalty

    def fit_push(self, z: Tensor, config: FFJORDConfig) -> tuple[Tensor, Tensor, Tensor]:
        """Differentiable end points of start points ``z``, their ``log q`` and the penalty."""
        x, delta, penalty = self._fit_solve(z, config, None, forward=True)
        logq = self.start_log_prob(z) + delta - normal_log_prob(x[:, 2:])
        return x[:, :2], logq, penalty

    def _fit_solve(
        self, x: Tensor, config: FFJORDConfig, probe: Tensor | None, forward: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The training solve (``config``'s solver, adjoint or not) and the RNODE penalty."""
        out, delta, kinetic, frob = augmented_solve(
            AugmentedDynamics(self.field, probe),
            x,
            config.solver,
            config.atol,
            config.rtol,
            config.adjoint,
            forward=forward,
            steps=config.steps,
        )
        return out, delta, config.kinetic * kinetic.mean() + config.jacobian * frob.mean()


class LayeredFlow(Flow):
    """A discrete flow in the same interface (its paths interpolate between layer outputs).

    Its layers carry N(0, I) (their base) to the end, so its start is always N(0, I).
    """

    def __init__(self, flow: DiscreteFlow) -> None:
        self.flow = self.module = flow
        self.start, self.dim = Noise(), flow.dim

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

    def fit_log_prob(
        self, x1: Tensor, config: FFJORDConfig, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        return self.flow.log_prob(x1), torch.zeros((), device=x1.device)

    def fit_push(self, z: Tensor, config: FFJORDConfig) -> tuple[Tensor, Tensor, Tensor]:
        x, logq = self.flow(z)
        return x, logq, torch.zeros((), device=z.device)


def _hutchinson(
    shape: torch.Size, kind: str, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Probe with zero mean and identity covariance: Rademacher (+-1) or standard Gaussian."""
    if kind == "gaussian":
        return torch.randn(shape, device=device, generator=generator)
    return torch.randint(0, 2, shape, device=device, generator=generator).float() * 2 - 1


def augment(x: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """End points ``(N, 2)`` with ``k`` extra N(0, 1) coordinates, and their log-density.

    An augmented flow models ``q(x, a)`` with ``a ~ N(0, I)`` at the end, so
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
    """``n`` end points ``(n, 2)`` of ``flow`` from seeded start points."""
    z = flow.starts(n, torch.Generator(device=device).manual_seed(seed))
    return flow.paths(z, torch.tensor([0.0, 1.0], device=device), stats)[-1]
