"""Pictures that explain a run (PNG, matplotlib imported lazily): density, field, paths, loss."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowgif.errors import FlowgifError
from flowgif.files import atomic_write
from flowgif.owned import SIGNATURE, check_replaceable
from flowgif.store import Run

__all__ = ["KINDS", "plot"]

KINDS = ("density", "field", "paths", "loss")
Device = torch.device | str


def plot(
    run: Run,
    kind: str,
    out: Path,
    times: tuple[float, ...] = (0.0, 0.5, 0.9, 1.0),
    grid: int = 96,
    particles: int = 1000,
    device: torch.device | str = "cpu",
) -> None:
    """Draw one explanatory picture of ``run`` into the PNG ``out``.

    Args:
        run: the trained run.
        kind: ``density`` (learned log-density beside the target), ``field`` (the vector field
            at ``times`` over the particles), ``paths`` (trajectories of ``particles`` particles)
            or ``loss`` (the training curve).
        out: the PNG to write.
        times: the times shown by ``field``.
        grid: points per side of the density grid and half that for the field's arrows.
        particles: particles traced by ``paths``.
        device: where the solves run.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FlowgifError("plots need matplotlib: pip install 'flowgif[plot]'") from None
    if kind not in KINDS:
        raise FlowgifError(f"plot.kind {kind!r} is not one of: {', '.join(KINDS)}")
    if Path(out).suffix.lower() != ".png":
        raise FlowgifError(f"a plot is a PNG: give a name ending in .png, not {Path(out).name}")
    check_replaceable(out)
    fig = {"density": _density, "field": _field, "paths": _paths, "loss": _loss}[kind](
        plt, run, times=times, grid=grid, particles=particles, device=device
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": SIGNATURE})
    plt.close(fig)
    atomic_write(out, lambda f: f.write(buf.getvalue()))


def _extent(run: Run, pad: float = 1.15) -> tuple[float, float]:
    hx, hy = run.density.half
    return hx * pad, hy * pad


def _target(ax: Any, run: Run) -> None:
    hx, hy = run.density.half
    img = _target_rgb(run)
    ax.imshow(img, extent=(-hx, hx, -hy, hy), interpolation="nearest")
    ax.set_title("target")


def _target_rgb(run: Run) -> np.ndarray:
    """The working-grid picture as RGB over white: ink-weighted colour faded by ink."""
    ink = run.density.probs_np / run.density.probs_np.max()
    rgb = run.colors.astype(np.float64)
    white = np.full_like(rgb, 255.0)
    alpha = np.clip(ink * 1.5, 0, 1)[..., None]
    return (white + alpha * (rgb - white)).astype(np.uint8)


def _density(plt: Any, run: Run, grid: int, device: Device, **_: object) -> Any:
    ex, ey = _extent(run)
    nx = grid
    ny = max(8, round(grid * ey / ex))
    xs = np.linspace(-ex, ex, nx)
    ys = np.linspace(ey, -ey, ny)
    pts = torch.tensor(
        np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float32, device=device
    )
    logq = run.flow.log_prob(pts, tol=1e-4).cpu().numpy().reshape(ny, nx)  # a picture only
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5 * ey / ex + 0.6))
    _target(axes[0], run)
    im = axes[1].imshow(np.maximum(logq, logq.max() - 12), extent=(-ex, ex, -ey, ey), cmap="magma")
    axes[1].set_title("learned log-density")
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="log q(x)")
    for ax in axes:
        ax.set_xlim(-ex, ex)
        ax.set_ylim(-ey, ey)
        ax.set_aspect("equal")
    return fig


def _paths_of(run: Run, n: int, times: torch.Tensor, device: Device) -> np.ndarray:
    gen = torch.Generator(device=device).manual_seed(0)
    return run.flow.paths(run.flow.starts(n, gen, shown=True), times.to(device)).cpu().numpy()


def _field(
    plt: Any, run: Run, times: tuple[float, ...], grid: int, device: Device, **_: object
) -> Any:
    ex, ey = 3.0, 3.0 * run.density.half[1] / run.density.half[0]
    ex, ey = max(ex, _extent(run)[0]), max(ey, _extent(run)[1])
    t_all = torch.tensor(sorted(set(times) | {0.0}), dtype=torch.float32)
    paths = _paths_of(run, 3000, t_all, device)
    n = max(8, grid // 4)
    xs, ys = np.linspace(-ex, ex, n), np.linspace(-ey, ey, max(8, round(n * ey / ex)))
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=device)
    fig, axes = plt.subplots(1, len(times), figsize=(3.2 * len(times), 3.2 * ey / ex + 0.5))
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, times, strict=True):
        with torch.no_grad():
            v = run.field(torch.tensor(float(t), device=device), pts).cpu().numpy()
        k = int(np.argmin(np.abs(t_all.numpy() - t)))
        ax.scatter(paths[k, :, 0], paths[k, :, 1], s=1, c="0.6", linewidths=0)
        ax.quiver(
            gx,
            gy,
            v[:, 0].reshape(gx.shape),
            v[:, 1].reshape(gx.shape),
            np.hypot(v[:, 0], v[:, 1]).reshape(gx.shape),
            cmap="viridis",
            angles="xy",
            scale_units="xy",
            scale=n / ex,
        )
        ax.set_title(f"v(t={t:g}, x)")
        ax.set_xlim(-ex, ex)
        ax.set_ylim(-ey, ey)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _paths(plt: Any, run: Run, particles: int, device: Device, **_: object) -> Any:
    times = torch.linspace(0, 1, 41)
    p = _paths_of(run, particles, times, device)
    angle = (np.arctan2(p[0, :, 1], p[0, :, 0]) / (2 * np.pi)) % 1.0
    ex, ey = (
        max(3.0, _extent(run)[0]),
        max(3.0 * run.density.half[1] / run.density.half[0], _extent(run)[1]),
    )
    fig, ax = plt.subplots(figsize=(6, 6 * ey / ex))
    from matplotlib.collections import LineCollection

    segs = np.transpose(p, (1, 0, 2))
    lines = LineCollection(segs, colors=plt.cm.hsv(angle), linewidths=0.4, alpha=0.5)
    ax.add_collection(lines)
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=2, c="k", linewidths=0)
    ax.set_xlim(-ex, ex)
    ax.set_ylim(-ey, ey)
    ax.set_aspect("equal")
    ax.set_title(f"paths of {particles} particles, t = 0 (noise) to 1 (dots)")
    return fig


def _loss(plt: Any, run: Run, **_: object) -> Any:
    path = run.path / "loss.csv"
    if not path.is_file():
        raise FlowgifError(f"no loss.csv in {run.path}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        exact = run.config.train.objective == "exact"
        why = "the exact flow is computed, not trained" if exact else "none were logged"
        raise FlowgifError(f"{run.path} has no training steps to plot: {why}")
    step = np.array([float(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(step, loss, lw=0.5, alpha=0.4, label="per step")
    k = max(1, len(loss) // 100)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax.plot(step[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (fm: squared error; ffjord: nll in nats)")
    ax.legend()
    return fig
