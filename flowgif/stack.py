"""Stacked training: M pictures in one process, as one model with a leading picture axis.

A GPU runs one flow-matching step of one picture in about the time it takes to launch its
kernels, whatever the number of points; stacking M pictures into one
:class:`~flowgif.flows.stacked.StackedField` runs the same kernels once for all M. Everything
that is per picture in a solo run stays per picture here:

- random streams: each picture draws its batch from its own generator, in the order a solo run
  draws it, so a picture's stream does not depend on its stack-mates (and a picture resumed in
  another stack, or alone, continues the same stream);
- the loss is the sum of the pictures' losses, so each picture's gradient is its own;
- Adam (element-wise; its step count and learning rate per picture), gradient clipping by each
  picture's own norm, the warm-up and cosine schedule over each picture's budget, the EMA;
- a non-finite loss rolls back that picture alone (to its last good weights, at half its
  learning rate); one that keeps diverging fails alone, its last checkpoint kept;
- each picture is an ordinary run folder (:class:`flowgif.train.RunFolder`): its checkpoint is
  unstacked on save, so ``render``, ``eval``, ``sample`` and ``train --resume`` read it as any
  other.

On the CPU a stack of one computes bit for bit what :func:`flowgif.train.train` computes with
the same seed (tests/test_stack.py); a picture in a larger stack matches its solo run to
floating-point rounding (the batched matrix products may round differently).

What stacks: flow matching (``train.objective = fm``) of the mlp vector field
(:func:`stack_problem`); pictures of any sizes and aspect ratios, from any start.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch

from flowgif.config import Config
from flowgif.errors import FlowgifError, Interrupted
from flowgif.flows import build
from flowgif.flows.stacked import StackedField, stackable
from flowgif.objectives.flow_matching import draw_times, ot_pair, times
from flowgif.optim import BETAS, EPS, adam_state
from flowgif.run import native_bf16
from flowgif.sources.base import Distribution
from flowgif.sources.picture import ImageDensity, StackedPictures
from flowgif.train import (
    GOOD_EVERY,
    MAX_RETRIES,
    Progress,
    RunFolder,
    TrainResult,
    TrainState,
    _fraction,
    budget_text,
    lr_factor,
)

__all__ = ["Batches", "Outcome", "auto_stack", "picture_memory", "stack_problem", "train_stack"]

CPU_STACK = 1  # bench/STACK.md: on a compute-bound CPU core stacking gains little or nothing
MAX_STACK = 256  # beyond this the per-picture draws, not the kernels, bound a step

Outcome = TrainResult | FlowgifError | Interrupted
BETA1, BETA2 = BETAS


def stack_problem(config: Config) -> str:
    """Why runs of ``config`` cannot train stacked, or "" when they can."""
    tc = config.train
    if tc.objective != "fm":
        return "only flow matching (train.objective fm) trains stacked"
    if tc.finetune:
        return "train.finetune (a likelihood phase) does not train stacked"
    if config.field.augment:
        return "an augmented field (field.augment) does not train stacked"
    return stackable(build(config))


def auto_stack(config: Config, count: int, device: torch.device | None = None) -> int:
    """How many of ``count`` pictures to stack: 1 on a CPU (or when the config does not
    stack), on CUDA as many as half the free memory holds (:func:`picture_memory`), at most
    :data:`MAX_STACK`."""
    from flowgif.run import resolve_device

    device = device or resolve_device(config.train.device)
    if count <= 1 or stack_problem(config):
        return 1
    if device.type != "cuda":
        return min(count, CPU_STACK)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(count, MAX_STACK, int(0.5 * free / picture_memory(config, device))))


def picture_memory(config: Config, device: torch.device, m: int = 8) -> float:
    """Bytes one stacked picture needs on ``device``, measured: the peak of one training
    step of ``m`` stacked pictures (activations, gradients) plus Adam's two moments and the
    EMA, divided by ``m``. CUDA only (a CPU has no allocator statistics to read)."""
    if device.type != "cuda":
        raise ValueError("picture_memory measures a CUDA device")
    stack = StackedField([build(config) for _ in range(m)]).to(device)
    weights = sum(p.numel() * p.element_size() for p in stack.parameters())
    n = config.train.batch
    x = torch.randn(m, n, 2, device=device)
    t = torch.rand(m, n, 1, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    bf16 = config.train.precision == "bf16" or (
        config.train.precision == "auto" and native_bf16(device)
    )
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        loss = (stack(t, x) - x).pow(2).sum()
    loss.backward()
    peak = torch.cuda.max_memory_allocated(device) - before
    return (peak + 3 * weights) / m


def _loaded(run: RunFolder, fresh: torch.nn.Module, device: torch.device) -> TrainState:
    """A run's state as its solo run has it: fresh weights (those of a solo run of the same
    seed), or its checkpoint's.

    Raises:
        FlowgifError: the checkpoint does not fit the config.
    """
    state = TrainState(run.config, copy.deepcopy(fresh), device)
    if run.resume is not None:
        state.resume(run.resume)
        if len(set(state.opt.steps)) != 1:
            raise FlowgifError(
                "the checkpoint does not fit its own config, so it cannot be resumed (its "
                "optimizer steps differ between weights)"
            )
    return state


class _Stack:
    """The state of M runs: stacked weights, EMA and Adam moments; per-picture counters."""

    def __init__(self, config: Config, runs: list[TrainState]) -> None:
        self.tc = config.train
        self.gens = [r.gen for r in runs]
        self.step = [r.step for r in runs]
        self.spent = [r.spent for r in runs]
        self.adam_step = [r.opt.steps[0] for r in runs]
        self.lr_scale = [r.lr_scale for r in runs]
        self.losses = [r.losses for r in runs]
        self.model = StackedField([r.model for r in runs])
        self.ema = None
        if self.tc.ema > 0:
            self.ema = StackedField([r.ema for r in runs]).requires_grad_(False)
        self.params = self.model.tensors()
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            for m, run in enumerate(runs):
                for theirs, stacked in ((run.opt.exp_avg, self.exp_avg),
                                        (run.opt.exp_avg_sq, self.exp_avg_sq)):  # fmt: skip
                    for mine, moment in zip(StackedField.parts(stacked, m), theirs, strict=True):
                        if moment is not None:  # None: that weight never stepped
                            mine.copy_(moment)
        self.good = [self.snapshot(m) for m in range(len(runs))]

    def _tensors(self) -> list[list[torch.Tensor]]:
        """Every stacked tensor a step changes, grouped: weights, moments, EMA."""
        groups = [self.params, self.exp_avg, self.exp_avg_sq]
        return groups + ([self.ema.tensors()] if self.ema is not None else [])

    def snapshot(self, m: int) -> tuple[list[torch.Tensor], int]:
        """Picture ``m``'s known-good state: copies of its rows of :meth:`_tensors`, and its
        Adam step count."""
        with torch.no_grad():
            return [t[m].clone() for group in self._tensors() for t in group], self.adam_step[m]

    def restore(self, m: int, snap: tuple[list[torch.Tensor], int]) -> None:
        rows, self.adam_step[m] = snap
        with torch.no_grad():
            for t, saved in zip((t for g in self._tensors() for t in g), rows, strict=True):
                t[m].copy_(saved)

    def payload(self, m: int, lr: float) -> dict:
        """Picture ``m``'s checkpoint, as a solo run writes it (unstacked)."""
        field = self.model.field(m)
        moments = [
            (self.adam_step[m], avg.detach(), avg_sq.detach())
            for avg, avg_sq in zip(
                StackedField.parts(self.exp_avg, m), StackedField.parts(self.exp_avg_sq, m),
                strict=True,
            )
        ]  # fmt: skip
        return {
            "field": field.state_dict(),
            "ema": self.ema.field(m).state_dict() if self.ema is not None else None,
            "optimizer": adam_state(lr, self.tc.weight_decay, moments),
            "generator": self.gens[m].get_state(),
            "step": self.step[m],
            "seconds": self.spent[m],
            "losses": torch.tensor(self.losses[m], dtype=torch.float64),
            "lr_scale": self.lr_scale[m],
        }

    def update(
        self, stepping: list[int], lrs: list[float], idle: list[int], total: torch.Tensor
    ) -> None:
        """Per-picture gradient clipping, one Adam step and one EMA update for the pictures
        in ``stepping``; the ``idle`` ones are left exactly as they are.

        Mirrors :class:`flowgif.optim.Adam` (``torch.optim.Adam``'s arithmetic) and
        ``nn.utils.clip_grad_norm_`` operation by operation, so that each picture's arithmetic
        is its solo run's.
        """
        tc, count = self.tc, len(self.step)
        device = self.params[0].device
        grads = [p.grad for p in self.params]
        coef = torch.clamp((tc.grad_clip or math.inf) / (total + 1e-6), max=1.0)

        def column(values: list[float]) -> torch.Tensor:  # one number per picture
            return torch.tensor(values, dtype=torch.float32, device=device)

        def per(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return values.reshape(count, *[1] * (like.dim() - 1))

        for m in stepping:
            self.adam_step[m] += 1
        steps = [float(max(s, 1)) for s in self.adam_step]
        size = column([-lr / (1 - BETA1**s) for lr, s in zip(lrs, steps, strict=True)])
        root = column([(1 - BETA2**s) ** 0.5 for s in steps])
        decay = [min(tc.ema, (1 + s) / (10 + s)) for s in self.step]
        weight = column([1 - d for d in decay])
        kept = self._keep(idle)
        with torch.no_grad():
            for p, g, avg, avg_sq in zip(
                self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True
            ):
                g.mul_(per(coef, g))
                if tc.weight_decay:
                    g = g.add(p, alpha=tc.weight_decay)
                avg.lerp_(g, 1 - BETA1)
                avg_sq.mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
                denom = (avg_sq.sqrt() / per(root, p)).add_(EPS)
                p.add_(per(size, p) * avg / denom)
            if self.ema is not None:
                for mine, theirs in zip(self.ema.tensors(), self.params, strict=True):
                    mine.lerp_(theirs, per(weight, mine))
        self._put_back(idle, kept)

    def _keep(self, idle: list[int]) -> list[torch.Tensor]:
        if not idle:
            return []
        rows = torch.tensor(idle, device=self.params[0].device)
        with torch.no_grad():
            return [t.index_select(0, rows) for g in self._tensors() for t in g]

    def _put_back(self, idle: list[int], kept: list[torch.Tensor]) -> None:
        if not idle:
            return
        rows = torch.tensor(idle, device=self.params[0].device)
        with torch.no_grad():
            for t, saved in zip((t for g in self._tensors() for t in g), kept, strict=True):
                t.index_copy_(0, rows, saved)


def train_stack(
    runs: list[RunFolder],
    device: torch.device,
    progress: Callable[[list[Progress]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Train the runs together; each gets its checkpoints as a solo run would.

    Args:
        runs: opened run folders (:func:`flowgif.train.open_run`) of one training config
            (``train``, ``fm``, ``field``), which :func:`stack_problem` accepts; new or to
            resume, of any pictures and starts.
        device: where to train.
        progress: called after every stacked step with each picture's progress.
        stop: asked between steps; when it returns True every unfinished picture is
            checkpointed (as :func:`flowgif.train.train` does) and gets an ``Interrupted``.

    Returns:
        One outcome per run, in order: its :class:`~flowgif.train.TrainResult` (the EMA
        weights when on), the ``FlowgifError`` it failed with (a checkpoint that does not fit,
        a budget already filled, training that diverged) or ``Interrupted``.
    """
    if not runs:
        return []
    config = runs[0].config
    if any(_training(run.config) != _training(config) for run in runs):
        raise FlowgifError("stacked runs share one training config (train, fm, field)")
    problem = stack_problem(config)
    if problem:
        raise FlowgifError(problem)
    tc = config.train
    if tc.threads and device.type == "cpu":
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    fresh = build(config).to(device)  # every new run starts where a solo run of the seed does
    outcomes: list[Outcome | None] = [None] * len(runs)
    pictures: dict[int, TrainState] = {}
    for m, run in enumerate(runs):  # a checkpoint that does not fit fails its picture alone
        try:
            pictures[m] = _loaded(run, fresh, device)
        except FlowgifError as err:
            outcomes[m] = err
    if pictures:
        trained = _train(
            [runs[m] for m in pictures], list(pictures.values()), device, progress, stop
        )
        for m, outcome in zip(pictures, trained, strict=True):
            outcomes[m] = outcome
    return [o for o in outcomes if o is not None]


def _train(
    runs: list[RunFolder],
    pictures: list[TrainState],
    device: torch.device,
    progress: Callable[[list[Progress]], None] | None,
    stop: Callable[[], bool] | None,
) -> list[Outcome]:
    config = runs[0].config
    tc, count = config.train, len(runs)
    batches = Batches(
        [run.end.density.to(device) for run in runs],
        [run.start.density.to(device) for run in runs],
        config,
    )
    state = _Stack(config, pictures)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))
    budget = tc.minutes * 60.0
    outcomes: list[Outcome | None] = [None] * count
    saved = [
        s if run.resume is not None else None for s, run in zip(state.step, runs, strict=True)
    ]
    fraction = [
        _fraction(tc.steps, budget, s, t) for s, t in zip(state.step, state.spent, strict=True)
    ]
    for m, run in enumerate(runs):
        if run.resume is not None and fraction[m] >= 1.0:
            outcomes[m] = FlowgifError(
                f"the run already has {state.step[m]} steps ({state.spent[m]:.0f} s), which "
                f"fills its budget ({budget_text(tc.steps, tc.minutes)}); the budget counts "
                "from the run's start: give more steps or minutes to train further"
            )
    retries, lrs = [0] * count, [tc.lr] * count
    last_loss = [math.nan] * count
    clock = time.perf_counter()
    began = list(state.spent)

    def save(m: int) -> None:
        runs[m].save(state.payload(m, lrs[m]))
        saved[m] = state.step[m]

    def training() -> list[int]:
        return [m for m in range(count) if outcomes[m] is None and fraction[m] < 1.0]

    try:
        while active := training():
            if stop is not None and stop():
                for m in active:
                    if state.step[m] != saved[m] and state.step[m] > 0:
                        save(m)
                    outcomes[m] = Interrupted(state.step[m], saved[m] == state.step[m], saved[m])
                break
            for m in active:
                lrs[m] = tc.lr * state.lr_scale[m] * lr_factor(config, state.step[m], fraction[m])
            t, xt, target = batches(state.gens, set(active))
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                losses = (state.model(t, xt) - target).pow(2).sum(-1).mean(-1)
            taking = torch.zeros(count, dtype=torch.bool, device=device)
            taking[active] = True
            for p in state.params:
                p.grad = None
            torch.where(taking, losses, 0.0).sum().backward()
            total = _norms(state.params)
            values, norms = torch.stack([losses.detach().float(), total]).tolist()  # one sync
            stepping = []
            for m in active:
                last_loss[m] = values[m]
                if math.isfinite(values[m]) and math.isfinite(norms[m]):
                    stepping.append(m)
                    continue
                # Diverged: this picture alone goes back to its last good weights, half the lr.
                retries[m] += 1
                if retries[m] > MAX_RETRIES:
                    kept = (
                        f"the checkpoint of step {saved[m]} is kept"
                        if saved[m] is not None
                        else "nothing was saved"
                    )
                    outcomes[m] = FlowgifError(
                        f"training diverged at step {state.step[m]} (loss {values[m]}), "
                        f"{MAX_RETRIES} times halving the learning rate did not help; {kept}; "
                        "lower the learning rate"
                    )
                state.restore(m, state.good[m])
                state.lr_scale[m] *= 0.5
            idle = [m for m in range(count) if m not in stepping]
            state.update(stepping, lrs, idle, total)
            now = time.perf_counter() - clock
            for m in stepping:
                state.step[m] += 1
                state.spent[m] = began[m] + now
                state.losses[m].append((state.step[m], state.spent[m], values[m], lrs[m]))
                fraction[m] = _fraction(tc.steps, budget, state.step[m], state.spent[m])
                if state.step[m] % GOOD_EVERY == 0:
                    state.good[m] = state.snapshot(m)
                if state.step[m] % tc.checkpoint_every == 0 or fraction[m] >= 1.0:
                    save(m)
            for m in active:  # the clock runs on for a picture that rolled back
                if m not in stepping and outcomes[m] is None:
                    state.spent[m] = began[m] + now
                    fraction[m] = _fraction(tc.steps, budget, state.step[m], state.spent[m])
                    if fraction[m] >= 1.0 and state.step[m] != saved[m] and state.step[m]:
                        save(m)
            if progress is not None:
                progress(
                    [
                        Progress(s, min(f, 1.0), v, t)
                        for s, f, v, t in zip(
                            state.step, fraction, last_loss, state.spent, strict=True
                        )
                    ]
                )
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        for m in training():  # cut mid-step: the last checkpoints stay as they are
            outcomes[m] = Interrupted(state.step[m], False, saved[m])
    results: list[Outcome] = []
    for m in range(count):
        outcome = outcomes[m]
        if outcome is None:
            if state.step[m] != saved[m]:
                save(m)
            model = state.ema.field(m) if state.ema is not None else state.model.field(m)
            loss = state.losses[m][-1][2] if state.losses[m] else math.nan
            outcome = TrainResult(
                model.eval(), state.step[m], state.spent[m], loss, state.losses[m]
            )
        results.append(outcome)
    return results


class Batches:
    """Each step's flow-matching batches of M pictures, ``(M, n, ...)``.

    Every picture draws its random numbers from its own generator in a solo step's order (its
    end's, its start's, the times', the noise's: :meth:`Distribution.draws`); the numbers are
    then turned into points for all pictures at once, one operation per kind of work rather
    than per picture (:class:`~flowgif.sources.picture.StackedPictures`), so the per-picture
    cost of a step on a GPU is its few random-number kernels.
    """

    def __init__(
        self, ends: list[Distribution], starts: list[Distribution], config: Config
    ) -> None:
        self.ends, self.starts, self.fm, self.n = ends, starts, config.fm, config.train.batch
        self.together = [_together(ends), _together(starts)]

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
            ends.append(self.ends[m].draws(n, gen))
            starts.append(self.starts[m].draws(n, gen))
            raw_t.append(draw_times(n, fm, gen, device))
            if fm.sigma > 0:
                noise.append(torch.randn(n, 2, device=device, generator=gen))
        x1 = self._place(self.ends, self.together[0], ends, device)
        x0 = self._place(self.starts, self.together[1], starts, device)
        if fm.ot:
            for m in active:
                x0[m] = ot_pair(x0[m], x1[m], fm.ot_batch)
        t = times(torch.stack(raw_t), fm)
        xt = (1 - t) * x0 + t * x1
        if fm.sigma > 0:
            xt = xt + fm.sigma * torch.stack(noise)
        return t, xt, x1 - x0

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


def _together(dists: list[Distribution]) -> StackedPictures | None:
    """The pictures placed as one, when every distribution is a picture."""
    if all(isinstance(d, ImageDensity) for d in dists):
        return StackedPictures(dists)  # type: ignore[arg-type]
    return None


def _training(config: Config) -> tuple:
    """What must be equal for runs to train as one stack (their densities may differ: a toy
    target has its own extent)."""
    return config.train, config.fm, config.field


def _norms(params: list[torch.Tensor]) -> torch.Tensor:
    """Each picture's gradient norm over all its weights, ``(M,)`` (as
    ``nn.utils.clip_grad_norm_`` computes one run's)."""
    per = [torch.linalg.vector_norm(p.grad.flatten(1), 2, dim=1) for p in params]
    return torch.linalg.vector_norm(torch.stack(per, dim=1), 2, dim=1)
