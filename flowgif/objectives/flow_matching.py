"""Conditional flow matching: regress ``v(t, x_t)`` on straight paths from start to end.

With ``x_t = (1 - t) x_0 + t x_1``, ``x_0`` drawn from the flow's start (N(0, I), a picture
...) and ``x_1`` from the end, the field that minimises ``E |v(t, x_t) - (x_1 - x_0)|^2``
carries the start exactly onto the end (the objectives of torchcfm's
``sample_location_and_conditional_flow(x0, x1)`` and flow_matching's ``ProbPath.sample``).
Training needs no ODE solve, which is why it is orders of magnitude cheaper than maximum
likelihood.

Pairing (``fm.ot``): independent draws, or minibatch optimal transport, which reorders the
start points of each block of ``fm.ot_batch`` so that the pairs are an exact
optimal-transport assignment; the learned paths are then nearly straight and do not cross,
so a morph moves each particle nearly as little as optimal transport.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowgif.config import Config, FMConfig
from flowgif.flows.model import Flow, augment
from flowgif.objectives.base import Objective
from flowgif.sources import Source
from flowgif.sources.base import Distribution
from flowgif.sources.picture import ImageDensity
from flowgif.sources.stacked import StackedPictures

__all__ = [
    "FlowMatching",
    "StackedBatches",
    "draw_times",
    "exact_applies",
    "exact_may_apply",
    "fm_batch",
    "fm_loss",
    "ot_pair",
    "plan_applies",
    "plan_map",
    "sample_times",
    "straight_path",
    "times",
    "uses_exact_target",
    "uses_plan",
]


class FlowMatching(Objective):
    """The flow-matching regression on one batch (a vector field only)."""

    fields_only = True
    bf16 = True

    def loss(
        self, flow: Flow, end: Source, config: Config, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        n = config.train.batch
        if uses_plan(config, flow, end):  # x1 = T(x0): the plan's map, no minibatch pairing
            x0 = flow.starts(n, generator)
            x1 = plan_map(end.density, flow.start)(x0)
            fm = dataclasses.replace(config.fm, ot=False)
            loss = fm_loss(flow.module, x0, x1, fm, generator)
            return loss, loss.detach()
        x1 = end.density.sample(n, generator=generator)
        x1, _ = augment(x1, flow.dim - 2, generator)
        x0 = flow.starts(n, generator)
        teacher = None
        if uses_exact_target(config, flow, end):
            teacher = exact_teacher(end.density, flow.start)
        loss = fm_loss(flow.module, x0, x1, config.fm, generator, teacher)
        return loss, loss.detach()


def sample_times(
    n: int, config: FMConfig, generator: torch.Generator, device: torch.device
) -> Tensor:
    """``(n, 1)`` training times in (0, 1): uniform, or logit-normal around ``time_loc``."""
    return times(draw_times(n, config, generator, device), config)


def draw_times(
    n: int, config: FMConfig, generator: torch.Generator, device: torch.device
) -> Tensor:
    """The random numbers of :func:`sample_times`: uniforms, or standard normals."""
    if config.time_sampling == "uniform":
        return torch.rand(n, 1, device=device, generator=generator)
    return torch.randn(n, 1, device=device, generator=generator)


def times(drawn: Tensor, config: FMConfig) -> Tensor:
    """Training times from :func:`draw_times`' numbers (any shape ``(..., n, 1)``): the last
    ``fm.late`` of each batch's rows near the picture, ``1 - t`` log-uniform in [1e-3, 0.1]."""
    if config.time_sampling == "uniform":
        t, uniform = drawn, drawn
    else:
        t = torch.sigmoid(config.time_loc + config.time_scale * drawn)
        uniform = torch.special.ndtr(drawn)
    n = drawn.shape[-2] if drawn.dim() >= 2 else 0
    late = round(n * config.late)
    if late:
        near = 1 - torch.exp(math.log(1e-3) + uniform * math.log(100.0))
        rows = torch.arange(n, device=drawn.device).reshape(n, 1) >= n - late
        t = torch.where(rows, near, t)
    return t


