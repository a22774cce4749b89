"""A stack of M fields computes exactly what its M fields compute, and gives each one back."""

from __future__ import annotations

import torch

from flowgif.config import FieldConfig
from flowgif.flows.field import VectorField
from flowgif.flows.stacked import StackedField


def test_a_stack_of_fields_equals_each_field_and_unstacks() -> None:
    config = FieldConfig(width=16, depth=2, fourier_features=4)
    fields = []
    for seed in range(3):
        torch.manual_seed(seed)
        fields.append(VectorField(config).double())
    stack = StackedField.from_fields(fields).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(3, 50, 1, generator=gen, dtype=torch.float64)
    out = stack(t, x)
    for m, field in enumerate(fields):
        torch.testing.assert_close(out[m], field(t[m], x[m]), rtol=1e-12, atol=1e-12)
        back = stack.field(m)
        torch.testing.assert_close(back(t[m], x[m]), field(t[m], x[m]), rtol=0, atol=0)
    # one picture's loss moves only that picture's weights
    stack(t, x)[1].pow(2).sum().backward()
    grads = [w.grad for w in stack.weight]
    assert all(g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0
               for g in grads)  # fmt: skip
