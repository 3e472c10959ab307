"""`driftline report`: decisions as one self-contained HTML file, for postmortems and tickets.

Everything the page needs is in the file (inline CSS, inline SVG, a few lines of inline
script): nothing is fetched, so it opens offline and attached to a ticket. Per model:

* a **timeline** of its decisions over event time, one lane per kind, one mark per
  decision (colour by type: alert, retrain, rollback); a mark links to the decision's
  evidence below it, which opens when followed;
* **intervals** of the decisions that carry a confidence interval (canary and promotion
  comparisons, estimate gaps): the interval, the estimate and the margin it had to clear;
* **effects** of drift decisions: each implicated feature's effect size against the size
  the test was designed for;
* the decisions as a table, each with its recommendation and evidence.

Every chart element carries the decision id (``data-decision-id``) and the values it
draws (``data-*``), and the decisions themselves are embedded as JSON
(``<script id="driftline-decisions" type="application/json">``), so a test (or a user) can
check that the picture holds the data.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

TYPE_COLOURS = {"alert": "#d97706", "retrain": "#2563eb", "rollback": "#dc2626"}
WIDTH, LANE, MARGIN = 860, 28, 230
"""Timeline geometry (SVG user units): plot width, lane height, left margin for labels."""


def esc(value: object) -> str:
    """Text or attribute value, escaped for HTML."""
    return html.escape(str(value), quote=True)


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _label(x: float, y: float, text: str) -> str:
    """A lane label, right-aligned before the plot."""
    return f'<text x="{x}" y="{y}" text-anchor="end" class="lane">{esc(text)}</text>'


def _timeline(decisions: list[dict[str, Any]]) -> str:
    kinds = sorted({d["kind"] for d in decisions})
    lo = min(d["ts"] for d in decisions)
    hi = max(d["ts"] for d in decisions)
    span = max(hi - lo, 1)
    height = LANE * len(kinds) + 30
    parts = [
        f'<svg class="timeline" viewBox="0 0 {MARGIN + WIDTH + 20} {height}" '
        f'width="100%" role="img" aria-label="decisions over event time">'
    ]
    for i, kind in enumerate(kinds):
        y = 15 + i * LANE + LANE / 2
        parts.append(
            _label(MARGIN - 8, y + 4, kind)
            + f'<line x1="{MARGIN}" x2="{MARGIN + WIDTH}" y1="{y}" y2="{y}" class="lane-line"/>'
        )
    for d in decisions:
        x = MARGIN + (d["ts"] - lo) / span * WIDTH
        y = 15 + kinds.index(d["kind"]) * LANE + LANE / 2
        colour = TYPE_COLOURS.get(d["type"], "#6b7280")
        label = f"{d['type']} {d['kind']} {d.get('model_version', '')} at {_when(d['ts'])}"
        parts.append(
            f'<a href="#d-{esc(d["decision_id"])}"><circle cx="{x:.1f}" cy="{y:.1f}" r="7" '
            f'fill="{colour}" data-decision-id="{esc(d["decision_id"])}" '
            f'data-kind="{esc(d["kind"])}" data-type="{esc(d["type"])}" '
            f'data-ts="{d["ts"]}"><title>{esc(label)}</title></circle></a>'
        )
    parts.append(
        f'<text x="{MARGIN}" y="{height - 4}" class="axis">{esc(_when(lo))}</text>'
        f'<text x="{MARGIN + WIDTH}" y="{height - 4}" text-anchor="end" class="axis">'
        f"{esc(_when(hi))}</text></svg>"
    )
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """One interval of an `interval_chart`."""

    label: str
    attrs: str
    """The group's ``data-*`` attributes, ready to insert (escaped)."""
    low: float
    high: float
    value: float
    margin: float
    title: str = ""


