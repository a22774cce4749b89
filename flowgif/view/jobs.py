"""The view's heavy work: one pool with its admission, cancellation, threads and progress.

A request that computes (a flow, what is inside one, a save) asks the :class:`Pool` for a
place. At most ``workers`` run at once, in threads off the event loop, each with its share of
the cores idle at that moment; at most :data:`QUEUE` more wait; anything beyond is told to
retry (503 with ``Retry-After``) before it is read. Uploads are read outside these places,
in :data:`UPLOADS` places of their own, so that slow senders never hold the workers' queue. A
job whose connection closes (a closed tab) is cancelled: still queued, it never starts;
running, it stops at its next part (:meth:`Job.check`). Its progress is kept by the name the
page gave it (``?job=``) until it is long finished.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowgif.config.flags import as_flags
from flowgif.errors import FlowgifError

__all__ = ["QUEUE", "UPLOADS", "CancelledError", "Job", "Pool", "refusal", "use_idle_cores"]

QUEUE = 4  # requests that may wait for a worker; more are told to retry
UPLOADS = 8  # uploads read at once (each at most the guard's cap); more are told to retry
NAMED = 64  # finished jobs whose progress is still answered by name
RETRY = "2"  # seconds a refused request is asked to wait
_IDLE: list[float] = []  # idle cores over the last second, kept by one watcher thread
_WATCH = threading.Lock()
LOG = logging.getLogger("flowgif.view")
_TEMP = re.compile(re.escape(tempfile.gettempdir()) + r"/tmp\w+/picture")  # a sent picture


class CancelledError(Exception):
    """The page that asked for the work has gone."""


@dataclass
class Job:
    """One piece of work: its progress (0 to 1), its state, and whether the page that asked
    still wants it.

    ``state`` is ``waiting``, ``running``, then ``done``, ``failed`` or ``cancelled``."""

    done: float = 0.0
    state: str = "waiting"
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`CancelledError` if the page has gone (call between parts)."""
        if self.cancelled.is_set():
            raise CancelledError


def refusal(message: str, status: int = 400, headers: dict | None = None) -> Response:
    """A refusal the page shows: one line of JSON ``{"error": ...}``, its settings named as
    the page's controls are (the command line's flags), no temporary file of the server's
    named (it is 'the file')."""
    line = message.splitlines()[0] if message.strip() else "refused"
    line = as_flags(_TEMP.sub("the file", line))
    return JSONResponse({"error": line}, status_code=status, headers=headers)


def busy(what: str = "other pictures are being computed") -> Response:
    return refusal(f"busy: {what}; retry in {RETRY} s", 503, {"Retry-After": RETRY})


