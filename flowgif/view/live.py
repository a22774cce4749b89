"""A network while it trains, as the page shows it beside its exact flow.

A run training with ``--live`` writes its sampling weights to ``live.pt`` four times a second
(:meth:`flowgif.fit.folder.RunFolder.live`); a run trained by a command without it is seen
through its checkpoints. :class:`Watch` turns each new file into one cheap update: the
network's paths for one block of :data:`LIVE` of the page's :data:`PARTICLES` starting points
(seed 0, as every flow of one picture starts), the next block each time, so that the page,
which keeps the latest paths of every block, shows all its paths (each block at most
:data:`BLOCKS` updates old) and draws copies of them as it draws any flow's. A body is packed
as :mod:`flowgif.view.scene` packs a flow, without the camera and pacing tables (the page
plays it with its exact flow's, so both panels move in step), at a fixed scale
(:data:`REACH` half extents).

Its figures, for that block:

- ``tv``: total variation between where its particles land and the picture, both on cells of
  :data:`TV_CELLS` along the picture's longer side (a particle off the picture counts whole);
  ``tv_exact`` is the exact flow's own on the same particles: the floor of the estimate;
- ``field``: the network's field error, ``mean |v - v*|^2 / mean |v*|^2`` over
  :data:`PROBES` points of the exact flow's paths at :data:`PROBE_TIMES` times (``v*`` the
  exact field).

What it is compared with (the reference: the exact flow's ends for every particle, its field
at the probes) is made once per run, in a thread of its own, once the first trained flow is
out. A morph (a run from a picture) is taught by the optimal-transport map (the ``morph``
recipe): its reference is the map's flow (:class:`~flowgif.flows.transport.OTFlow`) instead.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from flowgif.errors import FlowgifError
from flowgif.sources.picture import ImageDensity
from flowgif.view.scene import OUT, TIMES, pack

__all__ = ["BLOCKS", "EVERY", "LIVE", "PARTICLES", "PROBES", "TV_CELLS", "Watch", "tv_on_cells"]

LIVE = 2000  # paths solved per update, a block of the page's PARTICLES: 0.14 s alone on one
# core, 0.4 s beside a training and a browser (bench/VIEW.md)
PARTICLES = 20_000  # the page's noise, as its exact flow's
BLOCKS = PARTICLES // LIVE
REACH = 16.0  # the paths' int16 scale, in half extents of the picture (the page's farthest)
TV_CELLS = 32  # cells of the tv figure along the picture's longer side
PROBES = 1000  # particles whose exact positions probe the field
PROBE_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)
EVERY = 0.45  # seconds at least from one solve of a run to the next: about 2 updates a second,
# and the rest of this core to the browser drawing them (bench/VIEW.md)


def tv_on_cells(x: np.ndarray, density: ImageDensity, cells: int = TV_CELLS) -> float:
    """Total variation between the points ``x`` ``(N, 2)`` and ``density``, both counted on
    blocks of the working grid, ``cells`` along its longer side (a point off the picture
    counts as mass where the picture has none)."""
    h, w = density.grid
    b = max(1, int(np.ceil(max(h, w) / cells)))
    gh, gw = -(-h // b), -(-w // b)
    q = np.zeros((gh * b, gw * b))
    q[:h, :w] = density.probs_np
    q = q.reshape(gh, b, gw, b).sum((1, 3)).ravel()
    col = np.floor((x[:, 0] + density.half[0]) / density.cell[0])
    row = np.floor((density.half[1] - x[:, 1]) / density.cell[1])
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & np.isfinite(x).all(1)
    cell = (row[inside] // b).astype(np.int64) * gw + (col[inside] // b).astype(np.int64)
    p = np.bincount(cell, minlength=gh * gw) / max(len(x), 1)
    return float(0.5 * (np.abs(p - q).sum() + (1 - inside.mean())))


class Watch:
    """One run watched while it trains (module docstring): its exact reference, made once,
    and the latest update, made once per new weights file whoever asks.

    Args:
        folder: the run folder.
        steps: the exact flow's solver steps (as the page's exact flow of a picture).
    """

    def __init__(self, folder: Path, steps: int) -> None:
        self.folder, self.steps = folder, steps
        self.lock = threading.Lock()  # one solve at a time per run
        self.reference: dict | None = None
        self.seen: tuple | None = None  # the weights file the latest body was made from
        self.body: bytes | None = None
        self.figures: dict = {}
        self._pending = None  # the run whose reference is to be made
        self.block = 0  # the block the next update solves
        self.solved = 0.0  # when the latest solve began (time.monotonic)

    def source(self) -> tuple[str, tuple] | None:
        """The freshest weights file (``live.pt``, else ``checkpoint.pt``) and its stamp."""
        from flowgif.store import CHECKPOINT, LIVE

        for name in (LIVE, CHECKPOINT):
            try:
                st = (self.folder / name).stat()
            except OSError:
                continue
            return name, (name, st.st_mtime_ns, st.st_size)
        return None

    def update(self) -> tuple[bytes | None, dict]:
        """The body and figures of the newest weights (made now if the file is new; the last
        ones if it has not changed; None before any)."""
        with self.lock:
            found = self.source()
            if found is None or found[1] == self.seen:
                return self.body, self.figures
            name, stamp = found
            began = time.monotonic()
            try:
                self.body, self.figures = self._solve(name)
            except FlowgifError:
                if name != "live.pt":
                    raise
                return self.body, self.figures  # replaced or removed as it was read
            self.seen, self.solved = stamp, began
            run = self._pending
            if run is not None and self.figures.get("step"):  # a trained flow is out: now
                self._pending = None
                threading.Thread(target=self._make_reference, args=(run,), daemon=True).start()
            return self.body, self.figures

    def _solve(self, name: str) -> tuple[bytes, dict]:
        from flowgif.store import load_run
        from flowgif.view.scene import run_scene

        began = time.perf_counter()
        torch.set_num_threads(1)  # the other core trains: two threads here would fight it
        run = load_run(self.folder, file=name)
        ref = self._reference(run)
        scene = run_scene(run)
        flow = scene.flow
        k, self.block = self.block, (self.block + 1) % BLOCKS
        block = slice(k * LIVE, (k + 1) * LIVE)
        z = flow.starts(PARTICLES, torch.Generator().manual_seed(0), shown=True)[block]
        times = torch.linspace(0.0, 1.0, TIMES, dtype=z.dtype)
        with torch.no_grad():
            paths = flow.paths(z, times)[..., :2].double().numpy()
        end = paths[-1]
        exact = ref.get("ends") if ref else None
        figures = {
            "step": int(run.meta.get("step", 0)),
            "seconds": float(run.meta.get("seconds", 0.0)),
            "loss": _number(run.meta.get("loss")),
            "fraction": _number(run.meta.get("fraction")),
            "tv": tv_on_cells(end, run.density) if np.isfinite(end).all() else None,
            "tv_exact": None if exact is None else tv_on_cells(exact[block], run.density),
            "reference": "the map" if isinstance(run.start, ImageDensity) else "the exact flow",
            "field": self._field_error(scene, ref) if ref else None,
            "source": name,
        }
        scale = REACH * max(run.density.half)
        q = np.round(np.nan_to_num(paths, nan=1e9) / scale * 32767)
        q[(np.abs(q) > 32767).any(-1)] = OUT
        cells = run.density.cell_index(np.nan_to_num(end))
        rgb = run.colors.reshape(-1, 3)[cells].astype(np.uint8)
        figures["solve_s"] = round(time.perf_counter() - began, 3)
        header = {
            "times": TIMES,
            "particles": LIVE,
            "total": PARTICLES,
            "offset": k * LIVE,
            "scale": scale,
            "figures": figures,
        }
        return pack(header, {"paths": q.astype("<i2"), "rgb": rgb}), figures

    def _reference(self, run) -> dict | None:  # noqa: ANN001
        """The reference (module docstring), or None while it is being made (the first
        updates come without the two figures)."""
        if self.reference is None:
            self.reference = {}  # made once the first trained flow is out (:meth:`update`)
            self._pending = run
        return self.reference or None

    def _make_reference(self, run) -> None:  # noqa: ANN001
        from flowgif.view.scene import exact_scene

        try:
            if isinstance(run.start, ImageDensity):  # a morph: taught by the map, its answer
                from flowgif.flows.transport import OTFlow

                flow = OTFlow(run.density, run.start)
                field = lambda t, x: flow.velocity(torch.tensor(t), x)  # noqa: E731
            else:
                scene = exact_scene(run.density, run.colors, run.start, None, self.steps)
                flow, field = scene.flow, scene.field
            z = flow.starts(PARTICLES, torch.Generator().manual_seed(0), shown=True)
            times = torch.tensor((0.0, *PROBE_TIMES, 1.0), dtype=z.dtype)
            with torch.no_grad():
                paths = flow.paths(z, times)
            probes = []
            for k, t in enumerate(PROBE_TIMES, start=1):
                x = paths[k, :PROBES, :2].float()
                with torch.no_grad():
                    v = field(t, x.double())[:, :2].float()  # type: ignore[misc]
                probes.append((t, x, v))
            self.reference = {"ends": paths[-1, :, :2].double().numpy(), "probes": probes}
        except Exception:  # the figures are then left out; the flow is still shown
            self.reference = {"failed": True}

    @staticmethod
    def _field_error(scene, ref: dict) -> float | None:  # noqa: ANN001
        """``mean |v - v*|^2 / mean |v*|^2`` over the probes (None: no field, a stack of
        layers)."""
        if scene.field is None or "probes" not in ref:
            return None
        num = den = 0.0
        for t, x, v in ref["probes"]:
            with torch.no_grad():
                mine = scene.field(t, x)[:, :2].float()
            num += float(((mine - v) ** 2).sum())
            den += float((v**2).sum())
        out = num / max(den, 1e-30)
        return out if np.isfinite(out) else None


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None
