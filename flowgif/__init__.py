"""flowgif: fit a continuous normalizing flow to a picture and animate noise turning into it.

The package is layered; dependencies point one way:

    cli  ->  train (fm, ffjord)  /  render, draw  /  evaluate  ->  ode  ->  field
                                 density (stands alone)         run (folders, checkpoints)

Conventions used everywhere: ``t = 0`` is the noise N(0, I), ``t = 1`` is the picture; points
are ``(N, 2)`` tensors, paths are ``(T, N, 2)`` (time first, as torchdiffeq returns them); the
model frame is documented in :mod:`flowgif.density`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
