"""The worker's live view: a small web page of what it sees and decides, as it happens.

Served by the worker itself (``--ui-port``, aiohttp, which faust already brings), with
everything inline (no CDN: the page works on a closed network). It shows the drift
statistics of every model and kind over the last minutes against their alarm threshold
(1 = alarm), the worker's status (records processed, consumer lag, join buffer, labels
joined), each feedback-monitored model's allocation shares per bucket, and the decisions
so far drawn as the report draws them (`streams.views.report`: timeline, intervals,
effects, evidence on click). The page polls ``/fragment`` every two seconds and keeps
open evidence open; ``/state.json`` has the same data for scripts.

The view holds bounded state: the last `MAX_DECISIONS` decisions and `MAX_SAMPLES`
samples per series, for at most `MAX_SERIES` series.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from driftline.detectors.engine import ModelEngine
from driftline.detectors.feedback.monitor import PAIR, Bucket
from driftline.streams.views.report import (
    MARGIN,
    STYLE,
    WIDTH,
    IntervalRow,
    esc,
    interval_chart,
    model_sections,
)

MAX_DECISIONS = 1_000
MAX_SAMPLES = 300
"""Samples kept per drift series (one per gauge refresh, about a second apart: five
minutes)."""
MAX_SERIES = 200
POLL_MS = 2_000
"""How often the page asks for fresh content."""


def version_scores(engines: Sequence[ModelEngine]) -> dict[tuple[str, str, str], float]:
    """Per (model, version, kind), the largest drift statistic over its threshold
    (1 = alarm)."""
    return {
        (model_id, version, kind): score
        for engine in engines
        for model_id, versions in engine.monitors.items()
        for version, monitor in versions.items()
        for kind, score in monitor.drift_scores().items()
    }


def model_scores(scores: Mapping[tuple[str, str, str], float]) -> dict[tuple[str, str], float]:
    """Per (model, kind), the largest over the model's versions."""
    out: dict[tuple[str, str], float] = {}
    for (model_id, _, kind), score in scores.items():
        out[(model_id, kind)] = max(out.get((model_id, kind), 0.0), score)
    return out


def observe(
    view: LiveView,
    engines: Sequence[ModelEngine],
    scores: dict[tuple[str, str, str], float],
    status: dict[str, Any],
    now: float | None = None,
) -> None:
    """Sample everything the view shows from the model stage's engines (``scores``:
    `version_scores` of them, computed once by the caller)."""
    for engine in engines:
        for model_id, versions in engine.monitors.items():
            for version, monitor in versions.items():
                view.coverage[(model_id, version)] = (monitor.events, monitor.concept.judged)
    implicated: dict[tuple[str, str], set[str]] = {}
    for d in view.decisions:
        if d["kind"] in ("data_drift", "prediction_drift") and d.get("features"):
            implicated.setdefault((d["model_id"], d["model_version"]), set()).update(d["features"])
    distributions = {}
    canaries = {}
    loops = {}
    for engine in engines:
        for (model_id, version), features in implicated.items():
            of_model = engine.monitors.get(model_id)
            found = of_model.get(version) if of_model is not None else None
            if found is not None:
                for (kind, feature), shares in found.distributions(features).items():
                    distributions[(model_id, version, kind, feature)] = shares
        for model_id, registry in engine.versions.items():
            for canary, (stable, comparisons) in registry.canaries.items():
                for metric, comparison in comparisons.items():
                    interval = comparison.interval()
                    if interval is not None:
                        canaries[(model_id, canary, stable, metric)] = [
                            *interval,
                            comparison.margin,
                        ]
        loops.update({m: f.history for m, f in engine.loops.items() if f.history})
    view.sample(scores, status, loops, distributions, canaries, now)


def _shares(history: Sequence[Bucket]) -> dict[str, list[tuple[int, float]]]:
    """Each segment value's share of the model's actions (within its dimension) per
    bucket, over the last `MAX_SAMPLES` buckets."""
    out: dict[str, list[tuple[int, float]]] = {}
    for b in list(history)[-MAX_SAMPLES:]:
        totals: dict[str, int] = {}
        for k, n in b.acted.items():
            dim = k.split(PAIR, 1)[0]
            totals[dim] = totals.get(dim, 0) + n
        for k, n in b.acted.items():
            total = totals[k.split(PAIR, 1)[0]]
            if total:
                out.setdefault(k.replace(PAIR, "="), []).append((b.start_ts, n / total))
    return out


