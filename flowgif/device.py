"""Where torch runs: the device (``auto`` takes CUDA when present) and its threads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowgif.errors import FlowgifError

if TYPE_CHECKING:
    import torch

__all__ = ["native_bf16", "resolve_device", "set_threads"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FlowgifError(
            "train.device cuda asked for, but no CUDA device is available; use auto"
        )
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are native (fast) on ``device``."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, may vanish
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def set_threads(threads: int | None, device: torch.device | None = None) -> None:
    """Use ``threads`` CPU threads for torch (0 or None: leave torch's default); a no-op for
    work on a GPU."""
    if threads and (device is None or device.type == "cpu"):
        import torch

        torch.set_num_threads(threads)
