"""``flowgif view``: a local page where a dropped, pasted, typed or drawn picture flows at once.

The view is its own wing on top of the library (nothing in the library imports it), laid out
as a web wing is: the app and its route table (:mod:`flowgif.view.app`), what a request may do
at all (:mod:`flowgif.view.guard`), the pool heavy work goes through (:mod:`flowgif.view.jobs`),
one module per thing served (:mod:`flowgif.view.routes`), saving what is shown
(:mod:`flowgif.view.saving`), what a flow sends the page (:mod:`flowgif.view.scene`: paths,
the renderer's camera, pacing and colours, what is inside), and the static page (``static/``:
plain JavaScript modules, no build step, nothing loaded from another host).
"""

from __future__ import annotations

from flowgif.view.app import make_app, warm_up

__all__ = ["make_app", "warm_up"]
