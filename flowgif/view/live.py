"""A network while it trains, as the page shows it beside its exact flow.

A run training with ``--live`` writes its sampling weights to ``live.pt`` four times a second
(:meth:`flowgif.fit.folder.RunFolder.live`); a run trained by a command without it is seen
through its checkpoints. :class:`Watch` keeps, per run, what does not change while it trains:
the exact flow's first :data:`LIVE` paths from the page's noise (seed 0, as every flow of
one picture starts), its end's figures, and the exact field at :data:`PROBES` of its points.
Each new file is then one cheap update (:meth:`Watch.update`):

- the network's paths for those :data:`LIVE` starting points (a body as
  :mod:`flowgif.view.scene` packs it, without the camera and pacing tables: the page plays it
  with its exact flow's, so both panels move in step);
- ``tv``: total variation between where the :data:`LIVE` particles land and the picture,
  both on cells of :data:`TV_CELLS` along the picture's longer side (a particle off the
  picture counts whole); the exact flow's own ``tv`` on the same particles is its floor;
- ``field``: the network's field error, ``mean |v - v*|^2 / mean |v*|^2`` over
  :data:`PROBES` points of the exact flow's paths at :data:`PROBE_TIMES` times (``v*`` the
  exact field).

A morph (a run from a picture) is taught by the optimal-transport map (the ``morph`` recipe):
its reference is the map's flow (:class:`~flowgif.flows.transport.OTFlow`) instead.
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

__all__ = ["LIVE", "PROBES", "TV_CELLS", "Watch", "tv_on_cells"]

LIVE = 4000  # paths solved per update (the page draws copies of them up to its count)
PARTICLES = 20_000  # the page's noise: the exact flow's first LIVE of these are the live ones
TV_CELLS = 32  # cells of the tv figure along the picture's longer side
PROBES = 1000  # particles whose exact positions probe the field
PROBE_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


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
            try:
                self.body, self.figures = self._solve(name)
            except FlowgifError:
                if name != "live.pt":
                    raise
                return self.body, self.figures  # replaced or removed as it was read
            self.seen = stamp
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
        z = flow.starts(PARTICLES, torch.Generator().manual_seed(0), shown=True)[:LIVE]
        times = torch.linspace(0.0, 1.0, TIMES, dtype=z.dtype)
        with torch.no_grad():
            paths = flow.paths(z, times)[..., :2].double().numpy()
        end = paths[-1]
        figures = {
            "step": int(run.meta.get("step", 0)),
            "seconds": float(run.meta.get("seconds", 0.0)),
            "loss": _number(run.meta.get("loss")),
            "fraction": _number(run.meta.get("fraction")),
            "tv": tv_on_cells(end, run.density) if np.isfinite(end).all() else None,
            "tv_exact": ref.get("tv") if ref else None,
            "reference": "the map" if isinstance(run.start, ImageDensity) else "the exact flow",
            "field": self._field_error(scene, ref) if ref else None,
            "source": name,
        }
        half = max(run.density.half)
        finite = np.isfinite(paths)
        reach = float(np.abs(paths[finite]).max()) if finite.any() else half
        scale = float(min(max(1.25 * half, 1.001 * reach), 16 * half))
        q = np.round(np.nan_to_num(paths, nan=1e9) / scale * 32767)
        q[(np.abs(q) > 32767).any(-1)] = OUT
        cells = run.density.cell_index(np.nan_to_num(end))
        rgb = run.colors.reshape(-1, 3)[cells].astype(np.uint8)
        figures["solve_s"] = round(time.perf_counter() - began, 3)
        header = {"times": TIMES, "particles": len(z), "scale": scale, "figures": figures}
        return pack(header, {"paths": q.astype("<i2"), "rgb": rgb}), figures

    def _reference(self, run) -> dict | None:  # noqa: ANN001
        """The exact flow's end tv on the first :data:`LIVE` particles and its field at
        :data:`PROBES` of their points at :data:`PROBE_TIMES`: made once per run in a thread
        of its own (about a second: the first updates come without the two figures)."""
        if self.reference is None:
            self.reference = {}
            threading.Thread(target=self._make_reference, args=(run,), daemon=True).start()
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
            z = flow.starts(PARTICLES, torch.Generator().manual_seed(0), shown=True)[:LIVE]
            times = torch.tensor((0.0, *PROBE_TIMES, 1.0), dtype=z.dtype)
            with torch.no_grad():
                paths = flow.paths(z, times)
            probes = []
            for k, t in enumerate(PROBE_TIMES, start=1):
                x = paths[k, :PROBES, :2].float()
                with torch.no_grad():
                    v = field(t, x.double())[:, :2].float()  # type: ignore[misc]
                probes.append((t, x, v))
            tv = tv_on_cells(paths[-1, :, :2].double().numpy(), run.density)
            self.reference = {"tv": tv, "probes": probes}
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