def interval_chart(css_class: str, group_class: str, rows: list[IntervalRow]) -> str:
    """Intervals on one axis: each its line, its estimate and the margin it must clear,
    with zero marked (the report's decided comparisons, the live view's running ones)."""
    values = [v for r in rows for v in (r.low, r.high, r.value, r.margin)] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.01
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return MARGIN + (v - lo) / (hi - lo) * WIDTH

    height = LANE * len(rows) + 30
    parts = [
        f'<svg class="{css_class}" viewBox="0 0 {MARGIN + WIDTH + 20} {height}" width="100%" '
        'role="img" aria-label="confidence intervals">',
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="5" y2="{height - 20}" class="zero"/>',
    ]
    for i, r in enumerate(rows):
        y = 15 + i * LANE + LANE / 2
        title = f"<title>{esc(r.title)}</title>" if r.title else ""
        parts.append(
            _label(MARGIN - 8, y + 4, r.label) + f'<g class="{group_class}" {r.attrs}>'
            f'<line x1="{x(r.low):.1f}" x2="{x(r.high):.1f}" y1="{y}" y2="{y}" class="ci"/>'
            f'<circle cx="{x(r.value):.1f}" cy="{y}" r="4" class="estimate"/>'
            f'<line x1="{x(r.margin):.1f}" x2="{x(r.margin):.1f}" y1="{y - 9}" y2="{y + 9}" '
            f'class="margin"/>{title}</g>'
        )
    parts.append(
        f'<text x="{MARGIN}" y="{height - 4}" class="axis">{lo:.4g}</text>'
        f'<text x="{MARGIN + WIDTH}" y="{height - 4}" text-anchor="end" class="axis">{hi:.4g}'
        "</text></svg>"
    )
    return "".join(parts)


def _intervals(decisions: list[dict[str, Any]]) -> str:
    rows = [d for d in decisions if d.get("evidence", {}).get("confidence_interval")]
    if not rows:
        return ""
    drawn = []
    for d in rows:
        ev = d["evidence"]
        low, high = ev["confidence_interval"]
        value = float(ev.get("value") or 0.0)
        margin = float(ev.get("threshold") or 0.0)
        drawn.append(
            IntervalRow(
                f"{d.get('model_version', '')} {d['kind']}",
                f'data-decision-id="{esc(d["decision_id"])}" data-low="{low}" '
                f'data-high="{high}" data-value="{value}" data-margin="{margin}"',
                low,
                high,
                value,
                margin,
            )
        )
    return "<h3>Intervals (estimate, interval, margin to clear)</h3>" + interval_chart(
        "intervals", "interval", drawn
    )


def _effects(decisions: list[dict[str, Any]]) -> str:
    bars = []
    for d in decisions:
        for s in d.get("evidence", {}).get("signals") or []:
            if isinstance(s, dict) and "effect" in s and "feature" in s:
                bars.append((d, s))
    if not bars:
        return ""
    top = max(abs(float(s["effect"])) for _, s in bars) or 1.0
    height = LANE * len(bars) + 10
    parts = [
        f'<svg class="effects" viewBox="0 0 {MARGIN + WIDTH + 20} {height}" width="100%" '
        'role="img" aria-label="effect sizes of drift decisions">'
    ]
    for i, (d, s) in enumerate(bars):
        effect = float(s["effect"])
        y = 5 + i * LANE
        width = abs(effect) / top * WIDTH
        label = f"{s['feature']} ({d['kind']})"
        parts.append(
            _label(MARGIN - 8, y + 16, label)
            + f'<rect x="{MARGIN}" y="{y + 4}" width="{width:.1f}" height="16" class="effect" '
            f'data-decision-id="{esc(d["decision_id"])}" data-feature="{esc(s["feature"])}" '
            f'data-effect="{effect}"><title>{esc(s.get("effect_unit", ""))} {effect:.4g}'
            "</title></rect>"
        )
    parts.append("</svg>")
    return "<h3>Effect sizes</h3>" + "".join(parts)


