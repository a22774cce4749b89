"""How close a trained flow is to its picture: KL in nats, and the referee's tv / on_ink.

``kl = nll - entropy`` where ``nll = -E_p[log q]`` is estimated on fresh samples of the picture
density ``p`` with the flow's exact log-likelihood ``q`` and ``entropy`` is exact; KL >= 0 up to
sampling noise, 0 only for a perfect flow (for an augmented flow ``nll`` comes from the ELBO
of :func:`flowgif.flows.model.augment`, so ``kl`` is an upper bound and ``kl_bound`` is true).
``tv`` and ``on_ink`` are computed the way the independent referee computes them, on the
full-resolution picture when it is at hand. The flow may start anywhere (N(0, I), a picture):
``log q`` then starts from the start's exact log-density. ``transport`` says how directly the
particles travel: for ``n`` start points ``z`` and their end points ``x(z)``, the mean squared
displacement divided by the exact optimal-transport cost between those same two point sets
(:func:`transport_ratio`); it is >= 1, and 1.0 means no reordering of the end points could
shorten the paths.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from flowgif.flows.model import ContinuousFlow, sample
from flowgif.flows.ode import SolveStats
from flowgif.sources.energies import ENERGIES, energy, log_partition
from flowgif.sources.ink import ink_of
from flowgif.sources.picture import image_hash, load_image
from flowgif.store import Run

__all__ = ["evaluate", "transport_ratio", "tv_score"]


def tv_score(ink: np.ndarray, uv: np.ndarray, cells: int = 64, seed: int = 0) -> dict[str, float]:
    """Histogram distance of pixel-coordinate samples ``uv`` to an ink map ``(H, W)``.

    Returns:
        ``tv`` (total variation on a grid of whole-pixel cells, ~``cells`` on the longer side,
        mass outside the frame counted as error), ``tv_floor`` (what exact samples get),
        ``on_ink`` (fraction on a pixel with ink > 0) and ``outside`` (fraction off the frame).
    """
    h, w = ink.shape
    size = max(1, int(np.ceil(max(h, w) / cells)))
    ny, nx = -(-h // size), -(-w // size)
    padded = np.zeros((ny * size, nx * size))
    padded[:h, :w] = ink
    target = padded.reshape(ny, size, nx, size).sum(axis=(1, 3))
    target /= target.sum()
    cell = np.floor(uv / size).astype(np.int64)
    inside = (cell[:, 0] >= 0) & (cell[:, 0] < nx) & (cell[:, 1] >= 0) & (cell[:, 1] < ny)
    counts = np.bincount(cell[inside, 1] * nx + cell[inside, 0], minlength=ny * nx)
    outside = 1.0 - inside.mean()
    tv = 0.5 * (np.abs(target.ravel() - counts / len(uv)).sum() + outside)
    exact = np.random.default_rng(seed).multinomial(len(uv), target.ravel()) / len(uv)
    px = np.floor(uv).astype(np.int64)
    frame = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    on = np.zeros(len(uv), dtype=bool)
    on[frame] = ink[px[frame, 1], px[frame, 0]] > 0
    return {
        "tv": float(tv),
        "tv_floor": float(0.5 * np.abs(target.ravel() - exact).sum()),
        "on_ink": float(on.mean()),
        "outside": float(outside),
    }


def transport_ratio(z: np.ndarray, x: np.ndarray) -> float:
    """Mean ``|x_i - z_i|^2`` over the least mean ``|x_j - z_i|^2`` of any one-to-one pairing
    of the same points (exact: SciPy's ``linear_sum_assignment``); >= 1 by construction."""
    from scipy.optimize import linear_sum_assignment

    z, x = np.asarray(z, dtype=np.float64), np.asarray(x, dtype=np.float64)
    cost = ((z[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    best = cost[rows, cols].mean()
    return float(np.diag(cost).mean() / best) if best > 0 else 1.0


def evaluate(
    run: Run,
    n_nll: int = 20_000,
    n_samples: int = 100_000,
    cells: int = 64,
    seed: int = 1,
    device: torch.device | str = "cpu",
    n_transport: int = 1000,
) -> dict[str, float | int | str]:
    """All figures of ``flowgif eval`` for a run (see the module docstring).

    Args:
        run: the trained run.
        n_nll: fresh picture samples for the likelihood (exact divergence).
        n_samples: flow samples for ``tv`` and ``on_ink``.
        cells: grid cells on the longer side for ``tv``.
        seed: seed of both sample sets (not the training seed, so the figures are held out).
        device: where the solves run.
        n_transport: start points for ``transport``: the exact assignment is cubic in it
            (1,000 took up to 2 s here, 2,000 up to 15 s, on a planar flow's near-ties).
    """
    flow, density = run.flow, run.density.to(device)
    clock = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(seed)
    x = density.sample(n_nll, generator=gen)
    ll_stats = SolveStats()
    # Continuous flows: likelihoods always use the adaptive dopri5 (the log-determinant needs
    # error control); discrete flows run their layers backwards.
    logq = flow.log_prob(x, stats=ll_stats, generator=gen)
    nll = float(-logq.mean())
    entropy = density.entropy()
    nll_seconds = time.perf_counter() - clock

    clock = time.perf_counter()
    s_stats = SolveStats()
    y = sample(flow, n_samples, seed, device, s_stats)
    sample_seconds = time.perf_counter() - clock
    k = min(n_transport, n_samples)
    z = flow.starts(k, torch.Generator(device=device).manual_seed(seed))
    moved = flow.paths(z, torch.tensor([0.0, 1.0], device=device))[-1]
    transport = transport_ratio(z[:, :2].cpu().numpy(), moved.cpu().numpy())
    ink, source = _reference_ink(run)
    uv = density.to_pixels(y)
    if source == "grid":  # working grid: pixel coordinates of the grid, not the original
        uv = uv * np.array(
            [run.density.grid[1] / run.density.size[0], run.density.grid[0] / run.density.size[1]]
        )
    scores = tv_score(ink, uv, cells, seed)
    chunks = -(-n_samples // 65536)
    extra = _reverse_kl(run, min(n_nll, 20_000), seed, device)
    exact = _beside_exact(run, min(n_nll, 20_000), n_samples, cells, seed, device, ink, source)
    if "exact_tv" in exact:  # what training has left to gain, from the same noise
        exact["tv_gap"] = scores["tv"] - exact["exact_tv"]
    if isinstance(flow, ContinuousFlow):
        cost = {
            "nfe": s_stats.nfe // chunks,
            "nfe_likelihood": ll_stats.nfe // -(-n_nll // 16384),
        }
    elif hasattr(run.model, "layers"):
        cost = {"layers": len(run.model.layers)}
    else:  # the exact flow: its solver's evaluations of the posterior
        cost = {"nfe": s_stats.nfe // chunks}
    return {
        **extra,
        "method": run.config.train.method,
        "start": run.start_label,
        "kl": nll - entropy,
        "kl_bound": flow.dim > 2,
        "nll": nll,
        "entropy": entropy,
        **scores,
        "transport": transport,
        "n_transport": k,
        **exact,
        **cost,
        "n_nll": n_nll,
        "n_samples": n_samples,
        "cells": cells,
        "ink_source": source,
        "seconds_nll": nll_seconds,
        "seconds_sample": sample_seconds,
    }


def _beside_exact(
    run: Run,
    n: int,
    n_samples: int,
    cells: int,
    seed: int,
    device: torch.device | str,
    ink: np.ndarray,
    source: str,
) -> dict[str, float]:
    """How far a trained continuous flow is from the exact flow of its ends: ``field_error``,
    the relative squared error ``E|v - v*|^2 / E|v*|^2`` over flow matching's training
    distribution of ``(t, x_t)`` (independent pairs, the config's times; ``v*`` the posterior
    of cells uniform on their boxes, exact to t = 1), and the exact flow's own ``tv`` and
    ``on_ink`` from the same seed (from N(0, I): the same noise). Empty for flows that have no
    such comparison (discrete flows, augmented fields, energies, the exact flow itself)."""
    from flowgif.flows.exact import ExactFlow
    from flowgif.flows.posterior import Posterior, Table
    from flowgif.objectives.flow_matching import sample_times
    from flowgif.sources.noise import Noise
    from flowgif.sources.picture import ImageDensity

    flow, end = run.flow, run.density.to(device)
    kind, _, name = str(run.meta.get("image", "")).partition(":")
    energy_end = kind == "target" and name in ENERGIES
    if not isinstance(flow, ContinuousFlow) or flow.dim != 2 or energy_end:
        return {}
    if not isinstance(flow.start, (Noise, ImageDensity)):
        return {}
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    x1 = end.sample(n, generator=gen)
    x0 = flow.starts(n, gen)
    t = sample_times(n, run.config.fm, gen, x1.device)
    xt = (1 - t) * x0 + t * x1
    exact = ExactFlow(end, flow.start)
    # From N(0, I) the exact flow's posterior is the training one (its slices computed once);
    # a picture start trains on the blurred picture, which the exact flow does not use.
    if isinstance(flow.start, Noise):
        table = Table(exact.posterior, exact.times)
    else:
        table = Table(Posterior(end, flow.start))
    want = table.to(x1.device).velocity(t, xt)
    with torch.no_grad():
        got = flow.field(t, xt)
    error = float((got - want).pow(2).sum(1).mean() / want.pow(2).sum(1).mean())
    y = sample(exact, n_samples, seed, device)
    uv = end.to_pixels(y)
    if source == "grid":
        uv = uv * np.array([end.grid[1] / end.size[0], end.grid[0] / end.size[1]])
    scores = tv_score(ink, uv, cells, seed)
    return {"field_error": error, "exact_tv": scores["tv"], "exact_on_ink": scores["on_ink"]}


def _reverse_kl(run: Run, n: int, seed: int, device: torch.device | str) -> dict[str, float]:
    """For energy targets: the reverse-KL bound ``E_q[log q + U]``, ``log Z`` and their sum,
    ``kl_reverse``, with its Monte Carlo standard error ``kl_reverse_se``: the sum is an
    unbiased estimate of a KL >= 0, so for a flow at the target (the exact flow) it may come
    out below 0 by about its standard error; it is not clamped, which would bias it."""
    kind, _, name = str(run.meta.get("image", "")).partition(":")
    if kind != "target" or name not in ENERGIES:
        return {}
    gen = torch.Generator(device=device).manual_seed(seed)
    x, logq = run.flow.push(run.flow.starts(n, gen))
    terms = (logq + energy(name, x)).double()
    bound, se = float(terms.mean()), float(terms.std() / math.sqrt(len(terms)))
    log_z = log_partition(name)
    return {
        "reverse_kl_bound": bound,
        "log_z": log_z,
        "kl_reverse": bound + log_z,
        "kl_reverse_se": se,
    }


def _reference_ink(run: Run) -> tuple[np.ndarray, str]:
    """Full-resolution ink of the training picture if it is still there, else the grid.

    The ink is the run's own model (``density.ink``): for a clean picture that is darkness,
    exactly as the referee scores; for a photo under ``local``, the strokes it was fitted to.
    """
    path = run.meta.get("image")
    if path and Path(path).is_file() and image_hash(Path(path)) == run.meta.get("image_hash"):
        c = run.config.density
        ink = ink_of(load_image(Path(path)), c.ink, c.invert).ink
        if c.ink_floor > 0:
            ink = np.clip((ink - c.ink_floor) / (1 - c.ink_floor), 0, 1)
        return ink, "image"
    return run.density.probs_np, "grid"
