"""M vector fields as one module: every weight carries a leading picture axis.

The building block of stacked training (many pictures in one process, one model): layer ``k``
of picture ``m`` is ``W[m] h + b[m]``, computed for all pictures at once with
``torch.baddbmm`` over weights of shape ``(M, in, out)``, so a device runs one kernel per layer
instead of M. Time features and the random Fourier frequencies are shared (they are fixed by
the architecture, not trained). :meth:`StackedField.from_fields` stacks M trained or fresh
:class:`~flowgif.flows.field.VectorField` s and :meth:`StackedField.field` takes one back out,
so each picture's weights can be saved as an ordinary run.

bench/stack.py measures picture-steps per second against M.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from flowgif.flows.field import VectorField

__all__ = ["StackedField"]


class StackedField(nn.Module):
    """``M`` MLP fields ``v_m(t, x)`` (the ``mlp`` architecture), evaluated together.

    Args:
        fields: the M fields to stack; they must share one config.
    """

    def __init__(self, fields: list[VectorField]) -> None:
        super().__init__()
        first = fields[0]
        if first.squash or any(f.config != first.config for f in fields):
            raise ValueError("stacked fields share one config of the mlp architecture")
        self.template = copy.deepcopy(first)  # architecture and shared buffers
        self.count, self.dim = len(fields), first.dim
        self.weight = nn.ParameterList(
            nn.Parameter(torch.stack([f.layers[k].weight.detach().T for f in fields]))
            for k in range(len(first.layers))
        )
        self.bias = nn.ParameterList(
            nn.Parameter(torch.stack([f.layers[k].bias.detach() for f in fields])[:, None, :])
            for k in range(len(first.layers))
        )
        self.act = first.act

    @classmethod
    def from_fields(cls, fields: list[VectorField]) -> StackedField:
        return cls(fields)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Velocities ``(M, N, dim)`` at times ``t`` (``(M, N, 1)`` or a scalar) and points
        ``x`` ``(M, N, dim)``."""
        m, n, _ = x.shape
        t = torch.as_tensor(t).to(x)
        t = t.expand(m, n, 1) if t.dim() == 0 else t.reshape(m, n, 1)
        h = self.template.features(t.reshape(-1, 1), x.reshape(-1, self.dim)).reshape(m, n, -1)
        last = len(self.weight) - 1
        for k, (w, b) in enumerate(zip(self.weight, self.bias, strict=True)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = self.act(h)
        return h

    def field(self, m: int) -> VectorField:
        """Picture ``m``'s field on its own (a copy, for saving as an ordinary run)."""
        out = copy.deepcopy(self.template)
        with torch.no_grad():
            for k, layer in enumerate(out.layers):
                layer.weight.copy_(self.weight[k][m].T)
                layer.bias.copy_(self.bias[k][m, 0])
        return out
