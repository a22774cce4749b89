"""Adam, as ``torch.optim.Adam`` computes it, without ``torch.optim``.

Constructing any ``torch.optim`` optimizer imports ``torch._dynamo`` (2 to 2.5 s a process on
this project's CPU, a quarter of a short ``flowgif train``), which flowgif never uses. This
module does the same arithmetic — torch's multi-tensor Adam with its defaults (betas 0.9 and
0.999, eps 1e-8, L2 weight decay), whose operations on a CPU are those of the single-tensor
path — and reads and writes the same ``state_dict``, so a checkpoint written by either loads
in both (tests/test_optim.py holds it to ``torch.optim.Adam`` bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["BETAS", "EPS", "Adam", "adam_state"]

BETAS = (0.9, 0.999)
EPS = 1e-8
_GROUP = {  # torch.optim.Adam's param group, as its state_dict writes it
    "betas": BETAS,
    "eps": EPS,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}


def adam_state(
    lr: float, weight_decay: float, moments: list[tuple[int, Tensor, Tensor] | None]
) -> dict[str, Any]:
    """A ``torch.optim.Adam`` state dict: one ``(step, exp_avg, exp_avg_sq)`` per parameter
    (None for one that never stepped)."""
    state = {
        i: {"step": torch.tensor(float(s)), "exp_avg": a.clone(), "exp_avg_sq": q.clone()}
        for i, m in enumerate(moments)
        if m is not None
        for s, a, q in [m]
    }
    group = {"lr": lr, "weight_decay": weight_decay, **_GROUP}
    return {"state": state, "param_groups": [{**group, "params": list(range(len(moments)))}]}


class Adam:
    """Adam over ``params`` (a parameter without a gradient is skipped, as torch does).

    Attributes:
        lr: the learning rate of the next step (set it between steps for a schedule).
    """

    def __init__(self, params: Iterable[Tensor], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.weight_decay = lr, weight_decay
        self.steps: list[int] = [0] * len(self.params)
        self.exp_avg: list[Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        for i in idx:
            if self.exp_avg[i] is None:
                self.exp_avg[i] = torch.zeros_like(self.params[i])
                self.exp_avg_sq[i] = torch.zeros_like(self.params[i])
            self.steps[i] += 1
        params = [self.params[i] for i in idx]
        grads = [p.grad for p in params]
        avgs = [self.exp_avg[i] for i in idx]
        sqs = [self.exp_avg_sq[i] for i in idx]
        b1, b2 = BETAS
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(avgs, grads, 1 - b1)
        torch._foreach_mul_(sqs, b2)
        torch._foreach_addcmul_(sqs, grads, grads, 1 - b2)
        corr1 = [1 - b1 ** self.steps[i] for i in idx]
        corr2 = [1 - b2 ** self.steps[i] for i in idx]
        denom = torch._foreach_sqrt(sqs)
        torch._foreach_div_(denom, [c**0.5 for c in corr2])
        torch._foreach_add_(denom, EPS)
        torch._foreach_addcdiv_(params, avgs, denom, [-(self.lr / c) for c in corr1])

    def state_dict(self) -> dict[str, Any]:
        moments = [
            None if a is None else (s, a, q)
            for s, a, q in zip(self.steps, self.exp_avg, self.exp_avg_sq, strict=True)
        ]
        return adam_state(self.lr, self.weight_decay, moments)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Moments and step counts from a state dict of this class or ``torch.optim.Adam``.

        Raises:
            ValueError: it is not for these parameters.
        """
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("the optimizer state is for other parameters")
        order = groups[0]["params"]
        state = saved["state"]
        for i, key in enumerate(order):
            if key not in state:
                self.steps[i], self.exp_avg[i], self.exp_avg_sq[i] = 0, None, None
                continue
            entry, p = state[key], self.params[i]
            avg, sq = entry["exp_avg"], entry["exp_avg_sq"]
            if not (isinstance(avg, Tensor) and isinstance(sq, Tensor)):
                raise ValueError("the optimizer state holds no moments")
            if avg.shape != p.shape or sq.shape != p.shape:
                raise ValueError(f"the optimizer state has shape {tuple(avg.shape)}, not "
                                 f"{tuple(p.shape)}")  # fmt: skip
            self.exp_avg[i] = avg.to(p.device, p.dtype).clone()
            self.exp_avg_sq[i] = sq.to(p.device, p.dtype).clone()
            self.steps[i] = int(entry["step"])
        self.lr = float(groups[0].get("lr", self.lr))
