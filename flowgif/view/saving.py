"""Save GIF/MP4: what the page shows, written into FOLDER by flowgif's own commands, run as
they are shown.

A picture's exact flow is trained once into a run folder ``FOLDER/view-ID`` (``flowgif train
--method exact``) and rendered from there (``flowgif render``) under a fresh name
``view-ID-K.EXT``. What may be used or written is proved, never guessed from a name:

- a run folder is reused only when flowgif's marker says ``train`` made it for this very
  picture and its config reads the ink as the page does; otherwise the next name is taken
  (``view-ID-r2`` ...). One made by another server at this moment is waited for.
- a file name is taken by creating its claim file exclusively (``.NAME.~flowgif-claim``,
  holding the claiming process), so two servers on one FOLDER never pick the same name, and a
  claim left by a process that is gone is taken over; a name anything holds (a file, a
  folder, a symbolic link, even a dangling one) is passed over.
- the commands write to temporary names and rename at the end; a command stopped (a closed
  tab, the server stopping) cleans after itself, and what a killed one left is swept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from flowgif.errors import FlowgifError
from flowgif.files import alive, os_reason, printable, sweep_stale
from flowgif.view.jobs import CancelledError, Job

__all__ = ["CLAIM", "argument", "claim_name", "save", "stop_children"]

CLAIM = ".~flowgif-claim"  # a name being written: ``.NAME`` + this, created exclusively
WAIT = 600.0  # seconds a save waits for another server training the same picture
STARTING = 60.0  # seconds a just-claimed run folder is taken as being trained
_LOCK = threading.Lock()
_MAKING: dict[Path, threading.Lock] = {}  # a run folder is trained once at a time here
_CHILDREN: set[subprocess.Popen] = set()  # the commands running now


def save(folder: Path, data: bytes | None, text: str | None, settings: dict, job: Job) -> dict:
    """Write what the page shows as a GIF or MP4 in ``folder`` (module docstring): the run
    ``settings["run"]`` of the folder, or the picture ``data`` (or word ``text``) named
    ``settings["id"]``, its ink read as ``settings`` say. Returns the file's name and the
    commands run (the last one the page shows)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowgifError(f"cannot write into {folder}: {os_reason(e)}") from None
    commands: list[str] = []
    if settings.get("run"):  # a run of the folder: rendered as it is
        pid, run = settings["run"], folder / settings["run"]
    else:
        pid = settings["id"]
        how = {k: settings[k] for k in ("ink", "invert", "resolution")}
        run = _picture_run(folder, pid, data, text, how, commands, job)
    out, claim = claim_name(folder, f"view-{pid}", settings["format"])
    try:
        render = ["render", "--out", argument(out), "--particles", str(settings["particles"])]
        render += ["--color", settings["color"], "--background", settings["background"]]
        render += ["--pace", settings["pace"]]
        if settings["trail"]:
            render += ["--trail", str(settings["trail"])]
        commands.append(_flowgif([*render, argument(run)], job, folder))
    finally:
        claim.unlink(missing_ok=True)
    return {"file": out.name, "command": commands[-1], "commands": commands}


def argument(path: Path) -> str:
    """A path as a command's argument that is never read as an option (``-h`` -> ``./-h``)."""
    text = str(path)
    return f"./{text}" if text.startswith("-") else text


