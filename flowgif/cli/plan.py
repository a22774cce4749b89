"""Planning a ``flowgif train`` run before anything is written: its config (flags over the
named config, or a resumed run's own), both ends loaded and checked together, and its folder
claimed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from flowgif.cli.common import _budget, _config_path, err_console
from flowgif.errors import FlowgifError
from flowgif.sources import kind_of

__all__ = ["plan", "slug"]


def _overrides(a: dict[str, Any]) -> dict[str, Any]:
    """The config settings given as flags."""
    overrides: dict[str, Any] = {
        "train.method": a["method"].value if a["method"] else None,
        "train.objective": a["objective"].value if a["objective"] else None,
        "train.family": a["family"].value if a["family"] else None,
        "field.augment": a["augment"],
        "train.batch": a["batch"],
        "train.lr": a["lr"],
        "train.seed": a["seed"],
        "train.device": a["device"].value if a["device"] else None,
        "train.threads": a["threads"],
        "density.invert": a["invert"],
        "density.ink_floor": a["ink_floor"],
        "density.ink": a["ink"].value if a["ink"] else None,
        "density.resolution": a["resolution"],
    }
    return {k: v for k, v in overrides.items() if v is not None}


def plan(a: dict[str, Any]) -> tuple[Any, Any, Any, Path]:
    """The run's config, its end and start (loaded and checked together) and its folder."""
    from flowgif.config import load_config
    from flowgif.objectives.recipes import check_ends, for_ends
    from flowgif.sources import end_spec, load_source, spec
    from flowgif.store import check_new_run_dir, new_run_dir

    target = a["target"].value if a["target"] else None
    source: dict[str, Any] = {"image": a["img"], "text": a["text"], "target": target}
    overrides, out = _overrides(a), a["out"]
    if a["resume"] is not None:
        cfg, source, start = _resumed(a, source, overrides)
        out = a["resume"]
    else:
        if sum(v is not None for v in source.values()) != 1:
            raise FlowgifError(
                "give exactly one of --img PATH, --text WORD or --target NAME (or --resume RUN)"
            )
        start = a["start"] or "noise"
        cfg = load_config(_config_path(_recipe(a["config"], start)))
    cfg = cfg.updated(overrides | _budget(a["steps"], a["minutes"]))
    src = load_source(end_spec(**source), cfg.density)
    cfg = for_ends(cfg, src)
    begin = load_source(spec(start), cfg.density, start=True)
    check_ends(cfg, begin, src)
    for end in (begin, src):
        if end.picture is not None and end.picture.info.get("frames", 1) > 1:
            err_console.print(
                f"note: {escape(end.label)} is animated ({end.picture.info['frames']} "
                "frames); using its first frame",
                highlight=False,
            )
    if a["resume"] is not None:
        return cfg, src, begin, out
    from flowgif.device import resolve_device
    from flowgif.fit.memory import check_fits

    # a device that is not there, a run too large for it: before any folder is made
    check_fits(cfg, resolve_device(cfg.train.device))
    if out is not None:
        check_new_run_dir(out, "train", src.digest)  # claimed: no other process shares it
    else:
        image = source["image"]
        name = image.stem if image else (source["target"] or slug(source["text"]))
        if not begin.is_noise:
            name = f"{_stem(begin.label)}-to-{name}"
        out = new_run_dir(Path("runs"), name, "train", src.digest)
    return cfg, src, begin, out


def _recipe(config: str | None, start: str) -> str | None:
    """The config to train with: the one given, or for a flow from a picture (a word, a toy)
    the ``morph`` recipe, as ``flowgif morph`` uses — said in one line."""
    if config is not None or kind_of(start) == "noise":
        return config
    err_console.print(
        "recipe: morph (a flow from a picture pairs its points by optimal transport, so they "
        "travel as little as they can; --config default pairs them independently)",
        highlight=False,
        markup=False,
    )
    return "morph"


def _resumed(
    a: dict[str, Any], source: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Any, dict[str, Any], str]:
    """A resumed run's own config, end and start; refuses what may not change (the one rule
    of :mod:`flowgif.store.resume`)."""
    from flowgif.store import (
        CHECKPOINT,
        changed,
        checkpoint_config,
        load_checkpoint,
    )

    resume = a["resume"]
    if a["config"] is not None:
        raise FlowgifError(
            "--config cannot be combined with --resume: a resumed run keeps its own "
            "config (only --steps, --minutes, --device and --threads may change)"
        )
    if a["out"] is not None and a["out"] != resume:
        raise FlowgifError("--out cannot be combined with --resume: the run stays in place")
    ckpt = load_checkpoint(resume / CHECKPOINT, for_resume=True)
    cfg = checkpoint_config(ckpt, source=str(resume))
    if cfg.train.objective == "exact":
        raise FlowgifError(
            f"{resume} holds the exact flow, computed whole: there is nothing to resume; "
            "render, sample or evaluate it"
        )
    method = overrides.get("train.method", cfg.train.method)
    moved = [("train.method", cfg.train.method, method)] if method != cfg.train.method else []
    for key, was, now in moved + changed(cfg, cfg.updated(overrides)):
        raise FlowgifError(
            f"{key} cannot change on --resume: {resume} was trained with {key} {was}, "
            f"not {now}; start a new run to change it"
        )
    source = _resumed_source(str(ckpt.get("image", "")), source, resume)
    return cfg, source, _resumed_start(ckpt.get("start"), a["start"], resume)


def _resumed_source(label: str, given: dict[str, Any], run: Path) -> dict[str, Any]:
    """What a resumed run was trained on, from its checkpoint's label."""
    kind, _, value = label.partition(":")
    if kind in ("text", "target"):
        for key, flag in (("text", "--text"), ("target", "--target")):
            if given[key] is not None and (key != kind or str(given[key]).lower() != value):
                raise FlowgifError(f"{flag} does not match {run}, which was trained on {label}")
        if given["image"] is not None:
            raise FlowgifError(f"--img does not match {run}, which was trained on {label}")
        return {"image": None, "text": None, "target": None, kind: value}
    if given["text"] is not None or given["target"] is not None:
        raise FlowgifError(f"{run} was trained on a picture, {label}; give --img or nothing")
    if given["image"] is not None:
        return {"image": given["image"], "text": None, "target": None}
    picture = Path(label)
    if not picture.is_file():
        where = "" if picture.is_absolute() else " (a path relative to where it was trained)"
        raise FlowgifError(
            f"the picture {run} was trained on, {label}{where}, is not there; give it with "
            "--img PATH (it is recognised by its content, wherever it is now)"
        )
    return {"image": picture, "text": None, "target": None}


def _stem(label: str) -> str:
    """A short name for a start in a run folder's name."""
    kind, sep, value = label.partition(":")
    if sep and kind in ("text", "target"):
        return slug(value)
    return slug(Path(label).stem)


def _resumed_start(record: Any, given: str | None, run: Path) -> str:
    """Where a resumed run started, from its checkpoint (``--from`` may only repeat it)."""
    label = record["label"] if isinstance(record, dict) else "noise"
    if given is not None:
        # A picture is matched by its hash when the run opens (it may have moved); a word, a
        # toy or noise by its name.
        if kind_of(label) != "picture" and given != label:
            raise FlowgifError(f"--from does not match {run}, which started from {label}")
        return given
    if kind_of(label) == "picture" and not Path(label).is_file():
        raise FlowgifError(
            f"the picture {run} started from, {label}, is not there; give it with --from PATH "
            "(it is recognised by its content, wherever it is now)"
        )
    return label


def slug(text: str) -> str:
    """A folder name for a word: letters, digits, '-' and '_' only."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "text"
