"""``flowgif view``: a local page where a dropped, pasted, typed or drawn picture flows at once.

The view is its own wing on top of the library (nothing in the library imports it): an ASGI
app (:mod:`flowgif.view.app`, Starlette served by uvicorn, the ``view`` extra), what it sends
the page (:mod:`flowgif.view.scene`: the flows' paths, the renderer's camera, pacing and
colours, what is inside), and its static page (``static/``: plain JavaScript modules, no build
step, nothing loaded from another host).
"""

from __future__ import annotations

from flowgif.view.app import make_app, warm_up

__all__ = ["make_app", "warm_up"]
