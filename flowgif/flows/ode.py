"""ODE solves of a vector field: particle paths, and log-likelihood with the augmented state.

``t = 0`` is the start of the flow (N(0, I), a picture ...) and ``t = 1`` its end. Along a path
of ``dx/dt = v(t, x)`` the log-density obeys ``d log p(x(t)) / dt = -div v(t, x(t))``
(instantaneous change of variables), so ``log p_1(x_1) = log p_0(x_0) - int_0^1 div v dt``:
every likelihood solve takes the start's log-density ``log_p0`` as an argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowgif.errors import FlowgifError
from flowgif.sources.noise import normal_log_prob

LogDensity = Callable[[Tensor], Tensor]


def _odeint(*args: Any, **kwargs: Any) -> Any:
    """torchdiffeq's ``odeint``, imported on first use: it imports SciPy's integrate (0.7 s),
    which flow matching, its previews and renders (``rk4``, :func:`rk4_hermite`) never need."""
    from torchdiffeq import odeint

    with _tolerance_met():
        return odeint(*args, **kwargs)


def _odeint_adjoint(*args: Any, **kwargs: Any) -> Any:
    """torchdiffeq's ``odeint_adjoint``, imported on first use (see :func:`_odeint`)."""
    from torchdiffeq import odeint_adjoint

    with _tolerance_met():
        return odeint_adjoint(*args, **kwargs)


@contextlib.contextmanager
def _tolerance_met() -> Iterator[None]:
    """torchdiffeq's step-size underflow (an adaptive solve that cannot meet its tolerances,
    or a field that blew up) as one line that says what to change."""
    try:
        yield
    except AssertionError as err:
        if "underflow" not in str(err):
            raise
        raise FlowgifError(
            "the ODE solve could not meet its tolerances (its step size underflowed): loosen "
            "solve.atol and solve.rtol (or ffjord.atol, ffjord.rtol), or use a fixed-step "
            "solve.method such as rk4"
        ) from None


__all__ = [
    "AugmentedDynamics",
    "LogDensity",
    "SolveStats",
    "divergence",
    "log_likelihood",
    "paths_with_log_prob",
    "sample_paths",
]


@dataclass
class SolveStats:
    """Filled in by a solve: ``nfe`` is the number of evaluations of the vector field."""

    nfe: int = 0


class _Counted(nn.Module):
    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.field(t, x)


