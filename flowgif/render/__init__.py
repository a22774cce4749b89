"""Rendering: a trained run's particles carried from its start to the picture, as GIF, MP4,
WebP or PNG frames; and the gallery page of a batch.

``options`` (what may be asked), ``pacing`` (when to take the frames), ``camera`` (what is in
view), ``colors`` (the particles' palette), ``panels`` (``--panels``), ``compose`` (panels side
by side), ``writers`` (one per format) and ``animate`` (:func:`render`, with the ``--max-mb``
loop).
"""

from __future__ import annotations

from flowgif.render.animate import render
from flowgif.render.options import COLORS, FORMATS, RenderOptions, RenderReport

__all__ = ["COLORS", "FORMATS", "RenderOptions", "RenderReport", "render"]
