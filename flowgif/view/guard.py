"""What a request may do at all: one ASGI middleware in front of every route.

- **Host** (DNS rebinding): only the names of the bound address, and any address
  (``192.0.2.7:8000``, ``[::1]:8000``; a page can send those only from that address's own
  origin, and it is how other machines reach ``--host 0.0.0.0``). Others get 400.
- **Another site** may not use ``/api/``, GET included: a request whose ``Sec-Fetch-Site`` is
  ``cross-site`` or ``same-site`` (another port of this machine is the same site), or whose
  ``Origin`` is not this server, gets 403. So another page can neither make this machine
  compute (an ``<img>`` of a flow) nor learn what is in FOLDER (a thumbnail's load event).
  The page itself, a typed address and a command-line client send neither or their own origin.
- **HEAD** of ``/api/`` gets 405: it would compute a whole flow to send none of it.
- **Bodies**: at most ``caps[path]`` bytes (:data:`BODY` elsewhere), 413 whether or not the
  client said its length; each part must come within :data:`IDLE` seconds and the whole within
  :data:`WHOLE` seconds, else 408: a slow sender cannot hold a place for long.
- **Faults**: anything a route lets escape is one line (500), logged as one line, never a
  traceback; a client that leaves is nothing to report.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from starlette.responses import JSONResponse

__all__ = ["BODY", "IDLE", "WHOLE", "Guard", "host_name"]

BODY = 4096  # bytes a request other than an upload may send
IDLE = 2.0  # seconds a body may pause between parts
WHOLE = 30.0  # seconds a whole body may take
LOG = logging.getLogger("flowgif.view")
Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class _RefusedError(Exception):
    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status, self.line = status, line


def host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``,
    ``localhost:8000`` -> ``localhost``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _an_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """The middleware (module docstring).

    Args:
        app: the routes.
        hosts: the Host names served besides addresses.
        caps: the most bytes a body may have, by path (uploads); :data:`BODY` elsewhere.
    """

    def __init__(
        self, app: Callable, hosts: list[str], caps: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.hosts = {h.strip("[]").lower() for h in hosts}
        self.caps = caps or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refused = self._refused(scope, headers)
        if refused is not None:
            await self._answer(scope, receive, send, *refused)
            return
        cap = self.caps.get(scope["path"], BODY)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            await self._answer(scope, receive, send, 413, _too_large(cap))
            return
        started = False

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _bounded(receive, cap), sending)
        except _RefusedError as e:
            if not started:
                await self._answer(scope, receive, send, e.status, e.line)
        except Exception as e:  # a fault of flowgif's: one line, never a traceback
            line = f"{type(e).__name__}: {e}".splitlines()[0]
            LOG.error("%s %s failed: %s", scope.get("method"), scope.get("path"), line)
            if not started:
                await self._answer(scope, receive, send, 500, f"the server failed: {line}")

    def _refused(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        name = host_name(host).lower()
        if name not in self.hosts and not _an_address(name):
            return 400, "Invalid host header"
        if not scope["path"].startswith("/api/"):
            return None  # the page and its files: anyone who reaches the server may load them
        if scope["method"] == "HEAD":
            return 405, "HEAD is not answered here: use GET"
        site = headers.get("sec-fetch-site", "")
        origin = headers.get("origin")
        if site in ("cross-site", "same-site"):
            return 403, "Cross-site request refused"
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return 403, "Cross-origin request refused"
        return None

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, status: int, line: str) -> None:
        headers = {"Allow": "GET, POST"} if status == 405 else None
        response = JSONResponse({"error": line}, status_code=status, headers=headers)
        await response(scope, receive, send)


def _too_large(cap: int) -> str:
    if cap >= 1024 * 1024:
        return f"the picture is over {cap // (1024 * 1024)} MB"
    return f"the request's body is over {cap} bytes"


def _bounded(receive: Receive, cap: int) -> Receive:
    """``receive`` that refuses a body over ``cap`` bytes, a pause over :data:`IDLE` seconds
    and a body that takes over :data:`WHOLE` seconds (once the body is whole, it waits as long
    as the route likes: that is how a route hears that the client left)."""
    got, whole, first = 0, False, time.monotonic()

    async def bounded() -> dict:
        nonlocal got, whole
        if whole:
            return await receive()
        try:
            with anyio.fail_after(IDLE):
                message = await receive()
        except TimeoutError:
            raise _RefusedError(408, f"the body paused over {IDLE:g} s") from None
        if message["type"] == "http.request":
            got += len(message.get("body", b""))
            if got > cap:
                raise _RefusedError(413, _too_large(cap))
            whole = not message.get("more_body", False)
            if not whole and time.monotonic() - first > WHOLE:
                raise _RefusedError(408, f"the body took over {WHOLE:g} s")
        return message

    return bounded
