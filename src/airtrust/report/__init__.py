"""``doctor --html``: one self-contained page, to look at and to hand on (pure).

The page works where the platform works, on an isolated network: no external
script, style sheet, font or image; the timeline is inline SVG computed here,
the few lines of script are inlined. It embeds the very data ``doctor -o json``
prints (``<script type="application/json" id="doctor-data">``), so what a
person sees and what a program reads cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["TrustNode", "group_of", "render_html", "timeline"]

STATUS_ORDER = {"fail": 0, "warn": 1, "ok": 2, "skip": 3}


def group_of(check: Mapping[str, Any]) -> str:
    """The namespace (or kind of place) a check's target lives in, for the trust map."""
    target = str(check.get("target", ""))
    name = str(check.get("name", ""))
    if target.startswith("https://"):
        return "endpoints"
    if name == "ca-bundle":
        return "bundle"
    if name == "rotation":
        return "rotation"
    if name in ("node-registry", "node-registry-pull"):
        return "nodes"
    words = target.split()
    for word in words:
        if "/" in word and not word.startswith("/"):
            return word.split("/", 1)[0]
    return words[0] if words else "-"


@dataclass(frozen=True)
class TrustNode:
    title: str
    status: str
    children: tuple[Any, ...]


def _worst(statuses: Sequence[str]) -> str:
    return min(statuses, key=lambda s: STATUS_ORDER.get(s, 9)) if statuses else "skip"


def trust_map(checks: Sequence[Mapping[str, Any]]) -> list[TrustNode]:
    """Outside the clusters and each context -> namespaces -> trust points."""
    contexts: dict[str, dict[str, list[tuple[int, Mapping[str, Any]]]]] = {}
    for index, check in enumerate(checks):
        context = str(check.get("context", "-"))
        contexts.setdefault(context, {}).setdefault(group_of(check), []).append((index, check))
    out = []
    for context in sorted(contexts, key=lambda c: (c != "-", c)):
        groups = []
        for group, items in sorted(contexts[context].items()):
            status = _worst([str(c["status"]) for _, c in items])
            groups.append(TrustNode(group, status, tuple(items)))
        title = "outside the clusters" if context == "-" else f"context {context}"
        out.append(TrustNode(title, _worst([g.status for g in groups]), tuple(groups)))
    return out


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def timeline(data: Mapping[str, Any], now: dt.datetime, width: int = 1000) -> dict[str, Any]:
    """Marks for every certificate on one time axis, the warning window and a rotation;
    ``now`` is the report's own time (doctor's), never the clock read here."""
    certs = list(data.get("certificates") or [])
    now = now.astimezone(dt.UTC)
    warn = dt.timedelta(days=int(data.get("warn_days") or 30))
    starts = [_parse(c["not_before"]) for c in certs] + [now - warn]
    ends = [_parse(c["not_after"]) for c in certs] + [now + warn * 2]
    t0, t1 = min(starts), max(ends)
    span = (t1 - t0).total_seconds() or 1.0
    left, label_room, row = 10, 330, 22
    plot = width - left - label_room

    def x(t: dt.datetime) -> float:
        return round(left + label_room + plot * (t - t0).total_seconds() / span, 1)

    marks = []
    for index, cert in enumerate(sorted(certs, key=lambda c: (c["not_after"], c["source"]))):
        start, end = _parse(cert["not_before"]), _parse(cert["not_after"])
        state = "expired" if end < now else "expiring" if end - now < warn else "valid"
        marks.append(
            {
                **cert,
                "x": x(start),
                "y": 30 + index * row,
                "w": max(x(end) - x(start), 2.0),
                "state": state,
                "label": f"{cert['subject']} ({cert['source']})",
            }
        )
    height = 40 + max(len(marks), 1) * row + 20
    rotation = data.get("rotation") or {}
    rotation_x = (
        x(_parse(rotation["started_at"]))
        if rotation.get("phase") == "started" and rotation.get("started_at")
        else None
    )
    years = list(range(t0.year + 1, t1.year + 1))
    step = max(1, len(years) // 12)
    ticks = [{"x": x(dt.datetime(y, 1, 1, tzinfo=dt.UTC)), "label": str(y)} for y in years[::step]]
    return {
        "width": width,
        "height": height,
        "marks": marks,
        "now_x": x(now),
        "warn_w": max(x(now + warn) - x(now), 1.0),
        "rotation_x": rotation_x,
        "ticks": ticks,
        "plot_left": left + label_room,
    }


def render_html(data: Mapping[str, Any], now: dt.datetime) -> str:
    """The whole page for ``data`` (what doctor -o json prints) as of ``now``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("airtrust", "report"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    assets = resources.files("airtrust").joinpath("report")
    # "<" as \u003c: the same JSON once parsed, and nothing can end the script element.
    embedded = json.dumps(data, indent=2, sort_keys=True, default=str).replace("<", "\\u003c")
    checks = list(data.get("checks") or [])
    return template.render(
        data=data,
        checks=checks,
        failed=sum(c.get("status") == "fail" for c in checks),
        warned=sum(c.get("status") == "warn" for c in checks),
        tree=trust_map(checks),
        timeline=timeline(data, now),
        embedded=embedded,
        style=assets.joinpath("report.css").read_text(),
        script=assets.joinpath("report.js").read_text(),
    )
