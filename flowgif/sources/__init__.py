"""What flows: the distributions a flow starts from (t = 0) and ends at (t = 1).

Each is named by one string, the same at either end:

- ``noise``: N(0, I) (:mod:`flowgif.sources.noise`), the default start;
- a picture's path (:mod:`flowgif.sources.picture`): the density of its ink;
- ``text:WORD``: a word set in type, then the same as a picture;
- ``target:NAME``: a classic toy density (:mod:`flowgif.sources.toys`), or an energy
  ``u1``-``u4`` (:mod:`flowgif.sources.energies`), known up to a constant, so only an end.

:data:`KINDS` is the registry: a new kind is one module and one line there.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowgif.errors import FlowgifError
from flowgif.sources.base import Distribution
from flowgif.sources.toys import ENERGIES, TOYS, WINDOW

if TYPE_CHECKING:
    from PIL import Image

    from flowgif.config import DensityConfig

__all__ = [
    "KINDS",
    "NOISE",
    "Distribution",
    "Source",
    "as_start",
    "end_spec",
    "load_source",
    "spec",
]

NOISE = "noise"


@dataclass
class Source:
    """One end of a flow, loaded.

    Attributes:
        label: how it was named: a picture's path as given, ``text:WORD``, ``target:NAME``
            or ``noise``.
        digest: SHA-256 identifying the content (a resumed run must match it).
        density: the distribution (pictures, words and toys: an
            :class:`~flowgif.sources.picture.ImageDensity`).
        picture: the picture it came from (toys: a grey rendering; noise: None).
        energy: an energy target's name: known up to a constant, no sampler.
    """

    label: str
    digest: str
    density: Distribution
    picture: Image.Image | None = None
    energy: str | None = None

    @property
    def stored_label(self) -> str:
        """What a checkpoint records: ``label``, a picture's path made absolute (so a run
        resumed from another folder still finds it)."""
        if self.kind == "picture":
            return str(Path(self.label).absolute())
        return self.label

    @property
    def kind(self) -> str:
        return kind_of(self.label)

    @property
    def is_noise(self) -> bool:
        return self.label == NOISE


def kind_of(label: str) -> str:
    """``noise``, ``text``, ``target`` or ``picture`` (everything else is a path)."""
    if label == NOISE:
        return NOISE
    prefix, sep, _ = label.partition(":")
    return prefix if sep and prefix in KINDS and prefix != "picture" else "picture"


def _noise(_: str, dc: DensityConfig) -> Source:
    from flowgif.sources.noise import Noise

    return Source(NOISE, _digest(NOISE), Noise())


def _text(word: str, dc: DensityConfig) -> Source:
    from flowgif.sources.toys import text_image

    label = f"text:{word}"
    return _picture_source(label, _digest(label), text_image(word), dc)


def _target(name: str, dc: DensityConfig) -> Source:
    from flowgif.sources.energies import energy_density
    from flowgif.sources.toys import toy_density, toy_picture

    name = name.lower()
    label = f"target:{name}"
    if name in ENERGIES:
        density = energy_density(name, dc.resolution)
        return Source(label, _digest(label), density, toy_picture(density), name)
    density = toy_density(name, dc.resolution)
    return Source(label, _digest(label), density, toy_picture(density))


def _picture(path: str, dc: DensityConfig) -> Source:
    from flowgif.sources.picture import image_hash, load_image

    img = load_image(Path(path))  # checks the file first: missing, a folder, not a picture
    return _picture_source(path, image_hash(Path(path)), img, dc)


def _picture_source(label: str, digest: str, img: Image.Image, dc: DensityConfig) -> Source:
    from flowgif.sources.picture import ImageDensity

    density = ImageDensity.from_image(
        img, dc.resolution, dc.invert, dc.ink_floor, dc.extent, ink_model=dc.ink
    )
    return Source(label, digest, density, img)


KINDS: dict[str, Callable[[str, DensityConfig], Source]] = {
    NOISE: _noise,
    "text": _text,
    "target": _target,
    "picture": _picture,
}


def load_source(spec: str | Path, config: DensityConfig, start: bool = False) -> Source:
    """Load one end of a flow from its name (module docstring); a ``Path`` is a picture.

    Args:
        spec: ``noise``, a picture's path, ``text:WORD`` or ``target:NAME``.
        config: how pictures become densities.
        start: it is the start (t = 0): a picture is then blurred by ``config.start_blur``
            cells, and an energy (no sampler) is refused.

    Raises:
        FlowgifError: an unreadable picture, an unknown target, an energy as a start.
    """
    if isinstance(spec, Path):
        source = _picture(str(spec), config)
    else:
        kind = kind_of(spec)
        rest = spec if kind in (NOISE, "picture") else spec.partition(":")[2]
        if kind in ("text", "target") and not rest.strip():
            what = "WORD" if kind == "text" else "NAME"
            raise FlowgifError(f"{spec!r} names no {kind}: write {kind}:{what}")
        if kind == "target" and rest.lower() not in (*TOYS, *ENERGIES):
            raise FlowgifError(
                f"unknown target {rest!r}; choose one of: {', '.join((*TOYS, *ENERGIES))}"
            )
        source = KINDS[kind](rest, config)
    return as_start(source, config) if start else source


def as_start(source: Source, config: DensityConfig) -> Source:
    """A loaded source as the start of a flow: a picture blurred by ``config.start_blur``
    cells, an energy refused (it has no sampler).

    Raises:
        FlowgifError: ``source`` is an energy.
    """
    if source.energy is not None:
        raise FlowgifError(
            f"{source.label} is an energy, known only up to a constant, with no way to draw "
            "from it: it can be the end of a flow, not its start"
        )
    if source.kind == NOISE or config.start_blur <= 0:
        return source
    return dataclasses.replace(source, density=source.density.blurred(config.start_blur))


def spec(name: str) -> str | Path:
    """A source named in text: ``noise``, ``text:WORD`` and ``target:NAME`` by name, anything
    else the path of a picture (``./noise`` is a file called noise)."""
    return name if kind_of(name) != "picture" else Path(name)


def end_spec(image: Path | None, text: str | None, target: str | None) -> str | Path:
    """The one of a picture, a word or a toy target that is given, as :func:`load_source`
    takes it.

    Raises:
        FlowgifError: none of them or more than one is given.
    """
    if sum(x is not None for x in (image, text, target)) != 1:
        raise FlowgifError("give exactly one picture, word or target to fit")
    if image is not None:
        return Path(image)
    return f"text:{text}" if text is not None else f"target:{target}"


def toy_extent(source: Source) -> float | None:
    """The model frame's half size a toy or energy target needs (``density.extent``)."""
    if source.energy is not None:
        from flowgif.sources.energies import WINDOWS

        return WINDOWS[source.energy]
    return WINDOW if source.kind == "target" else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
