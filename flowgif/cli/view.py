"""``flowgif view [FOLDER]``: serve the live page on this machine (the ``view`` extra)."""

from __future__ import annotations

import contextlib
import socket
import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from flowgif.cli.common import app, err_console, guarded, out_console
from flowgif.errors import FlowgifError

LOCAL = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::")  # every address of this machine


def served_names(host: str) -> list[str]:
    """The Host names the page answers when bound to ``host`` (besides any address): its own,
    and this machine's names where ``host`` is this machine (loopback, or every address)."""
    names = [host]
    if host in LOCAL or host in ANY:
        names += ["localhost", "127.0.0.1", "::1"]
    if host in ANY:
        names += [socket.gethostname(), socket.getfqdn()]
    return names


@app.command()
@guarded
def view(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of run folders to list beside the exact flow; Save GIF/MP4 writes here."
        ),
    ] = Path("runs"),
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but this machine gets a warning.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 0,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default browser.")
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=16, help="Flows computed at once (each its share of the idle cores)."
        ),
    ] = 1,
) -> None:
    """A local page where a dropped, pasted, typed or drawn picture flows at once (Ctrl-C or
    SIGTERM stops it)."""
    try:  # the extra, asked for before anything starts
        import uvicorn  # noqa: F401

        import flowgif.view  # noqa: F401
    except ImportError:
        raise FlowgifError(
            "flowgif view needs its extra: pip install 'flowgif[view]' (in a checkout: "
            "pip install '.[view]')"
        ) from None
    if folder.exists() and not folder.is_dir():
        raise FlowgifError(f"{folder} is not a folder: give a folder of runs (made if missing)")
    try:  # a port in use or an address not of this machine: one line, before serving
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            # as uvicorn binds: a port a server just left (TIME_WAIT) is free, one in use not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
    except OSError as e:
        raise FlowgifError(f"cannot serve on {host} port {port}: {e.strerror}") from None
    if host not in LOCAL:
        err_console.print(
            f"warning: serving on {host}: other machines can reach this page",
            highlight=False,
            markup=False,
        )
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM, at any moment: exit 0
        _serve(folder, host, port, workers, url, open_browser)


def _serve(folder: Path, host: str, port: int, workers: int, url: str, browse: bool) -> None:
    """Serve until Ctrl-C or SIGTERM: uvicorn stops the server, then raises the signal again,
    which every command turns into KeyboardInterrupt (:func:`flowgif.cli.common.guarded`)."""
    import uvicorn

    from flowgif.view import make_app, warm_up

    out_console.print(f"flowgif view: {url}", highlight=False, markup=False)
    threading.Thread(target=warm_up, daemon=True).start()  # the first drop as fast as the next
    if browse:
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    web = make_app(folder, served_names(host), workers)
    server = uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="warning"))
    graceful = server.handle_exit

    def stop(sig: int, frame: object) -> None:  # Ctrl-C: stop the work, then the server
        web.state.cancel_all()
        graceful(sig, frame)

    server.handle_exit = stop  # type: ignore[method-assign]
    server.run()
