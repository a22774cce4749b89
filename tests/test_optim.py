"""flowgif.fit.optim.Adam is torch.optim.Adam's arithmetic and state dict, without torch.optim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from flowgif.fit.optim import Adam

ROOT = Path(__file__).resolve().parents[1]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2), nn.Linear(2, 2))


def steps(net: nn.Module, opt: object, count: int, skip_last: bool = False) -> None:
    gen = torch.Generator().manual_seed(1)
    for k in range(count):
        opt.lr = 3e-3 * (0.9**k) if isinstance(opt, Adam) else None
        if not isinstance(opt, Adam):
            for group in opt.param_groups:
                group["lr"] = 3e-3 * (0.9**k)
        x = torch.randn(64, 3, generator=gen)
        opt.zero_grad()
        out = net[:2](x) if skip_last and k < 3 else net(x)  # the last layer: no grad at first
        out.pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_adam_is_torch_adam_bit_for_bit_and_shares_its_state_dict(decay: float) -> None:
    ours, theirs = model(), model()
    mine = Adam(ours.parameters(), lr=3e-3, weight_decay=decay)
    torch_opt = torch.optim.Adam(theirs.parameters(), lr=3e-3, weight_decay=decay)
    steps(ours, mine, 12, skip_last=True)
    steps(theirs, torch_opt, 12, skip_last=True)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    saved_mine, saved_torch = mine.state_dict(), torch_opt.state_dict()
    assert saved_mine["param_groups"] == saved_torch["param_groups"]
    assert saved_mine["state"].keys() == saved_torch["state"].keys()
    for i, entry in saved_torch["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(saved_mine["state"][i][key], entry[key])
    # each loads the other's state and goes on identically
    again_mine, again_torch = (
        Adam(theirs.parameters(), lr=1.0),
        torch.optim.Adam(ours.parameters(), lr=1.0, weight_decay=decay),
    )
    again_mine.weight_decay = decay
    again_mine.load_state_dict(saved_torch)
    again_torch.load_state_dict(saved_mine)
    steps(theirs, again_mine, 3)
    steps(ours, again_torch, 3)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_state_dict_for_other_weights_is_refused() -> None:
    saved = Adam(model().parameters(), lr=1e-3).state_dict()
    with pytest.raises(ValueError, match="other parameters"):
        Adam(nn.Linear(2, 2).parameters(), lr=1e-3).load_state_dict(saved)
    net = model()
    opt = Adam(net.parameters(), lr=1e-3)
    steps(net, opt, 1)
    saved = opt.state_dict()
    saved["state"][0]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match="shape"):
        Adam(model().parameters(), lr=1e-3).load_state_dict(saved)


def test_training_never_imports_the_compiler() -> None:
    """torch.optim imports torch._dynamo (seconds per process), torchdiffeq SciPy's integrate
    (0.7 s): flow matching and its preview need neither."""
    code = (
        "import sys, torch; from pathlib import Path\n"
        "from flowgif.config import load_config\n"
        "from flowgif.fit import train_run\n"
        "import tempfile\n"
        "out = Path(tempfile.mkdtemp()) / 'run'\n"
        f"train_run(Path({str(ROOT / 'imgs' / 'star.png')!r}), "
        f"load_config(Path({str(ROOT / 'configs' / 'smoke.toml')!r})), out)\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
        "assert 'scipy.integrate' not in sys.modules, 'scipy.integrate was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
