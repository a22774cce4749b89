"""Run folders: atomic writes, checkpoints that load with ``weights_only=True``, and loading.

A run folder ``runs/<name>/`` holds ``config.toml``, ``checkpoint.pt`` (weights, EMA weights,
optimiser and RNG state, config, seed, flowgif version, image hash and the working ink grid, so
it needs nothing else), ``loss.csv`` and ``samples.png``; ``eval.json`` and renders join later.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from flowgif import __version__
from flowgif.config import Config
from flowgif.density import ImageDensity
from flowgif.errors import FlowgifError
from flowgif.field import VectorField
from flowgif.model import Flow, build_model, wrap

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "Run",
    "atomic_write",
    "find_latest_run",
    "load_checkpoint",
    "load_run",
    "native_bf16",
    "new_run_dir",
    "resolve_device",
    "save_checkpoint",
    "write_loss_csv",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = "flowgif-checkpoint/1"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], suffix: str = "") -> None:
    """Write ``path`` through ``write(file)`` into a temp file, fsync, then rename over it.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent
        )
    except OSError as err:
        raise FlowgifError(f"cannot write to {path.parent}: {err.strerror or err}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give what open() would
        with open(tmp, "wb") as f:  # f.name is the temp path, for writers that need a name
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise FlowgifError(f"cannot write {path}: {err.strerror or err}") from None
        raise


def umask() -> int:
    """The process umask (to give temp files the permissions a plain open() would)."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_loss_csv(path: Path, rows: list[tuple[int, float, float, float]]) -> None:
    """``step,seconds,loss,lr`` per logged step."""
    lines = ["step,seconds,loss,lr"] + [f"{s},{t:.3f},{v:.6g},{lr:.6g}" for s, t, v, lr in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors and plain values only) atomically."""
    atomic_write(
        path, lambda f: torch.save({"format": FORMAT, "version": __version__, **payload}, f)
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load an untrusted checkpoint: tensors and plain values only, never code.

    Raises:
        FlowgifError: missing, truncated, not a flowgif checkpoint, carrying code, or from an
            incompatible format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FlowgifError(f"no checkpoint at {path}; train first with `flowgif train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files; all mean the same here
        reason = (
            "it carries code or objects that are not plain data"
            if "weights_only" in str(err) or "Unsupported" in str(err)
            else "it is truncated or corrupt"
        )
        raise FlowgifError(f"cannot load {path}: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else None
        raise FlowgifError(
            f"{path} is not a {FORMAT} checkpoint (found {found!r}); retrain it "
            "with this version of flowgif"
        )
    return ckpt


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FlowgifError("--device cuda asked for, but no CUDA device is available; use auto")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are native (fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, may vanish
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass
class Run:
    """A trained run, ready to sample, render and evaluate.

    Attributes:
        path: the run folder.
        config: the config that trained it.
        density: the picture's density (rebuilt from the ink grid stored in the checkpoint).
        model: the trained module with the sampling (EMA) weights, in eval mode: a
            :class:`~flowgif.field.VectorField` or a :class:`~flowgif.flows.DiscreteFlow`.
        flow: the same behind the :class:`~flowgif.model.Flow` interface (paths, log_prob...).
        meta: the checkpoint's plain values (step, seed, version, image, image hash ...).
        colors: ``(h, w, 3)`` uint8 ink-weighted colour of each working-grid cell.
    """

    path: Path
    config: Config
    density: ImageDensity
    model: torch.nn.Module
    meta: dict[str, Any]
    colors: np.ndarray

    @property
    def flow(self) -> Flow:
        return wrap(self.model, self.config)

    @property
    def field(self) -> VectorField:
        """The vector field of a continuous flow.

        Raises:
            FlowgifError: the run holds a discrete flow, which has none.
        """
        if not isinstance(self.model, VectorField):
            raise FlowgifError(
                f"{self.path} holds a {self.config.train.method} flow, a stack of layers with "
                "no vector field"
            )
        return self.model


def load_run(path: Path, device: torch.device | str = "cpu") -> Run:
    """Load the run folder ``path`` (its ``checkpoint.pt``) onto ``device``."""
    path = Path(path)
    if not path.is_dir():
        raise FlowgifError(f"run folder not found: {path}")
    ckpt = load_checkpoint(path / CHECKPOINT)
    try:
        config = Config.from_dict(ckpt["config"], source=f"{path / CHECKPOINT}")
        density = ImageDensity(
            ckpt["ink"].double().numpy(), tuple(ckpt["size"]), config.density.extent, device
        )
        model = build_model(config).to(device)
        model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["field"])
        colors = ckpt["colors"].numpy().astype(np.uint8).reshape(*density.grid, 3)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if len(reason) > 100:
            reason = reason[:97] + "..."
        raise FlowgifError(
            f"{path / CHECKPOINT} is damaged or from another version ({reason})"
        ) from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if not isinstance(v, (dict, torch.Tensor))}
    return Run(path, config, density, model, meta, colors)


def new_run_dir(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3`` ... so that no earlier run is overwritten."""
    path, k = Path(root) / name, 2
    while path.exists() and any(path.iterdir()):
        path, k = Path(root) / f"{name}-{k}", k + 1
    return path


def find_latest_run(root: Path = Path("runs")) -> Path:
    """The most recently trained run folder under ``root``."""
    ckpts = sorted(Path(root).glob(f"*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FlowgifError(
            f"no trained run under {root}/; run `flowgif train --img IMAGE` first "
            "or name a run folder"
        )
    return ckpts[-1].parent


def ink_tensor(density: ImageDensity) -> torch.Tensor:
    """The density's working grid as a float32 tensor for the checkpoint."""
    return torch.as_tensor(np.ascontiguousarray(density.probs_np), dtype=torch.float32)
