"""Morphs in the page: pictures on screen played one into the next, A -> B -> C, each leg the
optimal-transport map (``flowgif morph``'s default, ``--method ot``), as one animation.

- ``POST /api/morph?ids=A[,B...]&ink=...&invert=1&n=...`` with the next picture's bytes (or
  ``?text=WORD``, or nothing: ``ids`` are then the whole morph): the pictures the page sent
  (by the names their flows came back with) and the next, chained: the particles start on A
  (its points, seed 0), and each leg carries them from where the last one left them
  (:class:`Chain`). The body is a flow's (:mod:`flowgif.view.scene`), its time running over
  every leg; its header's ``ids`` name the pictures in order.

Train on a morph on screen trains its last leg (``flowgif train --from A --img B``, the
``morph`` recipe: flow matching taught by the map; :mod:`flowgif.view.routes.train`).
"""

from __future__ import annotations

import itertools

import torch
from starlette.requests import Request
from starlette.responses import Response

from flowgif.errors import FlowgifError
from flowgif.view.routes.base import count, error, flow_body, state_of
from flowgif.view.routes.pictures import load_picture, receive
from flowgif.view.scene import Scene

__all__ = ["MAX_LEGS", "Chain", "morph"]

MAX_LEGS = 8  # pictures in one morph, less one


class Chain:
    """Optimal-transport legs played one after another over the time ``[0, 1]``: leg ``k``
    of ``K`` over ``[k / K, (k + 1) / K]``, each starting where the last one ended."""

    dim = 2

    def __init__(self, legs: list) -> None:
        self.legs = legs
        self.start = legs[0].start

    def starts(self, n: int, generator: torch.Generator, shown: bool = True) -> torch.Tensor:
        return self.legs[0].starts(n, generator, shown=True)

    def paths(self, z: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        k_legs = len(self.legs)
        heads = [z[:, :2]]
        for leg in self.legs[:-1]:
            heads.append(leg.ends(heads[-1]))
        out = torch.empty(len(times), len(z), 2, dtype=z.dtype)
        leg_of = (times * k_legs).floor().long().clamp(0, k_legs - 1)
        for k, leg in enumerate(self.legs):
            at = (leg_of == k).nonzero().flatten()
            if len(at):
                out[at] = leg.paths(heads[k], times[at] * k_legs - k).to(z.dtype)
        return out


def chain_scene(pictures: list[tuple]) -> tuple[Scene, dict]:
    """The morph of ``pictures`` (each ``(data, text, ink, invert)``) as a scene."""
    from flowgif.flows.transport import OTFlow

    loaded = [load_picture(*p) for p in pictures]
    densities = [d for d, _, _ in loaded]
    legs = [OTFlow(end, start) for start, end in itertools.pairwise(densities)]
    for leg in legs:
        leg.plan  # noqa: B018 - each leg's map, solved here (a second or two a leg)
    frame = max(densities, key=lambda d: d.half[0] * d.half[1])
    first, last = loaded[0], loaded[-1]
    scene = Scene(Chain(legs), last[0], last[1], first[0].sharp(), first[1], frame)
    labels = " -> ".join(label for _, _, label in loaded)
    return scene, {"label": labels, "method": "ot", "legs": len(legs)}


async def morph(request: Request) -> Response:
    state = state_of(request)
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    try:
        n = count(request)
        if len(ids) > MAX_LEGS:
            raise FlowgifError(f"a morph in the page is at most {MAX_LEGS + 1} pictures")
        if any(i not in state.pictures for i in ids):
            raise FlowgifError("drop the pictures of the morph again")
    except FlowgifError as e:
        return error(str(e))
    pid = await receive(request)  # the next picture, if one was sent
    if isinstance(pid, Response):
        return pid
    if pid is not None:
        ids.append(pid)
    if len(ids) < 2:
        return error("a morph is two pictures or more, in order")
    pictures = [state.pictures[i] for i in ids]
    key = "morph:" + ",".join(ids)

    def make() -> tuple[Scene, dict]:
        scene, extra = chain_scene(pictures)
        return scene, {**extra, "ids": ids}

    return await state.pool.run(request, flow_body, state, key, make, n)
