"""A batch folder sorted out: the pictures (found by content, not suffix), every other file with
the reason it is not one, and a distinct run-folder name per picture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flowgif.errors import FlowgifError, Interrupted
from flowgif.files import printable

__all__ = ["PICTURE_SUFFIXES", "Scan", "run_names", "scan"]


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Scan:
    """A batch folder sorted out: pictures to train, and every other file with its reason."""

    pictures: list[Path]
    failed: list[tuple[Path, str]]
    ignored: list[tuple[Path, str]]


def scan(
    folder: Path,
    recursive: bool = False,
    skip: Path | None = None,
    stop: Callable[[], bool] | None = None,
) -> Scan:
    """Sort the files of ``folder`` (sub-folders too when ``recursive``), in name order.

    Pictures are found by content, not suffix; a file whose suffix says picture but that does
    not decode is a failure, other files are ignored with a reason. ``skip`` (the output
    folder) and folders of flowgif's own output (a run folder's marker, a signed
    ``batch.json``) are not searched. A recursive scan visits each real folder once, however
    symbolic links loop (folders are known by device and inode), and ends when ``stop`` asks.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FlowgifError(f"not a folder: {printable(folder)}")
    skip_at = skip.resolve() if skip is not None else None
    found = Scan([], [], [])
    seen: set[tuple[int, int]] = set()
    stop = stop or (lambda: False)

    def visit(where: Path) -> None:
        try:
            key = (where.stat().st_dev, where.stat().st_ino)
            entries = sorted(where.iterdir(), key=lambda p: p.name)
        except OSError as err:
            found.failed.append((where, f"cannot list this folder ({err.strerror or err})"))
            return
        seen.add(key)
        for path in entries:
            if stop():
                raise Interrupted(0, False, None)
            if path.is_dir():
                why = _skipped_folder(path, skip_at, recursive, seen)
                if why:
                    found.ignored.append((path, why))
                else:
                    visit(path)
            else:
                _sort_file(path, found)

    visit(folder)
    return found


def _skipped_folder(
    path: Path, skip_at: Path | None, recursive: bool, seen: set[tuple[int, int]]
) -> str:
    """Why a sub-folder is not searched, or "" to search it."""
    from flowgif.owned import made_by_flowgif
    from flowgif.store import read_marker

    if path.resolve() == skip_at:
        return "the output folder"
    if read_marker(path) is not None or made_by_flowgif(path / "batch.json"):
        return "a folder of flowgif's own output"
    if path.name.startswith("."):
        return "a hidden folder"
    if not recursive:
        return "a sub-folder; a recursive batch includes it"
    try:
        key = (path.stat().st_dev, path.stat().st_ino)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if key in seen:
        return "a folder already searched (a symbolic link back into the scan)"
    return ""


def _sort_file(path: Path, found: Scan) -> None:
    """A file: a picture, a failure (a picture's suffix, not decodable) or ignored."""
    if not path.is_file():
        found.ignored.append((path, "not a regular file"))
    elif path.name.startswith("."):
        found.ignored.append((path, "a hidden file"))
    else:
        reason = _not_a_picture(path)
        if not reason and _made_by_flowgif(path):
            found.ignored.append((path, "flowgif's own output (an animation or picture it wrote)"))
        elif not reason:
            found.pictures.append(path)
        elif path.suffix.lower() in PICTURE_SUFFIXES:
            found.failed.append((path, reason))
        else:
            found.ignored.append((path, "not a picture"))


def _made_by_flowgif(path: Path) -> bool:
    """A GIF, WebP or PNG that carries flowgif's signature (a render, a plot, samples): not a
    picture to fit, whatever folder it was written to."""
    from flowgif.owned import made_by_flowgif

    return path.suffix.lower() in (".gif", ".webp", ".png") and made_by_flowgif(path)


def _not_a_picture(path: Path) -> str:
    """Why Pillow cannot read ``path`` as a picture, or "" if it can."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Image.DecompressionBombError:
        return ""  # a picture: let its run report it as too large
    except UnidentifiedImageError:
        return "not a picture Pillow can decode"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        return f"damaged picture ({err})"
    return ""


def run_names(folder: Path, pictures: list[Path]) -> list[str]:
    """One run-folder name per picture, distinct (a shared stem keeps the suffix too)."""
    folder = Path(folder)

    def base(p: Path, with_suffix: bool) -> str:
        rel = p.relative_to(folder)
        parts = [*rel.parent.parts, rel.stem + (f"-{rel.suffix[1:]}" if with_suffix else "")]
        return "__".join(parts) or "picture"

    plain = [base(p, False) for p in pictures]
    clash = {n for n in plain if plain.count(n) > 1}
    names = [base(p, True) if n in clash else n for p, n in zip(pictures, plain, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # anything still shared gets a number, in name order
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique
