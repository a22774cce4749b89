"""The local engine: a batch's stacks in this process, or in a pool of worker processes (one per
visible GPU on CUDA)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from flowgif.batch.work import STOP, BatchItem, Chunk, EngineOptions, chunk_items, process_stack
from flowgif.config import Config
from flowgif.device import resolve_device

__all__ = ["run_local"]


BUSY: list[int] = []  # in a worker: non-empty while it works on a stack
ORPHAN_GRACE = 120.0  # seconds an orphaned worker may take to checkpoint its picture


def _watch_parent(parent: int) -> None:
    """In each worker: when the batch's process is gone (killed, even by SIGKILL), stop the
    running picture at its step (its checkpoint saved) and end the worker, instead of
    waiting for work that will never come."""
    while os.getppid() == parent:
        time.sleep(0.5)
    STOP.append(signal.SIGTERM)
    deadline = time.monotonic() + ORPHAN_GRACE
    while BUSY and time.monotonic() < deadline:
        time.sleep(0.1)
    os._exit(1)


def _work(chunk: Chunk, config: Config, render: dict, threads: int | None) -> list[BatchItem]:
    """A worker's stack (:func:`process_stack`), marked busy for :func:`_watch_parent`."""
    BUSY.append(1)
    try:
        return process_stack(chunk, config, render, threads)
    finally:
        BUSY.clear()


def _worker_init(devices: Any = None, parent: int | None = None) -> None:
    """In each worker: a signal asks the running picture to stop after its step; the worker
    ends with the batch's process (:func:`_watch_parent`); on a machine with several GPUs,
    the worker takes one of them (from the queue ``devices``)."""
    if devices is not None:
        with contextlib.suppress(queue.Empty):
            device = devices.get_nowait()
            import torch

            torch.cuda.set_device(device)

    def handler(signum: int, frame: object) -> None:
        STOP.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_local(
    chunks: list[Chunk],
    config: Config,
    render: dict,
    options: EngineOptions,
    finish: Callable[[BatchItem], None],
    stop: Callable[[], bool],
) -> None:
    """Each chunk (a stack) in this process, or in ``jobs`` worker processes; on CUDA one
    worker per visible GPU."""
    jobs = options.jobs
    devices = _gpus(config)
    if devices:
        jobs = len(devices)  # one process per GPU: more would queue on the same device
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            if stop():
                break
            for item in process_stack(chunk, config, render, stop=stop):
                finish(item)
        return
    threads = None if devices else 1
    if not devices:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    import multiprocessing

    # CUDA cannot be used in a forked child of a process that touched it: spawn there.
    context = multiprocessing.get_context("spawn" if devices else None)
    spread = context.Queue()
    for device in devices:
        spread.put(device)
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_worker_init,
        initargs=(spread, os.getpid()),
    ) as pool:
        futures: dict[Future[list[BatchItem]], Chunk] = {
            pool.submit(_work, chunk, config, render, threads): chunk for chunk in chunks
        }
        forwarded = False
        running = set(futures)
        while running:
            finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                if future.cancelled():
                    continue
                try:
                    items = future.result()
                except Exception as err:  # the worker process died (killed, out of memory)
                    why = f"its worker died ({err!r})"
                    items = chunk_items(futures[future], "failed", why)
                for item in items:
                    finish(item)
            if stop() and not forwarded:
                forwarded = True
                for future in running:
                    future.cancel()  # those not yet handed to a worker
                for proc in list(getattr(pool, "_processes", {}).values()):
                    with contextlib.suppress(OSError):  # a SIGTERM to this process alone
                        os.kill(proc.pid, signal.SIGTERM)  # must reach the workers too


def _gpus(config: Config) -> list[int]:
    """The CUDA devices a batch spreads over: every visible one when the device is ``auto``
    or ``cuda``; none on the CPU or for one named device (``cuda:1``)."""
    device = resolve_device(config.train.device)
    if device.type != "cuda" or device.index is not None:
        return []
    import torch

    return list(range(torch.cuda.device_count()))
