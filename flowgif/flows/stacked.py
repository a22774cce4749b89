"""M vector fields as one module: every weight carries a leading picture axis.

The building block of stacked training (:mod:`flowgif.fit.stack`: many pictures in one process,
one model): layer ``k`` of picture ``m`` is ``W[m] h + b[m]``, computed for all pictures at
once with ``torch.baddbmm``, so a device runs one kernel per layer instead of M. The weights
keep ``nn.Linear``'s layout, ``(M, out, in)``, so picture ``m``'s slice *is* its field's weight
(on the CPU a stack of one computes bit for bit what the field computes). Time features and the
random Fourier frequencies are shared: they are fixed by the architecture, not trained.

:meth:`StackedField.from_fields` stacks M trained or fresh
:class:`~flowgif.flows.field.VectorField` s, :meth:`StackedField.field` takes one back out,
so each picture's weights are saved as an ordinary run. :meth:`StackedField.tensors` lists
the stacked tensors in the order of a field's ``parameters()``, which is also the order of its
optimiser state.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from flowgif.flows.field import VectorField

__all__ = ["StackedField", "stackable"]


def stackable(field: nn.Module) -> str:
    """Why ``field`` cannot be stacked, or "" when it can."""
    if not isinstance(field, VectorField):
        return "only a vector field (train.family field) can be stacked"
    if field.squash:
        return "only the mlp field (field.arch mlp) can be stacked"
    return ""


class StackedField(nn.Module):
    """``M`` MLP fields ``v_m(t, x)`` (the ``mlp`` architecture), evaluated together.

    Args:
        fields: the M fields to stack; they must share one config.
    """

    def __init__(self, fields: list[VectorField]) -> None:
        super().__init__()
        first = fields[0]
        problem = stackable(first)
        if problem or any(f.config != first.config or f.dim != first.dim for f in fields):
            raise ValueError(problem or "stacked fields share one config")
        self.template = copy.deepcopy(first).requires_grad_(False)  # features, shared buffers
        self.count, self.dim = len(fields), first.dim
        depth = len(first.layers)
        self.weight = nn.ParameterList(
            nn.Parameter(torch.stack([f.layers[k].weight.detach() for f in fields]))
            for k in range(depth)
        )
        self.bias = nn.ParameterList(
            nn.Parameter(torch.stack([f.layers[k].bias.detach() for f in fields])[:, None, :])
            for k in range(depth)
        )
        self.act = first.act

    @classmethod
    def from_fields(cls, fields: list[VectorField]) -> StackedField:
        return cls(fields)

    def tensors(self) -> list[Tensor]:
        """The stacked parameters in a field's ``parameters()`` order: W0, b0, W1, b1, ..."""
        return [p for pair in zip(self.weight, self.bias, strict=True) for p in pair]

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Velocities ``(M, N, dim)`` at times ``t`` (``(M, N, 1)`` or a scalar) and points
        ``x`` ``(M, N, dim)``."""
        m, n, _ = x.shape
        t = torch.as_tensor(t).to(x)
        t = t.expand(m, n, 1) if t.dim() == 0 else t.reshape(m, n, 1)
        h = self.template.features(t.reshape(-1, 1), x.reshape(-1, self.dim)).reshape(m, n, -1)
        last = len(self.weight) - 1
        for k, (w, b) in enumerate(zip(self.weight, self.bias, strict=True)):
            h = torch.baddbmm(b, h, w.transpose(1, 2))
            if k < last:
                h = self.act(h)
        return h

    def field(self, m: int) -> VectorField:
        """Picture ``m``'s field on its own (a copy, for saving as an ordinary run)."""
        out = copy.deepcopy(self.template).requires_grad_(True)
        with torch.no_grad():
            for k, layer in enumerate(out.layers):
                layer.weight.copy_(self.weight[k][m])
                layer.bias.copy_(self.bias[k][m, 0])
        return out

    @staticmethod
    def parts(tensors: list[Tensor], m: int) -> list[Tensor]:
        """Picture ``m``'s views of tensors laid out like :meth:`tensors` (its parameters,
        gradients or optimiser moments), each shaped as in its field."""
        return [t[m] if i % 2 == 0 else t[m, 0] for i, t in enumerate(tensors)]