def _table(decisions: list[dict[str, Any]]) -> str:
    rows = []
    for d in decisions:
        where = ", ".join(d.get("features") or []) or ", ".join(
            f"{k}={v}" for k, v in (d.get("segment") or {}).items()
        )
        evidence = orjson.dumps(d.get("evidence", {}), option=orjson.OPT_INDENT_2).decode()
        rows.append(
            f'<tr><td>{esc(_when(d["ts"]))}</td><td class="t-{esc(d["type"])}">'
            f"{esc(d['type'])}</td><td>{esc(d['kind'])}</td>"
            f"<td>{esc(d.get('model_version', ''))}</td><td>{esc(d.get('severity', ''))}</td>"
            f"<td>{esc(where)}</td><td>{esc(d.get('recommendation', ''))}"
            f'<details id="d-{esc(d["decision_id"])}"><summary>evidence</summary>'
            f"<pre>{esc(evidence)}</pre></details></td></tr>"
        )
    return (
        "<table><thead><tr><th>event time (UTC)</th><th>type</th><th>kind</th>"
        "<th>version</th><th>severity</th><th>features / segment</th>"
        "<th>recommendation and evidence</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111827;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e5e7eb}
h3{font-size:15px;margin:16px 0 4px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top}
.lane{font-size:12px;fill:#374151}.axis{font-size:11px;fill:#6b7280}
.lane-line{stroke:#e5e7eb}.zero{stroke:#9ca3af;stroke-dasharray:3 3}
.ci{stroke:#111827;stroke-width:3}.estimate{fill:#111827}.margin{stroke:#dc2626;stroke-width:2}
.effect{fill:#d97706}.t-rollback{color:#dc2626;font-weight:600}.t-retrain{color:#2563eb}
details[open]{background:#f9fafb} pre{white-space:pre-wrap;font-size:12px;margin:4px 0}
.counts{width:auto}.counts td{border:none;padding:2px 8px}
.threshold{stroke:#dc2626;stroke-dasharray:4 3}.series{fill:none;stroke-width:2}
.s0{stroke:#2563eb;color:#2563eb}.s1{stroke:#d97706;color:#d97706}
.s2{stroke:#059669;color:#059669}.s3{stroke:#7c3aed;color:#7c3aed}
.s4{stroke:#db2777;color:#db2777}.s5{stroke:#0891b2;color:#0891b2}
.ref-bar{fill:#d1d5db}.cur-bar{fill:#d97706}
.legend{margin:0 0 8px 230px;font-size:12px}.key{margin-right:12px;font-weight:600}
.live{background:#dc2626;color:white;font-size:12px;padding:2px 6px;border-radius:4px}
"""

SCRIPT = """
function openTarget(){var id=location.hash.slice(1);var el=id&&document.getElementById(id);
if(el&&el.tagName==='DETAILS'){el.open=true;}}
window.addEventListener('hashchange',openTarget);window.addEventListener('load',openTarget);
"""


def model_sections(decisions: list[dict[str, Any]]) -> str:
    """Per model: timeline, intervals, effects and the decisions table (the live view
    draws the same)."""
    found = sorted(decisions, key=lambda d: (d["model_id"], d["ts"], d["decision_id"]))
    if not found:
        return "<p>No decisions: nothing drifted, regressed or looped.</p>"
    by_model: dict[str, list[dict[str, Any]]] = {}
    for d in found:
        by_model.setdefault(d["model_id"], []).append(d)
    return "".join(
        f'<section class="model" data-model-id="{esc(model_id)}">'
        f"<h2>{esc(model_id)}</h2>{_timeline(rows)}{_intervals(rows)}{_effects(rows)}"
        f"{_table(rows)}</section>"
        for model_id, rows in by_model.items()
    )


def render(decisions: Iterable[dict[str, Any]], title: str, source: str, charts: str = "") -> str:
    """The report page for ``decisions`` (decision JSON objects, any order), with
    ``charts`` (a replay's drift statistics over event time and the rest of the live
    view's charts, `streams.views.live.LiveView.charts`) before the per-model sections."""
    found = sorted(decisions, key=lambda d: (d["model_id"], d["ts"], d["decision_id"]))
    counts = Counter((d["type"], d["kind"]) for d in found)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for d in found:
        by_model.setdefault(d["model_id"], []).append(d)
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>{len(found)} decision(s) from {esc(source)}, "
        f"{len(by_model)} model(s). Marks link to their evidence.</p>",
    ]
    if counts:
        body.append(
            '<table class="counts">'
            + "".join(
                f"<tr><td>{esc(t)}</td><td>{esc(k)}</td><td>{n}</td></tr>"
                for (t, k), n in sorted(counts.items())
            )
            + "</table>"
        )
    body.append(charts)
    body.append(model_sections(found))
    data = orjson.dumps(found).decode().replace("</", "<\\/")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + f'<script id="driftline-decisions" type="application/json">{data}</script>'
        + f"<script>{SCRIPT}</script></body></html>"
    )


def read_decisions(lines: Iterable[bytes], source: str) -> list[dict[str, Any]]:
    """Decision objects from a JSONL file; a line that is not a decision is an error that
    names it."""
    from driftline.schemas.exceptions import ConfigError  # noqa: PLC0415 (schemas is below streams)

    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{source} line {n} is not JSON ({exc})") from None
        if not isinstance(d, dict) or not {"decision_id", "type", "kind", "model_id", "ts"} <= set(
            d
        ):
            raise ConfigError(
                f"{source} line {n} is not a driftline decision (needs decision_id, type, "
                "kind, model_id, ts): give the file `driftline replay --out` wrote, or the "
                "messages of a decision topic"
            )
        out.append(d)
    return out
