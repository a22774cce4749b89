"""When to take the frames: spaced so that the picture forms evenly over the animation.

A flow from N(0, I) spends the first half of its time as a round blob that barely changes
shape; frames taken at equal times show a still blob for seconds, then the picture snaps in.
``shape`` pacing measures along a probe solve how far the particles' histogram still is from
the final one, and spaces the frames evenly in that measure — or in the distance the particles
travel where that is larger, so that no frame jumps: the distance gets the least weight that
keeps the largest on-screen step within ``SMOOTH_LIMIT`` times the median one.

Conventions: ``grid`` is a fine ``(G,)`` time grid from 0 to 1, ``paths`` are ``(G, N, 2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PACES", "formed", "paced_times", "positions_at", "shape_progress", "travel"]

PACES = ("shape", "time")
SMOOTH_LIMIT = 3.0  # largest frame-to-frame displacement over the median one
TRAVEL_WEIGHTS = (*[round(0.05 * k, 2) for k in range(41)], 3.0, 5.0, 10.0, 100.0)


def shape_progress(paths: np.ndarray, bins: int = 64) -> np.ndarray:
    """How formed the cloud is at each time: ``1 - TV(h_t, h_end) / TV(h_0, h_end)``.

    ``h_t`` is the particles' histogram on a ``bins x bins`` grid around every position the
    particles take (points beyond it share one extra cell), so contraction and the forming of
    strokes both count. Returns a non-decreasing ``(G,)`` array from 0 to 1.
    """
    pick = paths[:, :: max(1, paths.shape[1] // 4000)]
    half = float(np.quantile(np.abs(pick), 0.995)) + 1e-9
    edges = np.linspace(-half, half, bins + 1)
    end = _histogram(pick[-1], edges)
    tv = np.array([0.5 * np.abs(_histogram(x, edges) - end).sum() for x in pick])
    p = 1.0 - tv / max(tv[0], 1e-12)
    return _monotone(p)


def _histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    h, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=(edges, edges))
    h = h.ravel() / len(x)
    return np.append(h, max(0.0, 1.0 - h.sum()))  # mass outside the grid


def _monotone(p: np.ndarray) -> np.ndarray:
    p = np.maximum.accumulate(np.nan_to_num(p, nan=0.0))
    span = p[-1] - p[0]
    return (p - p[0]) / span if span > 1e-12 else np.linspace(0.0, 1.0, len(p))


def travel(paths: np.ndarray) -> np.ndarray:
    """Mean distance the particles have travelled by each time, from 0 to 1."""
    step = np.linalg.norm(np.diff(paths, axis=0), axis=-1).mean(axis=1)
    return _monotone(np.concatenate([[0.0], np.cumsum(step)]))


def formed(progress: np.ndarray, level: float = 0.5) -> float:
    """Fraction of the frames (0 to 1) at which ``progress`` first reaches ``level``."""
    k = int(np.argmax(np.asarray(progress) >= level))
    return k / max(1, len(progress) - 1)


def eased(frames: int, ease: bool) -> np.ndarray:
    """``frames`` levels from 0 to 1; with ``ease`` half linear, half a cosine ramp: a gentle
    start and stop that still moves from the first frame (a full cosine ramp sits still for
    the first second and rushes the middle at 1.6 times the mean speed)."""
    s = np.linspace(0.0, 1.0, frames)
    return 0.5 * s + 0.5 * (0.5 - 0.5 * np.cos(np.pi * s)) if ease else s


def jumpiness(
    paths: np.ndarray, grid: np.ndarray, times: np.ndarray, scale: np.ndarray | None = None
) -> float:
    """Largest frame-to-frame mean displacement on screen over the median one.

    Args:
        paths: ``(G, N, 2)`` particles on the time grid ``grid``.
        grid: ``(G,)`` times.
        times: the frame times.
        scale: screen pixels per model unit at each frame (the camera's zoom); 1 if None.
    """
    at = positions_at(paths, grid, times)
    step = np.linalg.norm(np.diff(at, axis=0), axis=-1).mean(axis=1)
    if scale is not None:
        step = step * 0.5 * (scale[1:] + scale[:-1])
    moving = step[step > 1e-9]
    return float(moving.max() / np.median(moving)) if len(moving) else 1.0


def positions_at(paths: np.ndarray, grid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``(len(times), N, 2)`` particles at ``times``, linear between the grid's times (all
    times in one array expression: the pacing calls this for every weight it tries)."""
    times = np.asarray(times, dtype=np.float64)
    k = np.clip(np.searchsorted(grid, times) - 1, 0, len(grid) - 2)
    w = ((times - grid[k]) / np.maximum(grid[k + 1] - grid[k], 1e-12))[:, None, None]
    return (1 - w) * paths[k] + w * paths[k + 1]


def paced_times(
    grid: np.ndarray,
    paths: np.ndarray,
    frames: int,
    pace: str,
    ease: bool,
    screen: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Frame times from 0 to 1, and the weight of travel in the pacing (0 for ``time``).

    Args:
        grid: ``(G,)`` probe times from 0 to 1.
        paths: ``(G, N, 2)`` probe particles at those times.
        frames: frames of the motion.
        pace: ``shape`` or ``time`` (equal times, as the ODE runs).
        ease: slow start and end.
        screen: ``screen(times, progress)`` gives the camera's pixels per model unit at each
            frame, so that smoothness is judged on screen.
    """
    levels = eased(frames, ease)
    if pace == "time":
        return levels, 0.0
    shape, distance = shape_progress(paths), travel(paths)
    base = grid * 1e-6  # strictly increasing, so invertible
    for weight in TRAVEL_WEIGHTS:
        # Each stretch of time counts by how much the shape forms there, or by how far the
        # particles move (times ``weight``), whichever is more: a stretch where the cloud
        # moves a lot without changing shape is never crossed in one frame.
        counted = np.maximum(np.diff(shape), weight * np.diff(distance))
        measure = np.concatenate([[0.0], np.cumsum(counted)]) + base
        times = np.interp(levels * measure[-1], measure, grid)
        scale = screen(times, np.interp(times, grid, shape)) if screen is not None else None
        if jumpiness(paths, grid, times, scale) <= SMOOTH_LIMIT:
            return times, float(weight)
    return times, float(TRAVEL_WEIGHTS[-1])