def use_idle_cores(workers: int) -> int:
    """Give torch the cores idle now, shared among ``workers`` (at least one thread each), at
    the start of each job: a server runs for hours, and cores picked once at its start are
    oversubscribed when the machine gets busy later (a drop took 2.1-2.6 s instead of
    1.1-1.3 s beside one busy process on 2 cores). The idle cores are measured over the last
    second by a watcher thread (this process's own work counts as idle), so a job waits for
    no measurement. Returns the threads set."""
    import torch

    from flowgif.device import idle_cores, pick_threads

    with _WATCH:
        if not _IDLE:
            _IDLE.append(idle_cores())

            def watch() -> None:
                while True:
                    _IDLE[0] = idle_cores(1.0)

            threading.Thread(target=watch, daemon=True, name="flowgif-idle-cores").start()
    threads = max(1, pick_threads(_IDLE[0]) // workers)
    torch.set_num_threads(threads)
    return threads


class Pool:
    """The bounded pool every heavy request goes through.

    Args:
        workers: jobs run at once (threads off the event loop).
        queue: jobs that may wait for a worker; beyond them, 503.
        uploads: uploads read at once; beyond them, 503.
    """

    def __init__(self, workers: int = 1, queue: int = QUEUE, uploads: int = UPLOADS) -> None:
        self.workers, self.queue, self.uploads = workers, queue, uploads
        self.limiter = anyio.CapacityLimiter(workers)
        self.admitted = 0  # jobs running or waiting
        self.reading = 0  # uploads being read
        self.stats: Counter = Counter()  # started, finished, cancelled, refused
        self.named: OrderedDict[str, Job] = OrderedDict()  # by the page's ?job= name
        self.live: dict[int, Job] = {}  # every admitted job (cancel_all stops them)
        self.pick_threads: Callable[[int], int] = use_idle_cores

    def full(self) -> bool:
        """Whether a new job would be refused now."""
        return self.admitted >= self.workers + self.queue

    def refuse(self) -> Response:
        self.stats["refused"] += 1
        return busy()

    async def read_upload(self, request: Request) -> bytes | Response:
        """The body of ``request`` (the guard bounds its size and how slowly it may come), or
        the answer to give instead: 503 when the workers' queue or the upload places are full
        (before a byte is read), or when the client went away."""
        from starlette.requests import ClientDisconnect

        if self.full():
            return self.refuse()
        if self.reading >= self.uploads:
            self.stats["refused"] += 1
            return busy("other pictures are being sent")
        self.reading += 1
        try:
            parts = [chunk async for chunk in request.stream()]
        except ClientDisconnect:
            self.stats["cancelled"] += 1
            return Response(status_code=499)
        finally:
            self.reading -= 1
        return b"".join(parts)

    async def run(self, request: Request, fn: Callable, *args: object) -> Response:
        """``fn(*args, job)`` in a worker thread, its result as the answer: bytes as a binary
        body, a dict or list as JSON, a :class:`FlowgifError` as a 400 of one line, any other
        fault as a 500 of one line (logged as one line). 503 when full; 499 (nobody is
        listening) when the page went away."""
        if self.full():
            return self.refuse()
        self.admitted += 1
        job = Job()
        self.live[id(job)] = job
        name = request.query_params.get("job", "")
        if name and len(name) <= 64 and name.replace("-", "").isalnum() and name.isascii():
            self.named[name] = job
            self.named.move_to_end(name)
            while len(self.named) > NAMED:
                self.named.popitem(last=False)
        try:
            out = await self._heavy(request, job, fn, *args)
        except FlowgifError as e:
            job.state = "failed"
            return refusal(str(e))
        except Exception as e:  # a fault of flowgif's: one line in the page and in the log
            job.state = "failed"
            reason = f"{fn.__name__} failed: {type(e).__name__}: {e}".splitlines()[0]
            LOG.error(reason)
            return refusal(reason, 500)
        finally:
            self.admitted -= 1
            self.live.pop(id(job), None)
        if out is None:
            job.state = "cancelled"
            return Response(status_code=499)
        job.state, job.done = "done", 1.0
        if isinstance(out, (dict, list)):
            return JSONResponse(out)
        return Response(out, media_type="application/octet-stream")

    async def _heavy(self, request: Request, job: Job, fn: Callable, *args: object) -> object:
        """``fn(*args, job)`` in a worker thread; None if the page went away meanwhile."""

        def run() -> object:
            job.check()
            job.state = "running"
            self.stats["started"] += 1
            self.pick_threads(self.workers)
            try:
                return fn(*args, job)
            finally:
                self.stats["finished"] += 1

        async def watch(scope: anyio.CancelScope) -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    job.cancelled.set()
                    scope.cancel()
                    return

        out, failed = None, None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            try:
                out = await anyio.to_thread.run_sync(run, limiter=self.limiter)
            except CancelledError:
                pass
            except Exception as e:  # raised after the task group, not wrapped by it
                failed = e
            finally:
                tg.cancel_scope.cancel()
        if job.cancelled.is_set():
            self.stats["cancelled"] += 1
            return None
        if failed is not None:
            raise failed
        return out

    def progress(self, name: str) -> dict:
        """How far the job the page named ``name`` has come."""
        job = self.named.get(name)
        if job is None:
            return {"state": "unknown", "done": 0}
        state = "cancelled" if job.cancelled.is_set() and job.state != "done" else job.state
        return {"state": state, "done": round(job.done, 3)}

    def cancel_all(self) -> None:
        """Stop all work now (the server is stopping): queued work never starts, running work
        stops at its next part, a save's command is terminated."""
        for job in list(self.live.values()):
            job.cancelled.set()
