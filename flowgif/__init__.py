"""flowgif: fit a continuous normalizing flow to a picture and animate noise turning into it.

The package is layered; dependencies point one way:

    cli  ->  train (fm, ffjord, energy)  /  render (pacing, panels), draw, writers  /  evaluate
         ->  model (one interface)  ->  ode -> field   |   flows (realnvp, planar, radial)
    source (picture, word, toy, energy) -> density -> ink (stand alone); run (folders,
    checkpoints) and writers over files (atomic writes, temp names); limits

Conventions used everywhere: ``t = 0`` is the noise N(0, I), ``t = 1`` is the picture (a
discrete flow's layer ``k`` of ``K`` sits at ``t = k / K``); points
are ``(N, 2)`` tensors, paths are ``(T, N, 2)`` (time first, as torchdiffeq returns them); the
model frame is documented in :mod:`flowgif.sources.picture`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