class LiveView:
    """What the page shows, fed by the worker."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.max_samples = max_samples
        self.decisions: deque[dict[str, Any]] = deque(maxlen=MAX_DECISIONS)
        self.series: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}
        """Drift statistic samples by (model, version, kind)."""
        self.coverage: dict[tuple[str, str], tuple[int, int]] = {}
        """(model, version) -> (predictions, labelled predictions judged)."""
        self.status: dict[str, Any] = {}
        self.shares: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.distributions: dict[tuple[str, str, str, str], list[list[float]]] = {}
        self.canaries: dict[tuple[str, str, str, str], list[float]] = {}
        """Per model with feedback buckets: per segment value, its share of the model's
        actions in each closed bucket."""
        self.runner: web.AppRunner | None = None

    def add_decision(self, decision: dict[str, Any]) -> None:
        self.decisions.append(decision)

    def sample(
        self,
        scores: dict[tuple[str, str, str], float],
        status: dict[str, Any],
        loops: Mapping[str, Sequence[Bucket]] | None = None,
        distributions: Mapping[tuple[str, str, str, str], list[list[float]]] | None = None,
        canaries: Mapping[tuple[str, str, str, str], list[float]] | None = None,
        now: float | None = None,
    ) -> None:
        """Drift scores by (model, version, kind), the worker's status, the closed feedback buckets
        of the models that have them, reference vs current histograms of the features
        drift decisions named (by model, version, kind, feature) and the running canary
        comparisons, at ``now`` (Unix seconds; wall time by default, event time in a
        replay)."""
        self.shares = {m: _shares(h) for m, h in (loops or {}).items()}
        self.distributions = dict(distributions or {})
        self.canaries = dict(canaries or {})
        now = time.time() if now is None else now
        for key, score in scores.items():
            series = self.series.get(key)
            if series is None:
                if len(self.series) >= MAX_SERIES:
                    continue
                series = self.series[key] = deque(maxlen=self.max_samples)
            series.append((now, float(score)))
        self.status = {**status, "updated": now}

    def state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "series": [
                {"model_id": m, "model_version": v, "kind": k, "samples": list(s)}
                for (m, v, k), s in sorted(self.series.items())
            ],
            "decisions": list(self.decisions),
            "allocation_shares": self.shares,
            "canaries": [
                {"model_id": m, "canary": c, "stable": st, "metric": k, "interval": row}
                for (m, c, st, k), row in sorted(self.canaries.items())
            ],
            "distributions": [
                {
                    "model_id": m,
                    "model_version": v,
                    "kind": k,
                    "feature": f,
                    "reference": r,
                    "current": c,
                }
                for (m, v, k, f), (r, c) in sorted(self.distributions.items())
            ],
        }

    # -- rendering ---------------------------------------------------------------------

    def fragment(self) -> str:
        s = self.status
        joined, expired = s.get("joined", 0), s.get("expired_unlabelled", 0)
        coverage = f"{joined / (joined + expired):.1%}" if joined + expired else "-"
        head = (
            f'<p class="status" data-processed="{s.get("processed", 0)}" '
            f'data-decisions="{len(self.decisions)}" data-joined="{joined}">'
            f"records processed <b>{s.get('processed', 0):,}</b> · consumer lag "
            f"<b>{s.get('lag', 0):,}</b> · join buffer <b>{s.get('join_buffer', 0):,}</b> · "
            f"labels joined <b>{joined:,}</b> (label coverage of expired predictions "
            f"<b>{coverage}</b>) · decisions <b>{len(self.decisions)}</b></p>"
        )
        return head + self.charts() + model_sections(list(self.decisions))

    def _coverage(self) -> str:
        """Per model and version: predictions, labelled predictions judged (from the end of
        the version's warm-up on), label coverage."""
        if not self.coverage:
            return ""
        rows = "".join(
            f'<tr data-model-id="{esc(m)}" data-model-version="{esc(v)}" '
            f'data-predictions="{n}" data-labelled="{k}"><td>{esc(m)}</td><td>{esc(v)}</td>'
            f"<td>{n:,}</td><td>{k:,}</td><td>{(k / n if n else 0):.1%}</td></tr>"
            for (m, v), (n, k) in sorted(self.coverage.items())
        )
        return (
            "<h2>Label coverage</h2><table class='coverage'><thead><tr><th>model</th>"
            "<th>version</th><th>predictions</th><th>labelled</th><th>coverage</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )

    def charts(self) -> str:
        """The drift, allocation, distribution and canary charts (the report draws them
        too, for a replay)."""
        return (
            self._scores()
            + self._coverage()
            + self._allocations()
            + self._distributions()
            + self._canaries()
        )

    def _canaries(self) -> str:
        """Every running canary comparison: its difference from the stable version and
        the anytime-valid interval, against the margin a verdict has to clear."""
        if not self.canaries:
            return ""
        rows = [
            IntervalRow(
                f"{model} {canary} vs {stable} {metric}",
                f'data-model-id="{esc(model)}" data-canary="{esc(canary)}" '
                f'data-metric="{esc(metric)}" data-low="{low:.6f}" data-high="{high:.6f}" '
                f'data-difference="{diff:.6f}" data-n="{int(n_c)}"',
                low,
                high,
                diff,
                margin,
                f"{int(n_c):,} canary and {int(n_b):,} stable events",
            )
            for (model, canary, stable, metric), (diff, low, high, n_c, n_b, margin) in sorted(
                self.canaries.items()
            )
        ]
        return "<h2>Canaries vs stable (comparisons as they stand)</h2>" + interval_chart(
            "canaries", "canary", rows
        )

    def _distributions(self) -> str:
        """Reference vs current histogram of each implicated feature (equal-probability
        reference bins for numbers, categories for categories)."""
        if not self.distributions:
            return ""
        out = ["<h2>Implicated features: reference (grey) vs current (colour)</h2>"]
        for (model, version, kind, feature), (ref, cur) in sorted(self.distributions.items()):
            bins = len(ref)
            top = max(*ref, *cur, 1e-9)
            height, step = 90, WIDTH / max(bins, 1)
            parts = [
                f'<svg class="distribution" data-model-id="{esc(model)}" '
                f'data-feature="{esc(feature)}" data-kind="{esc(kind)}" viewBox="0 0 '
                f'{MARGIN + WIDTH + 20} {height}" width="100%" role="img">'
                f'<text x="{MARGIN - 8}" y="{height / 2}" text-anchor="end" class="lane">'
                f"{esc(f'{model} {version} {feature}')}</text>"
            ]
            for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
                x = MARGIN + i * step
                for j, (share, cls) in enumerate(((r, "ref-bar"), (c, "cur-bar"))):
                    h = share / top * (height - 20)
                    parts.append(
                        f'<rect x="{x + j * step * 0.45:.1f}" y="{height - 10 - h:.1f}" '
                        f'width="{step * 0.42:.1f}" height="{h:.1f}" class="{cls}" '
                        f'data-bin="{i}" data-share="{share:.4f}"/>'
                    )
            out.append("".join(parts) + "</svg>")
        return "".join(out)

    def _allocations(self) -> str:
        """Per model with feedback buckets: each segment value's share of its actions."""
        if not self.shares:
            return ""
        out = ["<h2>Allocation shares per feedback bucket</h2>"]
        for model, by_key in sorted(self.shares.items()):
            starts = sorted({t for series in by_key.values() for t, _ in series})
            if len(starts) < 2:
                continue
            lo, span = starts[0], max(starts[-1] - starts[0], 1)
            height = 90
            parts = [
                f'<svg class="shares" data-model-id="{esc(model)}" viewBox="0 0 '
                f'{MARGIN + WIDTH + 20} {height}" width="100%" role="img">'
                f'<text x="{MARGIN - 8}" y="{height / 2}" text-anchor="end" class="lane">'
                f"{esc(model)}</text>"
            ]
            for i, (key, series) in enumerate(sorted(by_key.items())):
                points = " ".join(
                    f"{MARGIN + (t - lo) / span * WIDTH:.1f},{10 + (1 - v) * (height - 20):.1f}"
                    for t, v in series
                )
                parts.append(
                    f'<polyline points="{points}" class="series s{i % 6}" '
                    f'data-segment="{esc(key)}" data-last="{series[-1][1]:.4f}">'
                    f"<title>{esc(key)}: {series[-1][1]:.3f}</title></polyline>"
                )
            legend = " ".join(
                f'<span class="key s{i % 6}">{esc(k)}</span>' for i, k in enumerate(sorted(by_key))
            )
            out.append("".join(parts) + f"</svg><p class='legend'>{legend}</p>")
        return "".join(out)

    def _scores(self) -> str:
        models = sorted({(m, v) for m, v, _ in self.series})
        if not models:
            return "<p>Waiting for the first events.</p>"
        out = ["<h2>Drift statistics (1 = alarm threshold)</h2>"]
        t_hi = max(s[-1][0] for s in self.series.values() if s)
        t_lo = min(s[0][0] for s in self.series.values() if s)
        span = max(t_hi - t_lo, 1.0)
        for model, version in models:
            kinds = sorted(k for m, v, k in self.series if (m, v) == (model, version))
            top = max([1.2] + [x for k in kinds for _, x in self.series[(model, version, k)]])
            height = 90

            def y(v: float, top: float = top, height: int = height) -> float:
                return 10 + (1 - min(v, top) / top) * (height - 20)

            parts = [
                f'<svg class="scores" data-model-id="{esc(model)}" '
                f'data-model-version="{esc(version)}" viewBox="0 0 '
                f'{MARGIN + WIDTH + 20} {height}" width="100%" role="img">'
                f'<text x="{MARGIN - 8}" y="{height / 2}" text-anchor="end" class="lane">'
                f"{esc(f'{model} {version}')}</text>"
                f'<line x1="{MARGIN}" x2="{MARGIN + WIDTH}" y1="{y(1.0):.1f}" '
                f'y2="{y(1.0):.1f}" class="threshold"/>'
            ]
            for i, kind in enumerate(kinds):
                samples = self.series[(model, version, kind)]
                points = " ".join(
                    f"{MARGIN + (t - t_lo) / span * WIDTH:.1f},{y(v):.1f}" for t, v in samples
                )
                last = samples[-1][1]
                parts.append(
                    f'<polyline points="{points}" class="series s{i % 6}" '
                    f'data-kind="{esc(kind)}" data-last="{last:.4f}" '
                    f'data-samples="{len(samples)}"><title>{esc(kind)}: {last:.3f}</title>'
                    "</polyline>"
                )
            legend = " ".join(
                f'<span class="key s{i % 6}">{esc(k)}</span>' for i, k in enumerate(kinds)
            )
            out.append("".join(parts) + f"</svg><p class='legend'>{legend}</p>")
        return "".join(out)

    def page(self) -> str:
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>driftline live</title><style>{STYLE}</style></head><body>"
            '<h1>driftline <span class="live">live</span></h1>'
            f'<main id="live">{self.fragment()}</main>'
            f"<script>{LIVE_SCRIPT}</script></body></html>"
        )

    # -- serving -----------------------------------------------------------------------

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/fragment", self._fragment)
        app.router.add_get("/state.json", self._state)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _page(self, _: web.Request) -> web.Response:
        return web.Response(text=self.page(), content_type="text/html")

    async def _fragment(self, _: web.Request) -> web.Response:
        return web.Response(text=self.fragment(), content_type="text/html")

    async def _state(self, _: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.state()), content_type="application/json")


LIVE_SCRIPT = f"""
async function refresh(){{
  try {{
    const r = await fetch('/fragment', {{cache: 'no-store'}});
    if (!r.ok) return;
    const open = [...document.querySelectorAll('details[open]')].map(d => d.id);
    document.getElementById('live').innerHTML = await r.text();
    for (const id of open) {{ const d = document.getElementById(id); if (d) d.open = true; }}
    openTarget();
  }} catch (e) {{}}
}}
function openTarget(){{var id=location.hash.slice(1);var el=id&&document.getElementById(id);
if(el&&el.tagName==='DETAILS'){{el.open=true;}}}}
window.addEventListener('hashchange', openTarget);
setInterval(refresh, {POLL_MS});
"""
