"""``flowgif view``: a local page where a dropped, pasted or typed picture flows at once.

The view is its own wing on top of the library (nothing in the library imports it): an ASGI
app (:mod:`flowgif.view.app`, Starlette served by uvicorn, the ``view`` extra) and its static
page (``static/``: plain JavaScript modules, no build step, nothing loaded from another host).
"""

from __future__ import annotations

from flowgif.view.app import make_app

__all__ = ["make_app"]
