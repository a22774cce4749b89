"""A batch folder sorted out: the pictures (found by content, not suffix), every other file with
the reason it is not one, and a distinct run-folder name per picture."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flowgif.errors import FlowgifError

__all__ = ["PICTURE_SUFFIXES", "Scan", "run_names", "scan"]


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


RUN_MARKERS = ("checkpoint.pt", "done.json", "batch.json")  # a folder flowgif wrote


@dataclass
class Scan:
    """A batch folder sorted out: pictures to train, and every other file with its reason."""

    pictures: list[Path]
    failed: list[tuple[Path, str]]
    ignored: list[tuple[Path, str]]


def scan(folder: Path, recursive: bool = False, skip: Path | None = None) -> Scan:
    """Sort the files of ``folder`` (sub-folders too when ``recursive``), in name order.

    Pictures are found by content, not suffix; a file whose suffix says picture but that does
    not decode is a failure, other files are ignored with a reason. ``skip`` (the output
    folder) and folders holding flowgif's own runs are not searched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FlowgifError(f"not a folder: {folder}")
    skip_at = skip.resolve() if skip is not None else None
    pictures: list[Path] = []
    failed: list[tuple[Path, str]] = []
    ignored: list[tuple[Path, str]] = []

    def visit(where: Path) -> None:
        try:
            entries = sorted(where.iterdir(), key=lambda p: p.name)
        except OSError as err:
            failed.append((where, f"cannot list this folder ({err.strerror or err})"))
            return
        for path in entries:
            if path.is_dir():
                if path.resolve() == skip_at:
                    ignored.append((path, "the output folder"))
                elif any((path / m).exists() for m in RUN_MARKERS):
                    ignored.append((path, "a folder of flowgif's own output"))
                elif path.name.startswith("."):
                    ignored.append((path, "a hidden folder"))
                elif not recursive:
                    ignored.append((path, "a sub-folder; a recursive batch includes it"))
                else:
                    visit(path)
                continue
            if not path.is_file():
                ignored.append((path, "not a regular file"))
            elif path.name.startswith("."):
                ignored.append((path, "a hidden file"))
            else:
                reason = _not_a_picture(path)
                if not reason:
                    pictures.append(path)
                elif path.suffix.lower() in PICTURE_SUFFIXES:
                    failed.append((path, reason))
                else:
                    ignored.append((path, "not a picture"))

    visit(folder)
    return Scan(pictures, failed, ignored)


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
