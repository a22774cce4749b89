"""Does a coarse training solver get gamed? Reverse KL to U1 through fixed RK4 steps, with the
training bound and the true one (dopri5 at 1e-5) printed side by side as training goes on.

    python bench/reverse_kl_solver.py --steps 8 --seconds 170                 # gamed
    python bench/reverse_kl_solver.py --steps 8 --seconds 300 --penalty 0.05  # RNODE: honest
    python bench/reverse_kl_solver.py --steps 16 --seconds 300                # finer: honest

The field and solver are configs/energy.toml's; Adam at a constant 3e-3, batch 1024, one
thread. Columns: steps, the training bound + log Z (what the optimiser sees), the true
kl_reverse on 5,000 fixed noise points.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flowgif.config import load_config
from flowgif.flows.field import VectorField
from flowgif.flows.ode import AugmentedDynamics, augmented_solve
from flowgif.sources.energies import energy, log_partition
from flowgif.sources.noise import normal_log_prob

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=8, help="RK4 steps of the training solve")
    ap.add_argument("--seconds", type=float, default=170.0)
    ap.add_argument("--penalty", type=float, default=0.0, help="kinetic = jacobian weight")
    ap.add_argument("--every", type=float, default=25.0, help="seconds between rows")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    field = VectorField(load_config(ROOT / "configs" / "energy.toml").field)
    dyn = AugmentedDynamics(field)
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    log_z = log_partition("u1")
    probe = torch.randn(5000, 2, generator=torch.Generator().manual_seed(1))

    def true_kl() -> float:
        with torch.no_grad():
            x, delta, _, _ = augmented_solve(
                AugmentedDynamics(field), probe, "dopri5", 1e-5, 1e-5, False, forward=True
            )
            return float((normal_log_prob(probe) + delta + energy("u1", x)).mean()) + log_z

    print("| steps | training bound + log Z | true kl_reverse |\n|---|---|---|")
    start, shown, k = time.time(), 0.0, 0
    while time.time() - start < a.seconds:
        z = torch.randn(1024, 2)
        x, delta, kinetic, frob = augmented_solve(dyn, z, "rk4", 0, 0, False, True, a.steps)
        bound = (normal_log_prob(z) + delta + energy("u1", x)).mean()
        loss = bound + a.penalty * (kinetic.mean() + frob.mean())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(field.parameters(), 1.0)
        opt.step()
        k += 1
        if time.time() - shown > a.every:
            shown = time.time()
            print(f"| {k} | {float(bound.detach()) + log_z:.3f} | {true_kl():.3f} |", flush=True)
    print(f"| {k} | {float(bound.detach()) + log_z:.3f} | {true_kl():.3f} |")


if __name__ == "__main__":
    main()
