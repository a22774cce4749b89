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
- each picture is an ordinary run folder (:class:`flowgif.fit.folder.RunFolder`): its checkpoint is
  unstacked on save, so ``render``, ``eval``, ``sample`` and ``train --resume`` read it as any
  other.

On the CPU a stack of one computes bit for bit what :func:`flowgif.fit.solo.train` computes with
the same seed (tests/test_stack.py); a picture in a larger stack matches its solo run to
floating-point rounding (the batched matrix products may round differently).

What stacks: flow matching (``train.objective = fm``) of the mlp vector field
(:func:`stack_problem`); pictures of any sizes and aspect ratios, from any start. Each picture
regresses on the target its solo run would (``fm.target``: the exact field from its own
posterior table where that applies, else the pairs' ``x1 - x0``), so a stack of one equals a
solo run of any ``fm.target``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from flowgif.config import Config
from flowgif.device import native_bf16, resolve_device, set_threads
from flowgif.errors import FlowgifError
from flowgif.fit.loop import Member, Outcome, Progress, run_loop
from flowgif.fit.memory import check_fits, teacher_bytes
from flowgif.fit.optim import BETAS, EPS, adam_state
from flowgif.fit.solo import Weights, ema_decay
from flowgif.flows import build
from flowgif.flows.stacked import StackedField, stackable
from flowgif.objectives.flow_matching import StackedBatches

if TYPE_CHECKING:
    from flowgif.fit.folder import RunFolder

__all__ = ["StackStepper", "auto_stack", "picture_memory", "stack_problem", "train_stack"]

CPU_STACK = 1  # bench/STACK.md: on a compute-bound CPU core stacking gains little or nothing
MAX_STACK = 256  # beyond this the per-picture draws, not the kernels, bound a step

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
    stack), on CUDA as many as half the free memory holds (:func:`picture_memory`, with each
    picture's posterior table where it regresses on the exact field), at most
    :data:`MAX_STACK`."""
    device = device or resolve_device(config.train.device)
    if count <= 1 or stack_problem(config):
        return 1
    if device.type != "cuda":
        return min(count, CPU_STACK)
    free, _ = torch.cuda.mem_get_info(device)
    each = picture_memory(config, device) + teacher_bytes(config)
    return max(1, min(count, MAX_STACK, int(0.5 * free / each)))


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


def train_stack(
    runs: list[RunFolder],
    device: torch.device,
    progress: Callable[[list[Progress]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Train the runs together; each gets its checkpoints as a solo run would.

    Args:
        runs: opened run folders (:func:`flowgif.fit.folder.open_run`) of one training config
            (``train``, ``fm``, ``field``), which :func:`stack_problem` accepts; new or to
            resume, of any pictures and starts.
        device: where to train.
        progress: called after every stacked step with each picture's progress.
        stop: asked between steps; when it returns True every unfinished picture is
            checkpointed (as :func:`flowgif.fit.solo.train` does) and gets an ``Interrupted``.

    Returns:
        One outcome per run, in order: its :class:`~flowgif.fit.loop.TrainResult` (the EMA
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
    check_fits(config, device, len(runs))
    set_threads(config.train.threads, device)
    torch.manual_seed(config.train.seed)
    fresh = build(config).to(device)  # every new run starts where a solo run of the seed does
    outcomes: list[Outcome | None] = [None] * len(runs)
    loaded: dict[int, Weights] = {}
    for m, run in enumerate(runs):  # a checkpoint that does not fit fails its picture alone
        try:
            loaded[m] = _loaded(run, fresh, device)
        except FlowgifError as err:
            outcomes[m] = err
    if loaded:
        chosen = [runs[m] for m in loaded]
        batches = StackedBatches(
            [run.end.density.to(device) for run in chosen],
            [run.start.density.to(device) for run in chosen],
            config,
        )
        stepper = StackStepper(config, list(loaded.values()), batches, device)
        members = [Member.resumed(run.resume) for run in chosen]

        def save(i: int, payload: dict[str, Any]) -> None:
            chosen[i].save(payload)

        trained = run_loop(stepper, members, config, save, progress, stop)
        for m, outcome in zip(loaded, trained, strict=True):
            outcomes[m] = outcome
    return [o for o in outcomes if o is not None]


def _loaded(run: RunFolder, fresh: torch.nn.Module, device: torch.device) -> Weights:
    """A run's weights as its solo run has them: fresh (those of a solo run of the same
    seed), or its checkpoint's.

    Raises:
        FlowgifError: the checkpoint does not fit the config.
    """
    weights = Weights(run.config, copy.deepcopy(fresh), device)
    if run.resume is not None:
        weights.load(run.resume)
        if len(set(weights.opt.steps)) != 1:
            raise FlowgifError(
                "the checkpoint does not fit its own config, so it cannot be resumed (its "
                "optimizer steps differ between weights)"
            )
    return weights


class StackStepper:
    """M runs' step as one model (a :class:`~flowgif.fit.loop.Stepper` of M members): stacked
    weights, EMA and Adam moments, a generator and an Adam step count per picture."""

    def __init__(
        self, config: Config, runs: list[Weights], batches: StackedBatches, device: torch.device
    ) -> None:
        self.config, self.tc, self.batches, self.device = config, config.train, batches, device
        self.gens = [r.gen for r in runs]
        self.adam_step = [r.opt.steps[0] for r in runs]
        self.stack = StackedField([r.model for r in runs])
        self.ema = None
        if self.tc.ema > 0:
            self.ema = StackedField([r.ema for r in runs]).requires_grad_(False)
        self.params = self.stack.tensors()
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            for m, run in enumerate(runs):
                for theirs, stacked in ((run.opt.exp_avg, self.exp_avg),
                                        (run.opt.exp_avg_sq, self.exp_avg_sq)):  # fmt: skip
                    for mine, moment in zip(StackedField.parts(stacked, m), theirs, strict=True):
                        if moment is not None:  # None: that weight never stepped
                            mine.copy_(moment)
        tc = self.tc
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(device))
        self.total = torch.zeros(len(runs), device=device)

    def forward(
        self, active: list[int], fractions: list[float]
    ) -> tuple[list[float], list[float]]:
        t, xt, target = self.batches(self.gens, set(active))
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            losses = (self.stack(t, xt) - target).pow(2).sum(-1).mean(-1)
        taking = torch.zeros(len(self.gens), dtype=torch.bool, device=self.device)
        taking[active] = True
        for p in self.params:
            p.grad = None
        torch.where(taking, losses, 0.0).sum().backward()
        self.total = _norms(self.params)
        values, norms = torch.stack([losses.detach().float(), self.total]).tolist()  # one sync
        return values, norms

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

    def payload(self, m: int, lr: float) -> dict[str, Any]:
        """Picture ``m``'s weights, EMA, Adam state and generator, as a solo run writes them
        (unstacked)."""
        moments = [
            (self.adam_step[m], avg.detach(), avg_sq.detach())
            for avg, avg_sq in zip(
                StackedField.parts(self.exp_avg, m), StackedField.parts(self.exp_avg_sq, m),
                strict=True,
            )
        ]  # fmt: skip
        return {
            "field": self.stack.field(m).state_dict(),
            "ema": self.ema.field(m).state_dict() if self.ema is not None else None,
            "optimizer": adam_state(lr, self.tc.weight_decay, moments),
            "generator": self.gens[m].get_state(),
        }

    def model(self, m: int) -> torch.nn.Module:
        return self.ema.field(m) if self.ema is not None else self.stack.field(m)

    def update(self, stepping: list[int], lrs: list[float], steps: list[int]) -> None:
        """Per-picture gradient clipping, one Adam step and one EMA update for the pictures
        in ``stepping``; the others are left exactly as they are.

        Mirrors :class:`flowgif.fit.optim.Adam` (``torch.optim.Adam``'s arithmetic) and
        ``nn.utils.clip_grad_norm_`` operation by operation, so that each picture's arithmetic
        is its solo run's.
        """
        if not stepping:
            return
        tc, count = self.tc, len(self.gens)
        idle = [m for m in range(count) if m not in stepping]
        grads = [p.grad for p in self.params]
        coef = torch.clamp((tc.grad_clip or math.inf) / (self.total + 1e-6), max=1.0)

        def column(values: list[float]) -> torch.Tensor:  # one number per picture
            return torch.tensor(values, dtype=torch.float32, device=self.device)

        def per(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return values.reshape(count, *[1] * (like.dim() - 1))

        for m in stepping:
            self.adam_step[m] += 1
        counts = [float(max(s, 1)) for s in self.adam_step]
        size = column([-lr / (1 - BETA1**s) for lr, s in zip(lrs, counts, strict=True)])
        root = column([(1 - BETA2**s) ** 0.5 for s in counts])
        weight = column([1 - ema_decay(self.config, s) for s in steps])
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
        rows = torch.tensor(idle, device=self.device)
        with torch.no_grad():
            return [t.index_select(0, rows) for g in self._tensors() for t in g]

    def _put_back(self, idle: list[int], kept: list[torch.Tensor]) -> None:
        if not idle:
            return
        rows = torch.tensor(idle, device=self.device)
        with torch.no_grad():
            for t, saved in zip((t for g in self._tensors() for t in g), kept, strict=True):
                t.index_copy_(0, rows, saved)


def _training(config: Config) -> tuple:
    """What must be equal for runs to train as one stack (their densities may differ: a toy
    target has its own extent)."""
    return config.train, config.fm, config.field


def _norms(params: list[torch.Tensor]) -> torch.Tensor:
    """Each picture's gradient norm over all its weights, ``(M,)`` (as
    ``nn.utils.clip_grad_norm_`` computes one run's)."""
    per = [torch.linalg.vector_norm(p.grad.flatten(1), 2, dim=1) for p in params]
    return torch.linalg.vector_norm(torch.stack(per, dim=1), 2, dim=1)
