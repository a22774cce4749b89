"""Reading a picture file: any format Pillow reads, its first frame, EXIF orientation applied,
refused in one line when missing, empty, broken or absurdly large, and averaged down as it is
read when it is larger than any density needs."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from flowgif.errors import FlowgifError

__all__ = ["MAX_PIXELS", "WORK_PIXELS", "image_hash", "load_image"]

MAX_PIXELS = 200_000_000  # larger headers are refused before any pixel is decoded
WORK_PIXELS = 16_000_000  # larger pictures are averaged down to this as they are read


def image_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (identifies the picture a run was trained on)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _within_work_size(img: Image.Image) -> Image.Image:
    """``img``, box-averaged by a whole factor to at most :data:`WORK_PIXELS` when it is
    larger, with ``img.info["size"]`` its own size (the pixel frame of samples and scores):
    a 14,000 x 14,000 one-bit PNG of 24 KB otherwise took 8.9 GB as floating-point ink."""
    import math

    w, h = img.size
    info = {**img.info, "size": (w, h)}
    if w * h > WORK_PIXELS:
        k = math.ceil(math.sqrt(w * h / WORK_PIXELS))
        if img.mode in ("1", "P", "PA"):  # no averaging in these modes: to grey or colour
            img = img.convert("L" if img.mode == "1" else "RGBA")
        try:
            img = img.reduce(k)
        except ValueError:  # a mode reduce does not take
            img = img.resize((max(1, w // k), max(1, h // k)), Image.Resampling.BOX)
    img.info = info
    return img


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says, its ``info["size"]`` turned with it."""
    out = ImageOps.exif_transpose(img)  # its info a copy of img's
    if out.size != img.size:  # a quarter turn
        out.info["size"] = img.info["size"][::-1]
    return out


def load_image(path: Path) -> Image.Image:
    """Open any picture Pillow reads: first frame, EXIF orientation applied, at most
    :data:`WORK_PIXELS`.

    ``img.info["frames"]`` keeps the file's frame count, so callers can say when an animation
    was reduced to its first frame.

    Full size matters: the pixel frame of samples and scores is the original picture's,
    ``img.info["size"]``; a picture over :data:`WORK_PIXELS` is box-averaged down to it as it
    is read (its density grid is far smaller still), so that memory stays bounded.

    Args:
        path: the file.

    Raises:
        FlowgifError: missing, a folder, empty, not an image, truncated, or absurdly large.
    """
    path = Path(path)
    try:
        if not path.exists():
            hints = {"text": " (a word: --text WORD)", "target": " (a toy: --target NAME)"}
            hint = hints.get(str(path).partition(":")[0], "")
            raise FlowgifError(f"image not found: {path}{hint}")
        if path.is_dir():
            raise FlowgifError(f"{path} is a folder, not an image file")
        if path.stat().st_size == 0:
            raise FlowgifError(f"{path} is an empty file")
    except OSError as err:  # a name too long, a folder that may not be searched
        raise FlowgifError(f"cannot read {path}: {err.strerror}") from None
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise FlowgifError(
                    f"{path} is {w}x{h} pixels; flowgif accepts at most {MAX_PIXELS:,} pixels"
                )
            frames = getattr(img, "n_frames", 1)
            img.seek(0)
            img.load()
            img = _upright(_within_work_size(img))  # shrunk first: no full-size copy
            img.info["frames"] = frames  # an animation is read as its first frame
    except FlowgifError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FlowgifError(
            f"{path} is too large to decode safely: at most {MAX_PIXELS:,} pixels"
        ) from None
    except UnidentifiedImageError:
        raise FlowgifError(f"{path} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise FlowgifError(f"{path} could not be decoded ({err})") from None
    return img