def ot_pair(x0: Tensor, x1: Tensor, block: int) -> Tensor:
    """Reorder ``x0`` so that ``(x0[i], x1[i])`` is an exact optimal-transport pairing within
    each block of ``block`` points (squared distances; the Hungarian algorithm of SciPy's
    ``linear_sum_assignment``, cubic in ``block``; bench/ot.py measures the block sizes)."""
    from scipy.optimize import linear_sum_assignment  # heavy import, only when OT is on

    out = torch.empty_like(x0)
    for start in range(0, len(x0), block):
        a, b = x0[start : start + block], x1[start : start + block]
        cost = torch.cdist(b.float(), a.float()).pow(2).cpu().numpy()
        _, cols = linear_sum_assignment(cost)
        out[start : start + block] = a[torch.as_tensor(cols, device=a.device)]
    return out


def fm_batch(
    x0: Tensor, x1: Tensor, config: FMConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of the regression from start points ``x0`` and end points ``x1`` ``(N, d)``:
    times ``t`` ``(N, 1)``, points ``x_t`` on the paths, and the target velocities."""
    if config.ot:
        x0 = ot_pair(x0, x1, config.ot_batch)
    t = sample_times(len(x1), config, generator, x1.device)
    noise = None
    if config.sigma > 0:
        noise = torch.randn(x1.shape, device=x1.device, generator=generator)
    xt, target = straight_path(x0, x1, t, noise, config)
    return t, xt, target


def straight_path(
    x0: Tensor, x1: Tensor, t: Tensor, noise: Tensor | None, config: FMConfig
) -> tuple[Tensor, Tensor]:
    """The point ``x_t = (1 - t) x0 + t x1`` (plus ``fm.sigma`` times ``noise``) on each
    straight path, and its velocity ``x1 - x0``: the regression's input and target."""
    xt = (1 - t) * x0 + t * x1
    if config.sigma > 0:
        xt = xt + config.sigma * noise
    return xt, x1 - x0


def fm_loss(
    field: nn.Module,
    x0: Tensor,
    x1: Tensor,
    config: FMConfig,
    generator: torch.Generator,
    teacher: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Flow-matching loss on a batch of start points ``x0`` and end points ``x1`` ``(N, d)``;
    with a ``teacher`` (``fm.target = "exact"``) the target at ``(t, x_t)`` is its
    ``v*(t, x_t)`` instead of ``x1 - x0``."""
    t, xt, target = fm_batch(x0, x1, config, generator)
    if teacher is not None:
        target = teacher(t, xt)
    return (field(t, xt) - target).pow(2).sum(1).mean()


def uses_exact_target(config: Config, flow: Flow, end: Source) -> bool:
    """Whether this run regresses on the exact field (:func:`exact_applies`)."""
    return exact_applies(config, flow.dim, flow.start, end.density)


def exact_may_apply(config: Config) -> bool:
    """The config's part of :func:`exact_applies`: flow matching of a two-dimensional field
    on independent pairs and straight paths (no tube), ``fm.target`` not ``conditional``.
    Whether it does apply depends on the ends too (a picture, word or toy as the end)."""
    fm = config.fm
    return (
        config.train.objective == "fm"
        and fm.target != "conditional"
        and not fm.ot
        and fm.sigma == 0
        and not config.field.augment
    )


def exact_applies(config: Config, dim: int, start: Distribution, end: Distribution) -> bool:
    """Whether a run regresses on the exact field: ``fm.target`` ``exact``, or ``auto`` where
    the exact field applies (independent pairs on straight paths, no tube, two dimensions, an
    end on cells, from N(0, I) or a picture). The same rule for a solo and a stacked run.

    Raises:
        FlowgifError: ``exact`` asked where it does not apply.
    """
    from flowgif.errors import FlowgifError

    if config.fm.target == "conditional":
        return False
    fits = exact_may_apply(config) and _ends_on_cells(dim, start, end)
    if config.fm.target == "exact" and not fits:
        raise FlowgifError(
            'fm.target = "exact" is the field of independent pairs on straight paths in two '
            "dimensions, to a picture, word or toy: use conditional here"
        )
    return fits


def _ends_on_cells(dim: int, start: Distribution, end: Distribution) -> bool:
    """Two dimensions, an end on cells (a picture, word or toy), from N(0, I) or a picture:
    where the exact field and the plan are computed."""
    from flowgif.sources.noise import Noise

    return dim == 2 and isinstance(end, ImageDensity) and isinstance(start, (Noise, ImageDensity))


def uses_plan(config: Config, flow: Flow, end: Source) -> bool:
    """Whether this run pairs by the optimal-transport plan (:func:`plan_applies`)."""
    return plan_applies(config, flow.dim, flow.start, end.density)


def plan_may_apply(config: Config) -> bool:
    """The config's part of :func:`plan_applies`: flow matching of a two-dimensional field
    with optimal-transport pairs on straight paths, ``fm.target`` ``auto`` or ``plan``."""
    fm = config.fm
    return (
        config.train.objective == "fm"
        and fm.target in ("auto", "plan")
        and fm.ot
        and fm.sigma == 0
        and not config.field.augment
    )


def plan_applies(config: Config, dim: int, start: Distribution, end: Distribution) -> bool:
    """Whether a run pairs each start point with where the optimal-transport plan between
    its ends sends it (``x1 = T(x0)``): ``fm.target`` ``plan``, or ``auto`` with ``fm.ot``
    where the plan applies (two dimensions, an end on cells, from N(0, I) or a picture). The
    same rule for a solo and a stacked run.

    Raises:
        FlowgifError: ``plan`` asked where it does not apply.
    """
    from flowgif.errors import FlowgifError

    fits = plan_may_apply(config) and _ends_on_cells(dim, start, end)
    if config.fm.target == "plan" and not fits:
        raise FlowgifError(
            'fm.target = "plan" pairs by the optimal-transport plan between two ends in two '
            "dimensions, to a picture, word or toy: use conditional here"
        )
    return fits


_MAPS: dict[tuple[int, int], tuple[object, object, Callable]] = {}


def plan_map(end: Distribution, start: Distribution) -> Callable[[Tensor], Tensor]:
    """``x0 -> T(x0)``, the optimal-transport flow's map from ``start`` to ``end``
    (:mod:`flowgif.flows.transport`), solved once per pair of ends (a second or two)."""
    key = (id(end), id(start))
    if key not in _MAPS:
        _MAPS.clear()
        _MAPS[key] = (end, start, map_of(end, start))
    return _MAPS[key][2]


_TEACHERS: dict[tuple[int, int], tuple[object, object, Callable]] = {}


def exact_teacher(end: Distribution, start: Distribution) -> Callable[[Tensor, Tensor], Tensor]:
    """``v*(t, x)`` of the straight path from ``start`` to ``end`` (:mod:`flowgif.flows.exact`),
    tabled once per pair of ends (a few seconds) and kept for the run's steps."""
    from flowgif.errors import FlowgifError
    from flowgif.flows.posterior import Posterior, Table

    key = (id(end), id(start))
    if key not in _TEACHERS:
        if not isinstance(end, ImageDensity):
            raise FlowgifError(
                'fm.target = "exact" needs an end on cells (a picture, word or toy)'
            )
        _TEACHERS.clear()  # one run at a time: the table is large
        _TEACHERS[key] = (end, start, teacher_of(Table(Posterior(end, start)).to(end.device)))
    return _TEACHERS[key][2]


def teacher_of(table: object) -> Callable[[Tensor, Tensor], Tensor]:
    """The regression target ``v*(t, x)`` read from a posterior :class:`Table`."""
    return lambda t, x: table.velocity(t, x).detach()  # type: ignore[attr-defined]


class StackedBatches:
    """Each step's flow-matching batches of M pictures, ``(M, n, ...)``.

    Every picture draws its random numbers from its own generator in a solo step's order (its
    end's, its start's, the times', the noise's: :meth:`Distribution.draws`); the numbers are
    then turned into points for all pictures at once, one operation per kind of work rather
    than per picture (:class:`~flowgif.sources.picture.StackedPictures`), so the per-picture
    cost of a step on a GPU is its few random-number kernels.

    Where a solo run of a picture regresses on the exact field (:func:`exact_applies`), so
    does its place in the stack: each such picture keeps its own posterior table
    (:class:`~flowgif.flows.posterior.Table`) and its targets are read from it, as its solo
    run reads them.
    """

    def __init__(
        self, ends: list[Distribution], starts: list[Distribution], config: Config
    ) -> None:
        from flowgif.flows.posterior import Posterior, Table

        self.ends, self.starts, self.fm, self.n = ends, starts, config.fm, config.train.batch
        self.together = [_together(ends), _together(starts)]
        self.teachers = [
            teacher_of(Table(Posterior(end, start)).to(end.device))
            if exact_applies(config, 2, start, end)
            else None
            for end, start in zip(ends, starts, strict=True)
        ]
        self.maps = [
            map_of(end, start) if plan_applies(config, 2, start, end) else None
            for end, start in zip(ends, starts, strict=True)
        ]

    def __call__(
        self, gens: list[torch.Generator], active: set[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Times ``t`` ``(M, n, 1)``, points ``x_t`` and target velocities ``(M, n, 2)``;
        a picture not in ``active`` draws nothing (its stream stays where it is) and gets
        filler."""
        n, fm = self.n, self.fm
        device = gens[0].device
        ends, starts, raw_t, noise = [], [], [], []
        for m, gen in enumerate(gens):
            if m not in active:
                ends.append(None)
                starts.append(None)
                raw_t.append(torch.zeros(n, 1, device=device))
                noise.append(torch.zeros(n, 2, device=device))
                continue
            # a picture paired by the plan draws no end points (as its solo run)
            ends.append(None if self.maps[m] else self.ends[m].draws(n, gen))
            starts.append(self.starts[m].draws(n, gen))
            raw_t.append(draw_times(n, fm, gen, device))
            if fm.sigma > 0:
                noise.append(torch.randn(n, 2, device=device, generator=gen))
        x1 = self._place(self.ends, self.together[0], ends, device)
        x0 = self._place(self.starts, self.together[1], starts, device)
        for m in active:
            mapped = self.maps[m]
            if mapped is not None:
                x1[m] = mapped(x0[m])
            elif fm.ot:
                x0[m] = ot_pair(x0[m], x1[m], fm.ot_batch)
        t = times(torch.stack(raw_t), fm)
        xt, target = straight_path(x0, x1, t, torch.stack(noise) if fm.sigma > 0 else None, fm)
        if any(self.teachers):
            target = target.clone()
            for m in active:
                teacher = self.teachers[m]
                if teacher is not None:
                    target[m] = teacher(t[m], xt[m])
        return t, xt, target

    def _place(
        self,
        dists: list[Distribution],
        together: StackedPictures | None,
        draws: list[list[torch.Tensor] | None],
        device: torch.device,
    ) -> torch.Tensor:
        if together is not None:
            return together.place(draws, self.n)
        zero = torch.zeros(self.n, 2, device=device)
        rows = [
            d.place(mine).to(device) if mine else zero
            for d, mine in zip(dists, draws, strict=True)
        ]
        return torch.stack(rows)


def map_of(end: Distribution, start: Distribution) -> Callable[[Tensor], Tensor]:
    """``x0 -> T(x0)`` from the blurred ``start`` the points are drawn from to ``end`` (each
    call its own: a stack keeps one per picture; :func:`plan_map` keeps the last)."""
    from flowgif.flows.transport import OTFlow

    flow = OTFlow(end, start, sharp=False)  # type: ignore[arg-type]
    return lambda x0: flow.ends(x0).detach()


def _together(dists: list[Distribution]) -> StackedPictures | None:
    """The pictures placed as one, when every distribution is a picture."""
    if all(isinstance(d, ImageDensity) for d in dists):
        return StackedPictures(dists)  # type: ignore[arg-type]
    return None