def divergence(
    v: Tensor, x: Tensor, noise: Tensor | None = None, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Divergence of ``v(x)`` and squared Frobenius norm of its Jacobian, each ``(N,)``.

    Args:
        v: ``(N, d)`` output computed from ``x`` with autograd.
        x: ``(N, d)`` input that requires grad.
        noise: ``None`` for the exact values (d backward passes), or a ``(N, d)`` probe ``e``
            for the Hutchinson estimates ``e^T J e`` and ``|e^T J|^2`` (one backward pass).
        create_graph: keep the graph so that the results can be differentiated (training).
    """
    if noise is None:
        rows = [
            torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
            for i in range(x.shape[1])
        ]
        div = sum(r[:, i] for i, r in enumerate(rows))
        frob = sum((r**2).sum(1) for r in rows)
        return div, frob
    g = torch.autograd.grad((v * noise).sum(), x, create_graph=create_graph, retain_graph=True)[0]
    return (g * noise).sum(1), (g**2).sum(1)


class AugmentedDynamics(nn.Module):
    """Right-hand side of the augmented state ``(x, l, kinetic, jacobian)``.

    ``dl/dt = div v``; the two regulariser states integrate ``|v|^2`` and ``|J|_F^2`` (RNODE).

    Args:
        field: ``v(t, x)``.
        noise: a fixed ``(N, d)`` probe for Hutchinson's estimator of the divergence over the
            whole solve, or ``None`` for the exact divergence.
    """

    def __init__(self, field: nn.Module, noise: Tensor | None = None) -> None:
        super().__init__()
        self.field = field
        self.noise = noise
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        x = state[0]
        # torchdiffeq calls us without grad in forward solves and with grad in the adjoint pass;
        # the divergence needs autograd either way, a differentiable graph only in the latter.
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.field(t, x)
            div, frob = divergence(v, x, self.noise, create_graph=create)
        kinetic = (v**2).sum(1)
        out = (v, div, kinetic, frob)
        return out if create else tuple(o.detach() for o in out)


def sample_paths(
    field: nn.Module,
    x0: Tensor,
    times: Tensor,
    method: str = "dopri5",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    steps: int = 10,
    chunk: int = 65536,
    stats: SolveStats | None = None,
    warp: float = 1.0,
) -> Tensor:
    """Carry points along the field, with output at every requested time (one solve per chunk).

    Args:
        field: ``v(t, x)``.
        x0: ``(N, d)`` points at ``times[0]``.
        times: ``(T,)`` monotone times; dense output of the solver gives every one.
        method, atol, rtol: a torchdiffeq solver and its tolerances, or ``rk4``: ``steps``
            classic Runge-Kutta steps with cubic Hermite dense output (4 steps + 1 NFE).
        steps: steps of ``rk4``.
        warp: ``rk4``'s steps crowd toward the later end as ``1 - (1 - u)^warp`` (1: equal).
        chunk: points per solve, bounding memory for very many particles.
        stats: if given, ``stats.nfe`` is increased by the evaluations used.

    Returns:
        ``(T, N, d)`` paths, time first.
    """
    counted = _Counted(field)
    times = times.to(x0)
    out = []
    with torch.no_grad():
        for part in torch.split(x0, chunk):
            if method == "rk4":
                out.append(rk4_hermite(counted, part, times, steps, warp))
            else:
                out.append(_odeint(counted, part, times, method=method, atol=atol, rtol=rtol))
    if stats is not None:
        stats.nfe += counted.nfe
    return torch.cat(out, dim=1)


def rk4_hermite(
    field: nn.Module, x0: Tensor, times: Tensor, steps: int, warp: float = 1.0
) -> Tensor:
    """``steps`` RK4 steps over ``[times[0], times[-1]]`` (increasing), read out at ``times``
    by cubic Hermite interpolation between steps (the slopes are RK4's first stages, so they
    are free). The steps end at ``a + (b - a)(1 - (1 - u)^warp)`` for ``u`` evenly spaced:
    equal for ``warp = 1``, shorter toward ``t = 1`` above it, where a field that carries
    particles onto a picture sharpens.

    For the nearly straight paths of flow matching, 10 steps (41 evaluations) are more accurate
    than dopri5 at a tolerance of 1e-4 (bench/RESULTS.md); 9 steps with ``warp = 2`` land as
    close as 64 equal ones on line art (bench/EXACT.md).
    """
    a, b = float(times[0]), float(times[-1])
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    grid = (a + (b - a) * (1 - (1 - u) ** warp)).to(x0)
    xs, vs = [x0], []
    x = x0
    for i in range(steps):
        t, h = grid[i], grid[i + 1] - grid[i]
        k1 = field(t, x)
        k2 = field(t + h / 2, x + h / 2 * k1)
        k3 = field(t + h / 2, x + h / 2 * k2)
        k4 = field(t + h, x + h * k3)
        vs.append(k1)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        xs.append(x)
    vs.append(field(grid[-1], x))
    x_at, v_at = torch.stack(xs), torch.stack(vs)
    i = torch.searchsorted(grid, times.to(x0), right=True).clamp(1, steps) - 1
    h = grid[i + 1] - grid[i]
    s = ((times.to(x0) - grid[i]) / h)[:, None, None]
    h = h[:, None, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * x_at[i] + h10 * h * v_at[i] + h01 * x_at[i + 1] + h11 * h * v_at[i + 1]


def log_likelihood(
    field: nn.Module,
    x1: Tensor,
    log_p0: LogDensity = normal_log_prob,
    method: str = "dopri5",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    chunk: int = 16384,
    stats: SolveStats | None = None,
) -> Tensor:
    """Exact ``log p_1(x1)`` of the flow at end points ``(N, d)``, exact divergence.

    Integrates the augmented state from t = 1 back to t = 0, then adds the start's
    log-density ``log_p0`` there (as flow_matching's ``compute_likelihood(x_1, log_p0)``).
    """
    dyn = AugmentedDynamics(field)
    times = torch.tensor([1.0, 0.0]).to(x1)
    out = []
    with torch.no_grad():
        for x in torch.split(x1, chunk):
            zero = torch.zeros(len(x), device=x.device, dtype=x.dtype)
            z, delta, _, _ = _odeint(
                dyn, (x, zero, zero, zero), times, method=method, atol=atol, rtol=rtol
            )
            out.append(log_p0(z[-1]) + delta[-1])
    if stats is not None:
        stats.nfe += dyn.nfe
    return torch.cat(out)


def paths_with_log_prob(
    field: nn.Module,
    z: Tensor,
    times: Tensor,
    log_p0: LogDensity = normal_log_prob,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    chunk: int = 16384,
    stats: SolveStats | None = None,
) -> tuple[Tensor, Tensor]:
    """Paths ``(T, N, 2)`` from start points ``z`` and each point's exact log-density
    ``(T, N)``.

    One dopri5 solve of the augmented state ``(x, int div v)`` with dense output at
    ``times`` (from 0): ``log p_t(x_t) = log p_0(z) - int_0^t div v``.
    """
    dyn = AugmentedDynamics(field)
    xs, logps = [], []
    with torch.no_grad():
        for part in torch.split(z, chunk):
            zero = torch.zeros(len(part), device=part.device, dtype=part.dtype)
            x, div, _, _ = _odeint(
                dyn, (part, zero, zero, zero), times.to(part), atol=atol, rtol=rtol
            )
            xs.append(x[..., :2])
            logps.append(log_p0(part)[None] - div)
    if stats is not None:
        stats.nfe += dyn.nfe
    return torch.cat(xs, dim=1), torch.cat(logps, dim=1)


def augmented_solve(
    dyn: AugmentedDynamics,
    x1: Tensor,
    method: str,
    atol: float,
    rtol: float,
    adjoint: bool,
    forward: bool = False,
    steps: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Differentiable solve from the end (t = 1) back to the start (t = 0) for training.

    Returns ``z``, ``delta`` with ``log p_1(x1) = log p_0(z) + delta``, and the integrals of the
    kinetic energy and the Jacobian norm over [0, 1]. With ``forward``, ``x1`` holds start
    points carried from t = 0 to 1 instead: it returns the end points and ``delta`` with
    ``log p_1(end) = log p_0(x1) + delta``. ``steps`` > 0 gives a fixed-step ``method`` (``rk4``,
    ``midpoint``, ``euler``) that many equal steps; without ``adjoint`` the gradient then comes
    from backpropagating through the steps (discretise-then-optimise).
    """
    options = {"step_size": 1.0 / steps} if steps else None
    zero = torch.zeros(len(x1), device=x1.device, dtype=x1.dtype)
    times = torch.tensor([0.0, 1.0] if forward else [1.0, 0.0]).to(x1)
    state = (x1, zero, zero, zero)
    if adjoint:
        out = _odeint_adjoint(
            dyn,
            state,
            times,
            method=method,
            atol=atol,
            rtol=rtol,
            options=options,
            adjoint_options=options,
            adjoint_params=tuple(dyn.field.parameters()),
        )
    else:
        out = _odeint(dyn, state, times, method=method, atol=atol, rtol=rtol, options=options)
    z, delta, kinetic, frob = (o[-1] for o in out)
    if forward:  # log p_1 = log N - int div: the state integrated +div
        return z, -delta, kinetic, frob
    # Integrating from 1 to 0 flips the signs of the two non-negative regulariser integrals.
    return z, delta, -kinetic, -frob
