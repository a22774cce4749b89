"""The gallery of a batch: ``OUT/index.html``, one card per picture, readable from ``file://``.

Each card shows the picture (``picture.png``, a thumbnail the batch writes) beside its
animation (``flow.gif``), its figures from ``eval.json`` (kl, tv, on_ink) and ``done.json``
(steps, training time), and links to ``samples.png``, ``config.toml`` and ``eval.json``;
a picture that failed shows its reason. Links are relative, nothing is fetched from the
network, no framework is needed; a few lines of script sort the cards by name or by kl. The
page is rebuilt from the run folders and ``batch.json`` (``flowgif gallery OUT``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flowgif.errors import FlowgifError
from flowgif.files import atomic_write_text
from flowgif.owned import check_replaceable, html_head, html_seal

__all__ = ["PAGE", "write_gallery"]

PAGE = "index.html"

STYLE = """
:root { color-scheme: light dark; --card: #fff; --ink: #1c1c24; --dim: #667; --bg: #f3f3f6; }
@media (prefers-color-scheme: dark) {
  :root { --card: #1d1d24; --ink: #e8e8f0; --dim: #99a; --bg: #111116; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 16px; font: 15px/1.4 system-ui, sans-serif; color: var(--ink);
       background: var(--bg); }
h1 { font-size: 20px; margin: 0 0 4px; }
.bar { color: var(--dim); margin-bottom: 12px; }
.bar button { font: inherit; margin-left: 6px; }
.grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
.card { background: var(--card); border-radius: 10px; padding: 10px; overflow-wrap: anywhere; }
.card h2 { font-size: 15px; margin: 0 0 8px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 6px; }
.pair img { width: 100%; height: auto; background: #fff; border-radius: 6px; }
.figures { display: flex; flex-wrap: wrap; gap: 4px 12px; margin: 8px 0 4px; color: var(--dim); }
.figures b { color: var(--ink); font-weight: 600; }
.links a { margin-right: 10px; }
.failed { border-left: 4px solid #c33; }
.reason { color: #c33; }
"""

SCRIPT = """
function sortBy(key) {
  const grid = document.querySelector('.grid');
  const cards = Array.from(grid.children);
  cards.sort((a, b) => key === 'kl'
    ? parseFloat(a.dataset.kl) - parseFloat(b.dataset.kl)
    : a.dataset.name.localeCompare(b.dataset.name));
  cards.forEach(c => grid.appendChild(c));
}
"""


def write_gallery(out: Path, items: list[Any] | None = None) -> Path:
    """Write ``out/index.html`` from the batch's items (or ``out/batch.json``) and run folders.

    Raises:
        FlowgifError: ``out`` is not a folder, holds no batch, or ``index.html`` there is a
            file flowgif did not write.
    """
    out = Path(out)
    if not out.is_dir():
        raise FlowgifError(f"not a folder: {out}")
    rows = [_as_dict(i) for i in items] if items is not None else _read_items(out)
    page = out / PAGE
    check_replaceable(page)
    cards = [_card(out, row) for row in rows if row.get("status") != "ignored"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if s)
    text = "\n".join(
        [
            html_head(f"flowgif gallery: {html.escape(out.resolve().name)}"),
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<style>{STYLE}</style></head><body>",
            f"<h1>{html.escape(out.resolve().name)}</h1>",
            f'<div class="bar">{html.escape(summary)} · sort by'
            ' <button type="button" onclick="sortBy(\'name\')">name</button>'
            '<button type="button" onclick="sortBy(\'kl\')">kl</button></div>',
            '<div class="grid">',
            *cards,
            "</div>",
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )
    atomic_write_text(page, html_seal(text))
    return page


def _as_dict(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else dict(vars(item))


def _read_items(out: Path) -> list[dict[str, Any]]:
    """The items of ``out/batch.json``; without one, every run folder that has a ``done.json``."""
    report = out / "batch.json"
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            return [i for i in data["items"] if isinstance(i, dict)]
        except (OSError, ValueError, KeyError, TypeError):
            raise FlowgifError(f"{report} is damaged; run the batch again") from None
    runs = sorted(p for p in out.iterdir() if (p / "done.json").is_file())
    if not runs:
        raise FlowgifError(f"{out} holds no batch (no batch.json, no run folder with done.json)")
    return [{"image": p.name, "run": str(p), "status": "done", "reason": ""} for p in runs]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _link(out: Path, path: Path) -> str:
    """A relative, URL-quoted link from the page to ``path``."""
    try:
        rel = path.resolve().relative_to(out.resolve())
    except ValueError:
        rel = Path(path.name)
    return html.escape(quote(rel.as_posix()))


def _card(out: Path, row: dict[str, Any]) -> str:
    name = str(row.get("image", ""))
    status = str(row.get("status", ""))
    run = Path(str(row.get("run") or ""))
    run = out / run.name  # a batch's run folders are OUT/<name>, wherever it ran from
    if not row.get("run") or (status == "failed" and not (run / "flow.gif").is_file()):
        reason = html.escape(str(row.get("reason", "")))
        return (
            f'<div class="card failed" data-name="{html.escape(name)}" data-kl="Infinity">'
            f"<h2>{html.escape(name)}</h2><div>{html.escape(status)}</div>"
            f'<div class="reason">{reason}</div></div>'
        )
    figures = _read_json(run / "eval.json")
    done = _read_json(run / "done.json")
    shown = []
    for key in ("kl", "tv", "on_ink"):
        if isinstance(figures.get(key), (int, float)):
            shown.append(f"{key} <b>{figures[key]:.3f}</b>")
    if isinstance(done.get("steps"), int):
        shown.append(f"steps <b>{done['steps']:,}</b>")
    if isinstance(done.get("seconds"), (int, float)):
        shown.append(f"time <b>{done['seconds']:.0f} s</b>")
    kl = figures.get("kl") if isinstance(figures.get("kl"), (int, float)) else float("inf")
    images = []
    for file, alt in (("picture.png", "the picture"), ("flow.gif", "its flow")):
        if (run / file).is_file():
            images.append(f'<img src="{_link(out, run / file)}" alt="{alt}: {html.escape(name)}">')
    links = [
        f'<a href="{_link(out, run / f)}">{f}</a>'
        for f in ("samples.png", "config.toml", "eval.json")
        if (run / f).is_file()
    ]
    note = str(row.get("reason", ""))
    extra = f'<div class="reason">{html.escape(note)}</div>' if status == "failed" else ""
    return (
        f'<div class="card" data-name="{html.escape(name)}" data-kl="{kl}">'
        f"<h2>{html.escape(name)}</h2>"
        f'<div class="pair">{"".join(images)}</div>'
        f'<div class="figures">{"".join(f"<span>{x}</span>" for x in shown)}</div>'
        f'<div class="links">{"".join(links)}</div>{extra}</div>'
    )
