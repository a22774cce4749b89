"""What a run is trained on: a picture file, a word set in type, or a toy or energy target."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from flowgif.config import Config
from flowgif.density import ImageDensity, image_hash, load_image
from flowgif.energy import ENERGIES, WINDOWS, energy_density
from flowgif.errors import FlowgifError
from flowgif.flows import FAMILIES
from flowgif.targets import WINDOW, text_image, toy_density, toy_picture

__all__ = ["ENERGY_RECIPE", "Source"]

# How a continuous flow fits an energy: reverse KL through 8 fixed RK4 steps, backpropagated
# directly, on a smooth small field, with RNODE's kinetic and Jacobian penalties. Without them
# the field learns to exploit the 8 steps' error in the log-density after ~400 steps (the
# training bound falls to -9 while the true one rises to +5). configs/energy.toml; README.
ENERGY_RECIPE = {
    "train.method": "reverse",
    "field.width": 64,
    "field.activation": "tanh",
    "field.fourier_features": 0,
    "ffjord.solver": "rk4",
    "ffjord.steps": 8,
    "ffjord.adjoint": False,
    "ffjord.kinetic": 0.05,
    "ffjord.jacobian": 0.05,
}


@dataclass
class Source:
    """What a run is trained on: a picture file, a word set in type, or a toy density.

    Attributes:
        label: the picture's path as given, ``text:WORD`` or ``target:NAME``.
        digest: SHA-256 identifying the content (a resumed run must match it).
        picture: the picture (toy densities: a grey rendering of the density).
        density: the density to fit.
        config: the config, with ``density.extent`` set to the toy window for toy targets (and
            :data:`ENERGY_RECIPE` for energy targets, unless the config already names
            ``reverse`` or a discrete flow, which is then trained by reverse KL too).
        energy: the energy target's name, if it is one.
    """

    label: str
    digest: str
    picture: Image.Image
    density: ImageDensity
    config: Config
    energy: str | None = None

    @property
    def stored_label(self) -> str:
        """What the checkpoint records: ``label``, with a picture's path made absolute (so a
        run resumed from another folder still finds it)."""
        if self.label.startswith(("text:", "target:")):
            return self.label
        return str(Path(self.label).absolute())

    @classmethod
    def load(
        cls,
        config: Config,
        image: Path | None = None,
        text: str | None = None,
        target: str | None = None,
    ) -> Source:
        """Exactly one of ``image``, ``text`` or ``target``."""
        if sum(x is not None for x in (image, text, target)) != 1:
            raise FlowgifError("give exactly one of --img PATH, --text WORD or --target NAME")
        dc = config.density
        if target is not None and target.lower() in ENERGIES:
            name = target.lower()
            density = energy_density(name, dc.resolution)
            if config.train.method not in ("reverse", *FAMILIES):
                config = config.updated(ENERGY_RECIPE)
            config = config.updated({"density.extent": WINDOWS[name]})
            label = f"target:{name}"
            return cls(label, _digest(label), toy_picture(density), density, config, name)
        if config.train.method == "reverse":
            raise FlowgifError(
                "--method reverse fits an energy known up to a constant: use --target u1 (to u4)"
            )
        if target is not None:
            density = toy_density(target, dc.resolution)
            config = config.updated({"density.extent": WINDOW})
            label = f"target:{target.lower()}"
            return cls(label, _digest(label), toy_picture(density), density, config)
        if text is not None:
            img, label = text_image(text), f"text:{text}"
            digest = _digest(label)
        else:
            img, label, digest = (
                load_image(image),
                str(image),
                image_hash(image),
            )
        density = ImageDensity.from_image(
            img, dc.resolution, dc.invert, dc.ink_floor, dc.extent, ink_model=dc.ink
        )
        return cls(label, digest, img, density, config)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