def claim_name(folder: Path, stem: str, ext: str) -> tuple[Path, Path]:
    """The first ``STEM-K.EXT`` in ``folder`` that nothing holds, claimed for this process
    (module docstring): the name and its claim file (the caller removes it when done)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    k = 1
    while True:
        out = folder / f"{stem}-{k}.{ext}"
        claim = folder / f".{out.name}{CLAIM}"
        k += 1
        if os.path.lexists(out):
            continue
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            if _stale(claim):
                claim.unlink(missing_ok=True)
                k -= 1  # try the same name again
            continue
        except OSError as e:
            raise FlowgifError(f"cannot write into {folder}: {os_reason(e)}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        if os.path.lexists(out):  # written between the look and the claim
            claim.unlink(missing_ok=True)
            continue
        return out, claim


def _stale(claim: Path) -> bool:
    """Whether ``claim`` was left by a process of this machine that is gone (a claim that is
    not one of flowgif's, or another machine's, is never taken over)."""
    try:
        owner = json.loads(claim.read_text(encoding="utf-8"))
        if claim.is_symlink() or owner.get("host") != socket.gethostname():
            return False
        return not alive(int(owner["pid"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _picture_run(
    folder: Path,
    pid: str,
    data: bytes | None,
    text: str | None,
    how: dict,
    commands: list[str],
    job: Job,
) -> Path:
    """The run folder of this picture's exact flow: one proved to be it, or a new one trained
    now (its command added to ``commands``)."""
    # the digest train's marker records (flowgif.sources: a file's bytes, or "text:WORD")
    digest = hashlib.sha256(data if data is not None else f"text:{text}".encode()).hexdigest()
    k = 1
    while True:
        run = folder / (f"view-{pid}" if k == 1 else f"view-{pid}-r{k}")
        with _LOCK:
            making = _MAKING.setdefault(run, threading.Lock())
        with making:
            found = _wait_for(run, digest, how, job)
            if found == "ours":
                return run
            if found == "absent":
                with tempfile.TemporaryDirectory() as tmp:
                    if text is not None:
                        what = [f"--text={text}"]
                    else:
                        pic = Path(tmp) / "picture"
                        pic.write_bytes(data or b"")
                        what = ["--img", str(pic)]
                    train = ["train", *what, "--method", "exact"]
                    train += ["--resolution", str(how["resolution"]), "--ink", how["ink"]]
                    train += ["--invert"] if how["invert"] else []
                    train += ["--out", argument(run)]
                    try:
                        commands.append(_flowgif(train, job, folder))
                    except FlowgifError:
                        if _wait_for(run, digest, how, job) != "ours":
                            raise  # not another server's same picture at the same moment
                return run
        k += 1


def _wait_for(run: Path, digest: str, how: dict, job: Job) -> str:
    """What ``run`` is for this picture: ``ours`` (a finished run of it), ``absent`` (nothing
    there: it may be trained), ``other`` (anything else). A run of it another process is
    making now is waited for."""
    from flowgif.store import CHECKPOINT, in_use, read_marker

    deadline = time.monotonic() + WAIT
    while True:
        if not os.path.lexists(run):
            return "absent"
        if run.is_symlink() or not run.is_dir():
            return "other"
        marker = read_marker(run)
        if marker is None or (marker["made_by"], marker.get("picture")) != ("train", digest):
            return "other"
        if (run / CHECKPOINT).is_file():
            return "ours" if _reads_ink_as(run, how) else "other"
        if time.monotonic() > deadline or not (in_use(run) or _young(run)):
            return "other"  # left unfinished by a process that is gone
        job.check()
        time.sleep(0.25)


def _reads_ink_as(run: Path, how: dict) -> bool:
    """Whether the run's config reads the picture as the page does (ink, invert, grid)."""
    import tomllib

    try:
        config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
        density = config["density"]
        return (
            density.get("ink", "auto") == how["ink"]
            and bool(density.get("invert", False)) == how["invert"]
            and density.get("resolution") == how["resolution"]
            and config.get("train", {}).get("objective") == "exact"
            and config.get("train", {}).get("family") == "exact"
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _young(run: Path) -> bool:
    """Whether ``run``'s marker was made in the last :data:`STARTING` seconds (the process
    that claimed it may not hold it yet)."""
    from flowgif.store import MARKER

    try:
        return time.time() - (run / MARKER).stat().st_mtime < STARTING
    except OSError:
        return False


def _flowgif(args: list[str], job: Job, folder: Path) -> str:
    """Run ``flowgif ARGS`` as its own process, stopped (and its temporaries swept) if the
    page goes; its command line (raises its one line)."""
    job.check()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgif", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    with _LOCK:
        _CHILDREN.add(proc)
    try:
        while True:
            try:
                _, stderr = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if job.cancelled.is_set():
                    _stop(proc)
                    sweep_stale(folder)  # what it could not clean
                    raise CancelledError from None
    finally:
        with _LOCK:
            _CHILDREN.discard(proc)
    if proc.returncode != 0:
        sweep_stale(folder)
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else "flowgif failed"
        raise FlowgifError(printable(reason))
    return "flowgif " + " ".join(shlex.quote(a) for a in args)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (flowgif then removes what it was writing), SIGKILL if it does not go."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_children() -> None:
    """Stop every command a save is running (the server is stopping), and wait for them."""
    with _LOCK:
        children = list(_CHILDREN)
    for proc in children:
        _stop(proc)
