"""Where a batch's pictures run: this machine's processes (``local``), or a Ray cluster.

Both hand each stack of pictures (one picture unless ``batch.stack`` says more) to
:func:`flowgif.batch.work.process_stack`, which trains or resumes each into its own run folder and
never raises for a bad picture, so they share every rule of a batch:
``done.json`` last, skip what is done, resume what was cut, redo what changed.

``ray`` (an optional extra: ``pip install 'flowgif[ray]'``) submits one task per stack with
retries: a task whose worker dies is run again, and resumes from the picture's last
checkpoint. With no address, Ray starts a cluster on this machine; the output folder must be
reachable at the same path from every node (a shared file system).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

from flowgif.batch.work import BatchItem, Chunk, EngineOptions, chunk_items, process_stack
from flowgif.config import Config
from flowgif.errors import FlowgifError

__all__ = ["run_on_ray"]

RETRIES = 3  # times a picture's task is run again when its worker dies
CONNECT_TIMEOUT = 10.0  # seconds an address has to accept a connection (README)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FlowgifError(
            "the ray engine needs Ray, an optional extra: pip install 'flowgif[ray]'"
        ) from None
    return ray


def run_on_ray(
    chunks: list[Chunk],
    config: Config,
    render: dict,
    options: EngineOptions,
    finish: Callable[[BatchItem], None],
    stop: Callable[[], bool],
) -> None:
    """Run every chunk of ``(picture, run folder, label)`` s (a stack: one picture unless
    ``batch.stack`` says more) as a Ray task; ``finish`` each result as it arrives (in the
    order they finish). ``stop`` cancels what has not finished: a running picture stops at its
    step (a rerun resumes it), the rest are not started."""
    ray = _ray()
    with _connected(ray, options.address):
        threads = max(1, int(options.cpus))
        remote = ray.remote(num_cpus=options.cpus, num_gpus=options.gpus, max_retries=RETRIES)(
            process_stack
        )
        refs = {remote.remote(chunk, config, render, threads): chunk for chunk in chunks}
        cancelled = False
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                chunk = refs.pop(ref)
                try:
                    items = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    why = "the batch was stopped"
                    items = chunk_items(chunk, "not started", why)
                except ray.exceptions.RayError as err:  # retries spent, or the cluster went
                    why = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
                    why = f"its Ray task failed: {why}"
                    items = chunk_items(chunk, "failed", why)
                for item in items:
                    finish(item)
            if stop() and not cancelled:
                cancelled = True
                for ref in refs:  # a KeyboardInterrupt in a running task: it stops at its step
                    ray.cancel(ref, force=False)


def reach(address: str | None, timeout: float | None = None) -> None:
    """Check that ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a connection within
    ``timeout`` seconds, before Ray's own client retries for minutes; ``None`` and ``auto``
    are Ray's to find.

    Raises:
        FlowgifError: a malformed address, or nothing answering there in time.
    """
    if address in (None, "auto"):
        return
    assert address is not None
    timeout = timeout or CONNECT_TIMEOUT
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FlowgifError(f"batch.address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            why = _grpc_answer(conn, timeout)
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise FlowgifError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({why}); is its "
            "head running, and the port open?"
        ) from None
    if why:
        raise FlowgifError(
            f"{address} answers, but not as a Ray cluster does ({why}); give the address of "
            "a Ray head (its GCS port, 6379 by default, or ray://HOST:10001)"
        )


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # a SETTINGS frame, no settings


def _grpc_answer(conn: socket.socket, timeout: float) -> str:
    """What is wrong with the peer as a Ray head, or "": Ray's GCS and client servers speak
    gRPC, so an HTTP/2 server answers a client's preface with a SETTINGS frame. Anything
    else (silence, a close, other bytes) is not Ray, and Ray's own client would wait on it
    for minutes."""
    conn.settimeout(timeout)
    head = b""
    try:
        conn.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)
        while len(head) < 9:
            part = conn.recv(9 - len(head))
            if not part:
                return "it closed the connection"
            head += part
    except TimeoutError:
        return f"it said nothing within {timeout:g} s"
    except ConnectionError:
        return "it closed the connection"
    if head[3] != 0x04:  # the frame type: SETTINGS
        return "it does not speak gRPC"
    return ""


@contextlib.contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Connect (or start a local cluster) for the duration of one batch."""
    if ray.is_initialized():
        yield
        return
    reach(address)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, ValueError, RuntimeError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise FlowgifError(f"cannot reach the Ray cluster at {address}: {why}") from None
    try:
        yield
    finally:
        ray.shutdown()
