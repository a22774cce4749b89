"""Where torch runs: the device (``auto`` takes CUDA when present) and its threads."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from flowgif.errors import FlowgifError

if TYPE_CHECKING:
    import torch

__all__ = ["idle_cores", "native_bf16", "pick_threads", "resolve_device", "set_threads"]


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


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU, ``(idle, total)`` jiffies since boot, from ``/proc/stat`` (empty elsewhere)."""
    times: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                values = [int(v) for v in fields[:8]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                times[int(name[3:])] = (idle, sum(values))
    except (OSError, ValueError, IndexError):
        return {}
    return times


def _usable() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _quota() -> float:
    """The CPUs a cgroup (v2) quota allows this process, or infinity."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            limit, period = f.read().split()[:2]
        return float("inf") if limit == "max" else max(1.0, int(limit) / int(period))
    except (OSError, ValueError):
        return float("inf")


def _own_jiffies() -> int:
    """CPU time this process (all its threads) has used, in ``/proc/stat``'s units."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0


def idle_cores(window: float = 0.1) -> float:
    """How many of the CPUs this process may use were idle over the last ``window`` seconds,
    or busy with this process itself (its own threads still spinning after earlier work are
    not a neighbour): a sum of fractions, 1.0 is one whole core free. Without
    ``/proc/stat``: all."""
    usable = _usable()
    before, own = _cpu_times(), _own_jiffies()
    if not before:
        return float(len(usable))
    time.sleep(window)
    after, own = _cpu_times(), _own_jiffies() - own
    free, ticks = 0.0, []
    for cpu in usable:
        if cpu in before and cpu in after:
            idle = after[cpu][0] - before[cpu][0]
            total = after[cpu][1] - before[cpu][1]
            free += idle / total if total > 0 else 1.0
            ticks.append(total)
    if ticks and max(ticks) > 0:
        free += own / (sum(ticks) / len(ticks))
    return min(free, float(len(usable)), _quota())


def pick_threads(idle: float | None = None) -> int:
    """The CPU threads torch should use here and now: the cores that are idle (at least one).

    Why not torch's default (every core): its OpenMP threads split each operation evenly and
    meet at a barrier, so one thread that shares its core with another process holds up all
    the others — on a 2-core machine with one busy neighbour a render took 4x as long with 2
    threads as with 1 (bench/THREADS.md). Idle cores are measured (``/proc/stat`` over 0.1 s,
    within this process's affinity and cgroup quota); ``OMP_NUM_THREADS``, when set, is the
    user's choice and wins."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    free = idle_cores() if idle is None else idle
    return max(1, int(free + 0.25))  # a core three quarters free counts; a half-busy one not


def set_threads(threads: int | None, device: torch.device | None = None) -> int:
    """Use ``threads`` CPU threads for torch (0 or None: :func:`pick_threads`); a no-op for
    work on a GPU. Returns the count set (0 on a GPU)."""
    if device is not None and device.type != "cpu":
        return 0
    import torch

    count = threads or pick_threads()
    torch.set_num_threads(count)
    return count
