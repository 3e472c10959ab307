"""Feedback loops: a model whose outputs shape its own future inputs or labels.

A runaway loop looks healthy to drift checks: the model is confident and accurate on the
labels it gets, yet it is steering its own data. Output statistics alone cannot tell a loop
from a real-world trend, so a loop is called only when two kinds of evidence agree:

* a **concentration** signal, persistent over ``feedback_windows`` event-time buckets and
  larger than a minimum effect: the share of the model's actions going to one segment
  keeps growing (a one-sided Mann-Kendall trend test on the share series, with Sen's slope
  as the effect), or the diversity (entropy) of what it exposes keeps falling;
* a **reference** signal from data the model cannot influence: its allocation is above the
  share of positive outcomes observed independently of it (``independent`` outcomes such
  as citizen reports, or outcomes of ``exploration`` traffic), or the clicks on its own
  recommendations are more concentrated than the clicks on exploration traffic. Without
  any reference in the data, labels that exist only where the model acted (**selective
  labels**) or agreement between predictions and labels rising while diversity falls
  (**self-confirmation**) stand in, the decision says so and its severity is lowered.

Tests across segments are corrected with Benjamini-Hochberg, and a segment is reported
only after the condition has held at ``feedback_persistence`` bucket closes in a row
(shares wander: a trend test alone false-alarms on them).

Everything is counted per model in the open bucket and summarised when event time moves
past it, so the per-event cost is a few dictionary updates.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from zlib import crc32

import numpy as np
from scipy.stats import chi2, norm

from detectors.decision import Decision, decision_id
from detectors.settings import DetectorSettings

_NEVER = 2**62
"""An event time later than any real one."""

PAIR = "\x1e"
"""Separates a segment name from its value in a key."""
OVERALL = "*"
"""Exposure scope of all traffic of the model."""

RECOMMENDATION = (
    "Keep a small randomised slice (exploration: true on its predictions) or a persistent "
    "holdout, and compare outcomes there with the model's own traffic. Do not retrain on "
    "labels gathered where the model acted: that feeds the loop. Consider capping the "
    "share any segment can receive."
)


def action_taken(action: object, no_action: frozenset[str]) -> bool:
    """Whether the system acted on a prediction (no action field: the prediction was
    served, which is the action)."""
    if type(action) is str:
        return action not in no_action and action.lower() not in no_action
    if action is None or action is True:
        return True
    if action is False:
        return False
    if isinstance(action, str):
        return action.lower() not in no_action
    if isinstance(action, tuple):
        return len(action) > 0
    return action != 0


Tag = tuple[bool, bool, tuple[tuple[str, str], ...]]
"""Carried with a prediction to its outcome: (acted, exploration, segment pairs)."""

Record = tuple[str, int, int, int, str, Any, Any, Any]
"""An event for the feedback monitor: (model_id, kind, seq, ts, event_id, tag id or
segment pairs, items or prediction, label); kind 0 = prediction, 1 = joined label, 2 =
independent outcome."""

PREDICTION, LABEL, INDEPENDENT = 0, 1, 2


def feedback_tag(
    segment: Mapping[str, str] | None, action: object, exploration: bool, no_action: frozenset[str]
) -> Tag:
    """What the feedback monitor needs to know about a prediction, cheap to build and to
    count (a tuple of tuples hashes at C speed)."""
    return (
        action_taken(action, no_action),
        exploration,
        tuple(segment.items()) if segment else (),
    )


OVERFLOW_VALUE = "(other)"
"""Segment key and value standing for every combination first seen after
``feedback_max_tags`` (at most four pooled tags: acted or not, exploration or not)."""


class TagRegistry:
    """Small integer ids for the tags of one model (there are few distinct ones: acted or
    not, exploration or not, times the segment combinations). Predictions carry the id
    to their outcome, and counting ints is much cheaper than hashing nested tuples."""

    def __init__(self, tags: list[Tag] | None = None, max_tags: int | None = None) -> None:
        self.max_tags = max_tags
        """Distinct tags kept; later new ones are pooled (see `OVERFLOW_VALUE`)."""
        self.tags: list[Tag] = []
        self.ids: dict[Tag, int] = {}
        self.own: set[int] = set()
        """Ids of acted, non-exploration tags (the model's own allocation)."""
        self.explore: set[int] = set()
        for tag in tags or []:
            self.id(tag)

    def id(self, tag: Tag) -> int:
        found = self.ids.get(tag)
        if found is None and self.max_tags is not None and len(self.tags) >= self.max_tags:
            pooled = (tag[0], tag[1], ((OVERFLOW_VALUE, OVERFLOW_VALUE),))
            found = self.ids.get(pooled)
            if found is None:
                found = self._add(pooled)
            return found
        if found is None:
            found = self._add(tag)
        return found

    def _add(self, tag: Tag) -> int:
        found = self.ids.get(tag)
        if found is None:
            found = self.ids[tag] = len(self.tags)
            self.tags.append(tag)
            if tag[1]:
                self.explore.add(found)
            elif tag[0]:
                self.own.add(found)
        return found

    def state(self) -> list[Any]:
        return [[acted, explore, [list(p) for p in pairs]] for acted, explore, pairs in self.tags]

    @classmethod
    def from_state(cls, state: list[Any], max_tags: int | None = None) -> TagRegistry:
        registry = cls(max_tags=max_tags)
        for a, e, pairs in state:
            registry._add((bool(a), bool(e), tuple((k, v) for k, v in pairs)))
        return registry


def key(pair: tuple[str, str]) -> str:
    return f"{pair[0]}{PAIR}{pair[1]}"


def is_positive(label: object) -> bool:
    """An observed positive outcome (an incident, a default, a click): not null, not 0."""
    return label not in (None, 0, "0")  # False == 0


def mann_kendall(series: np.ndarray) -> tuple[float, float]:
    """One-sided p-value of an increasing trend (Mann-Kendall, normal approximation with
    continuity correction) and Sen's slope per step.

    >>> p, slope = mann_kendall(np.arange(8.0))
    >>> round(p, 5), slope
    (0.00042, 1.0)
    """
    n = len(series)
    i, j = np.triu_indices(n, k=1)
    diff = series[j] - series[i]
    s = float(np.sign(diff).sum())
    var = n * (n - 1) * (2 * n + 5) / 18.0
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s else 0.0
    return float(norm.sf(z)), float(np.median(diff / (j - i)))


def entropy(counts: Iterable[int]) -> float:
    """Shannon entropy (nats) of a count distribution, with the Miller-Madow correction
    ((observed categories - 1) / 2n) so small samples are not made to look concentrated.

    >>> round(entropy([10, 10]), 4)
    0.7181
    """
    c = np.fromiter(counts, dtype=np.float64)
    c = c[c > 0]
    if not len(c):
        return 0.0
    n = c.sum()
    p = c / n
    return float(-(p * np.log(p)).sum() + (len(c) - 1) / (2.0 * n))


def gini(counts: Iterable[int]) -> float:
    """Gini coefficient of exposure counts (0 = even, near 1 = all on one item)."""
    c = np.sort(np.fromiter(counts, dtype=np.float64))
    if not len(c) or c.sum() == 0:
        return 0.0
    ranks = np.arange(1, len(c) + 1)
    return float((2 * (ranks * c).sum()) / (len(c) * c.sum()) - (len(c) + 1) / len(c))


def g_test(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """p-value of the G-test that two count distributions over the same items are equal."""
    items = sorted(set(a) | set(b))
    table = np.array([[a.get(k, 0) for k in items], [b.get(k, 0) for k in items]], float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * np.nansum(np.where(table > 0, table * np.log(table / expected), 0.0))
    return float(chi2.sf(g, table.shape[1] - 1))


def benjamini_hochberg(p_values: Mapping[str, float], q: float) -> set[str]:
    """Keys whose p-values are discoveries at false-discovery rate ``q``."""
    ranked = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ranked)
    cutoff = 0
    for rank, (_, p) in enumerate(ranked, start=1):
        if p <= q * rank / m:
            cutoff = rank
    return {k for k, _ in ranked[:cutoff]}


@dataclass(slots=True)
class Bucket:
    """Counts of one event-time bucket of one model."""

    start_ts: int
    events: int = 0
    acted: Counter[str] = field(default_factory=Counter)
    """Acted, non-exploration predictions per segment key (the allocation)."""
    reference: Counter[str] = field(default_factory=Counter)
    """Positive outcomes the model did not cause, per segment key (the reference)."""
    exposure: dict[str, Counter[str]] = field(default_factory=dict)
    """Items shown by acted, non-exploration predictions, per scope (overall, cohorts)."""
    clicks: Counter[str] = field(default_factory=Counter)
    """Labels (clicked items) on acted, non-exploration predictions."""
    explore_clicks: Counter[str] = field(default_factory=Counter)
    """Labels on exploration predictions."""
    coverage: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """[acted predictions, not-acted predictions, acted labelled, not-acted labelled]."""
    agreement: list[int] = field(default_factory=lambda: [0, 0])
    """[labelled acted predictions the label agreed with, labelled acted predictions]."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_ts": self.start_ts,
            "events": self.events,
            "acted": dict(self.acted),
            "reference": dict(self.reference),
            "exposure": {k: dict(v) for k, v in self.exposure.items()},
            "clicks": dict(self.clicks),
            "explore_clicks": dict(self.explore_clicks),
            "coverage": self.coverage,
            "agreement": self.agreement,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bucket:
        return cls(
            d["start_ts"],
            d["events"],
            Counter(d["acted"]),
            Counter(d["reference"]),
            {k: Counter(v) for k, v in d["exposure"].items()},
            Counter(d["clicks"]),
            Counter(d["explore_clicks"]),
            list(d["coverage"]),
            list(d["agreement"]),
        )


@dataclass(slots=True)
class RawBucket:
    """The open bucket: counts keyed by whole tags, expanded into per-segment counts
    (`Bucket`) once, when the bucket closes."""

    start_ts: int
    events: int = 0
    volume: int = 0
    """Events the bucket stands for (each counted event weighted by its sampling)."""
    predictions: Counter[int] = field(default_factory=Counter)
    """Counts per tag id (see `TagRegistry`)."""
    labelled: Counter[int] = field(default_factory=Counter)
    explore_positive: Counter[int] = field(default_factory=Counter)
    independent: Counter[tuple[tuple[str, str], ...]] = field(default_factory=Counter)
    exposure: dict[str, Counter[str]] = field(default_factory=dict)
    clicks: Counter[str] = field(default_factory=Counter)
    explore_clicks: Counter[str] = field(default_factory=Counter)
    agreement: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, run: list[Record], registry: TagRegistry, max_cohorts: int, shift: int) -> None:
        self.events += len(run)
        self.volume += len(run) << shift
        own_ids, explore_ids, tags = registry.own, registry.explore, registry.tags
        predictions = [r for r in run if r[1] == 0]  # PREDICTION
        if predictions:
            self.predictions.update([r[5] for r in predictions])
            shown = [r for r in predictions if r[6] is not None and r[5] in own_ids]
            if shown:
                _count(self.exposure, OVERALL, chain.from_iterable(r[6] for r in shown))
                for r in shown:
                    for pair in tags[r[5]][2][:max_cohorts]:
                        _count(self.exposure, key(pair), r[6])
        labels = [r for r in run if r[1] == 1 and r[7] is not None]  # LABEL
        if labels:
            self.labelled.update([r[5] for r in labels])
            explore = [r for r in labels if r[5] in explore_ids]
            own = [r for r in labels if r[5] in own_ids]
            self.explore_positive.update([r[5] for r in explore if is_positive(r[7])])
            self.explore_clicks.update([r[7] for r in explore if type(r[7]) is str])
            self.clicks.update([r[7] for r in own if type(r[7]) is str])
            # Agreement needs a class or a ranked list; scores are skipped.
            for r in [r for r in own if type(r[6]) is not float]:
                agreed = _agrees(r[6], r[7])
                if agreed is not None:
                    self.agreement[0] += agreed
                    self.agreement[1] += 1
        independent = [r for r in run if r[1] == 2 and is_positive(r[7])]  # INDEPENDENT
        if independent:
            self.independent.update([r[5] for r in independent])

    def summary(self, settings: DetectorSettings, tags: list[Tag]) -> Bucket:
        """Per-segment counts of the closed bucket."""
        out = Bucket(self.start_ts, self.events)
        for tag, n in self.predictions.items():
            acted, explore, pairs = tags[tag]
            if explore:
                continue
            out.coverage[0 if acted else 1] += n
            if acted:
                for pair in pairs:
                    out.acted[key(pair)] += n
        for tag, n in self.labelled.items():
            acted, explore, _ = tags[tag]
            if not explore:
                out.coverage[2 if acted else 3] += n
        for tag, n in self.explore_positive.items():
            for pair in tags[tag][2]:
                out.reference[key(pair)] += n
        for pairs, n in self.independent.items():
            for pair in pairs:
                out.reference[key(pair)] += n
        limit = settings.feedback_max_items
        out.exposure = {scope: _capped(c, limit) for scope, c in self.exposure.items()}
        out.clicks = _capped(self.clicks, limit)
        out.explore_clicks = _capped(self.explore_clicks, limit)
        out.agreement = list(self.agreement)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_ts": self.start_ts,
            "events": self.events,
            "volume": self.volume,
            "predictions": list(self.predictions.items()),
            "labelled": list(self.labelled.items()),
            "explore_positive": list(self.explore_positive.items()),
            "independent": list(self.independent.items()),
            "exposure": {k: dict(v) for k, v in self.exposure.items()},
            "clicks": dict(self.clicks),
            "explore_clicks": dict(self.explore_clicks),
            "agreement": self.agreement,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RawBucket:
        def tags(items: list[Any]) -> Counter[int]:
            return Counter(dict(items))

        return cls(
            d["start_ts"],
            d["events"],
            d["volume"],
            tags(d["predictions"]),
            tags(d["labelled"]),
            tags(d["explore_positive"]),
            Counter({tuple((k, v) for k, v in pairs): n for pairs, n in d["independent"]}),
            {k: Counter(v) for k, v in d["exposure"].items()},
            Counter(d["clicks"]),
            Counter(d["explore_clicks"]),
            list(d["agreement"]),
        )


def _count(exposure: dict[str, Counter[str]], scope: str, items: Iterable[str]) -> None:
    counts = exposure.get(scope)
    if counts is None:
        counts = exposure[scope] = Counter()
    counts.update(items)


def _capped(counts: Counter[str], limit: int) -> Counter[str]:
    """The ``limit`` most common entries, the rest pooled as ``__other__`` (bounded memory
    for large catalogues)."""
    if len(counts) <= limit:
        return Counter(counts)
    top = counts.most_common(limit)
    out = Counter(dict(top))
    out["__other__"] += sum(counts.values()) - sum(n for _, n in top)
    return out


class FeedbackMonitor:
    """Feedback-loop signals of one model over event-time buckets."""

    def __init__(self, model_id: str, settings: DetectorSettings) -> None:
        self.model_id = model_id
        self.settings = settings
        self.no_action = frozenset(
            v.strip().lower() for v in settings.feedback_no_action.split(",") if v.strip()
        )
        self.bucket_ms = settings.feedback_bucket_ms
        self.open: dict[int, RawBucket] = {}
        """Buckets still counting, by start time."""
        self.closed_through = -_NEVER
        """Start of the last closed bucket."""
        self.watermarks = [float(-_NEVER), float(-_NEVER)]
        """Largest event time seen among predictions, and among outcomes."""
        self.watermark = float(-_NEVER)
        """Event time both sides have reached (never decreases)."""
        self.registry = TagRegistry(max_tags=settings.feedback_max_tags)
        self.batch_shift = 0
        self.sample_shift = 0
        """Requests are counted when the low ``sample_shift`` bits of their id's CRC-32 are
        zero: all of them at low volume, a deterministic half, quarter... above
        ``feedback_sample_target`` events a bucket (see `_close`)."""
        self.history: deque[Bucket] = deque(maxlen=settings.feedback_windows)
        self.streaks: dict[str, int] = {}
        self.decided: set[str] = set()
        self.decisions: list[Decision] = []

    # -- counting ----------------------------------------------------------------------

    def observe(self, records: list[Record]) -> None:
        """Count a batch of this model's records in arrival order.

        Each record counts in the bucket of its own event time, so the counts do not depend
        on how the predictions and outcomes topics were interleaved on the way in. A bucket
        closes (and the window is evaluated) once event time has passed its end by
        ``feedback_lateness_ms`` on both sides: the predictions, and the outcomes once any
        have been seen (a backlog of outcomes read ahead of its predictions, or the
        reverse, does not close buckets early). At most ``feedback_windows`` buckets stay
        open; a record older than every open bucket counts in the oldest one.
        """
        bucket_ms, lateness = self.bucket_ms, self.settings.feedback_lateness_ms
        # These records were sampled with the shift in force before this call; a close
        # below changes it for the next batch only.
        self.batch_shift = self.sample_shift
        own_ts = [r[3] for r in records if r[1] == PREDICTION]
        other_ts = [r[3] for r in records if r[1] != PREDICTION]
        own_max = max(own_ts, default=self.watermarks[0])
        other_max = max(other_ts, default=self.watermarks[1])
        final = min(own_max, other_max) if other_max > -_NEVER else own_max
        threshold = min(self.open) + bucket_ms + lateness if self.open else _NEVER
        if max(final, self.watermark) < threshold:
            # Nothing closes in this batch (the usual case): count it all at once.
            self.watermarks = [float(max(own_max, self.watermarks[0])), float(other_max)]
            self.watermark = float(max(final, self.watermark))
            self._add(records)
            if self.open and len(self.open) > self.settings.feedback_windows:
                self._close(records[-1])
            return
        ts = np.fromiter((r[3] for r in records), np.float64, len(records))
        is_prediction = np.fromiter((r[1] == PREDICTION for r in records), bool, len(records))
        own = np.maximum.accumulate(np.where(is_prediction, ts, self.watermarks[0]))
        other = np.maximum.accumulate(np.where(is_prediction, self.watermarks[1], ts))
        self.watermarks = [float(own[-1]), float(other[-1])]
        # Before any outcome, the predictions alone drive event time.
        both = np.where(other > -_NEVER, np.minimum(own, other), own)
        reach = np.maximum.accumulate(np.maximum(both, self.watermark))
        self.watermark = float(reach[-1])
        i, n = 0, len(records)
        while i < n:
            threshold = min(self.open) + bucket_ms + lateness if self.open else _NEVER
            j = int(np.searchsorted(reach, threshold, side="left"))
            j = max(j, i)
            if j > i:
                self._add(records[i:j])
                i = j
            if j < n:
                self._close(records[j])
            while len(self.open) > self.settings.feedback_windows:
                self._close(records[i - 1])

    def sampled(self, request_id: str) -> bool:
        """Whether this request is counted (the same answer for its prediction and its
        outcome, in replay and in every worker)."""
        return not self.sample_shift or not (
            crc32(request_id.encode()) & ((1 << self.sample_shift) - 1)
        )

    def _close(self, trigger: Record) -> None:
        """Close the oldest open bucket, evaluate the window, and set the sampling for the
        buckets to come from the volume of the one closed: shares and diversities are as
        good on a few thousand events as on all of them, and the cost per event falls as
        volume rises."""
        oldest = min(self.open)
        closed = self.open.pop(oldest)
        self.history.append(closed.summary(self.settings, self.registry.tags))
        self.closed_through = oldest
        self.decisions += self._evaluate(trigger[3], trigger[2], trigger[4])
        volume = closed.volume
        shift = 0
        while volume >> (shift + 1) >= self.settings.feedback_sample_target:
            shift += 1
        self.sample_shift = min(shift, 16)

    def _add(self, run: list[Record]) -> None:
        bucket_ms, floor = self.bucket_ms, self.closed_through + self.bucket_ms
        starts = [r[3] - r[3] % bucket_ms for r in run]
        if min(starts) < floor:  # too late for a closed bucket: counts in the oldest open
            starts = [max(start, floor) for start in starts]
        groups: dict[int, list[Record]]
        if starts[0] == starts[-1] and len(set(starts)) == 1:
            groups = {starts[0]: run}
        else:
            groups = {}
            for start, record in zip(starts, run, strict=True):
                groups.setdefault(start, []).append(record)
        for start, records in groups.items():
            bucket = self.open.get(start)
            if bucket is None:
                bucket = self.open[start] = RawBucket(start)
            bucket.add(records, self.registry, self.settings.feedback_max_cohorts, self.batch_shift)

    def take_decisions(self) -> list[Decision]:
        out, self.decisions = self.decisions, []
        return out

    # -- evaluation at each bucket close -----------------------------------------------

    def _evaluate(self, ts: int, seq: int, event_id: str) -> list[Decision]:
        s = self.settings
        history = list(self.history)
        if len(history) < s.feedback_windows:
            return []
        concentration: dict[str, dict[str, Any]] = {}
        concentration.update(self._allocation_trends(history))
        concentration.update(self._allocation_concentration(history))
        concentration.update(self._exposure_trends(history))
        references = self._references(history)
        dependence = self._label_dependence(history)
        confirmation = self._self_confirmation(history)
        found_trend = benjamini_hochberg(
            {k: v["p_value"] for k, v in concentration.items()}, s.feedback_fdr
        )
        found_reference = benjamini_hochberg(
            {k: v["p_value"] for k, v in references.items() if v["available"]}, s.feedback_fdr
        )
        ready: dict[str, list[str]] = {}
        for key in sorted(concentration):
            signal = concentration[key]
            reference = references.get(key)
            has_reference = reference is not None and reference["available"]
            strong = key in found_trend and signal["effect"] >= signal["min_effect"]
            if has_reference:
                assert reference is not None
                backed = key in found_reference and reference["effect"] >= reference["min_effect"]
            else:
                backed = dependence["found"] or (
                    signal["test"] == "exposure_entropy_decrease" and confirmation["found"]
                )
            streak = self.streaks[key] = self.streaks.get(key, 0) + 1 if strong and backed else 0
            if streak >= s.feedback_persistence and _group(key) not in self.decided:
                ready.setdefault(_group(key), []).append(key)
        decisions = []
        for group, keys in ready.items():
            self.decided.add(group)
            # The broadest finding leads (all traffic, a whole dimension), then the strongest.
            key = min(keys, key=lambda k: (_breadth(k), concentration[k]["p_value"]))
            decisions.append(
                self._decision(
                    key,
                    concentration[key],
                    references.get(key),
                    dependence,
                    confirmation,
                    history,
                    (ts, seq, event_id),
                    sorted(_scope_name(k) for k in keys),
                )
            )
        return decisions

    def _allocation_trends(self, history: list[Bucket]) -> dict[str, dict[str, Any]]:
        """Per segment key: is its share of the model's actions growing?"""
        s = self.settings
        keys = set().union(*(b.acted for b in history))
        totals: dict[str, np.ndarray] = {}
        out = {}
        for key in keys:
            dim = key.split(PAIR, 1)[0]
            if dim not in totals:
                totals[dim] = np.array(
                    [
                        sum(n for k, n in b.acted.items() if k.split(PAIR, 1)[0] == dim)
                        for b in history
                    ],
                    dtype=np.float64,
                )
            total = totals[dim]
            if (total < s.feedback_min_bucket_events).any():
                continue
            shares = np.array([b.acted.get(key, 0) for b in history], np.float64) / total
            if shares.max() < s.feedback_min_share_change:
                continue  # a segment too small to run away with anything
            p, slope = mann_kendall(shares)
            out[key] = {
                "test": "allocation_share_increase",
                "p_value": p,
                "effect": slope * (len(shares) - 1),
                "min_effect": s.feedback_min_share_change,
                "series": [round(float(x), 4) for x in shares],
                "share_now": float(shares[-1]),
            }
        return out

    def _allocation_concentration(self, history: list[Bucket]) -> dict[str, dict[str, Any]]:
        """Per segment dimension: is the allocation over its values narrowing (entropy of
        the shares falling), whichever values gain?"""
        s = self.settings
        dims = {k.split(PAIR, 1)[0] for b in history for k in b.acted}
        out = {}
        for dim in dims:
            counts = [
                [n for k, n in b.acted.items() if k.split(PAIR, 1)[0] == dim] for b in history
            ]
            if min(sum(c) for c in counts) < s.feedback_min_bucket_events:
                continue
            h = np.array([entropy(c) for c in counts])
            p, _ = mann_kendall(-h)
            half = len(h) // 2
            early = float(h[:half].mean())
            out[f"allocation:{dim}"] = {
                "test": "allocation_entropy_decrease",
                "p_value": p,
                "effect": 1.0 - float(h[half:].mean()) / early if early > 0 else 0.0,
                "min_effect": s.feedback_min_entropy_drop,
                "series": [round(float(x), 4) for x in h],
            }
        return out

    def _exposure_trends(self, history: list[Bucket]) -> dict[str, dict[str, Any]]:
        """Per scope (overall, cohorts): is the diversity of exposed items falling?"""
        s = self.settings
        scopes = set().union(*(b.exposure for b in history))
        out = {}
        for scope in scopes:
            counts = [b.exposure.get(scope, Counter()) for b in history]
            if min(sum(c.values()) for c in counts) < s.feedback_min_bucket_events:
                continue
            h = np.array([entropy(c.values()) for c in counts])
            p, slope = mann_kendall(-h)
            half = len(h) // 2
            early = float(h[:half].mean())
            drop = 1.0 - float(h[half:].mean()) / early if early > 0 else 0.0
            out[f"exposure:{scope}"] = {
                "test": "exposure_entropy_decrease",
                "p_value": p,
                "effect": drop,
                "min_effect": s.feedback_min_entropy_drop,
                "series": [round(float(x), 4) for x in h],
                "gini_now": round(gini(counts[-1].values()), 4),
                "coverage_now": len(counts[-1]),
                "coverage_before": len(counts[0]),
                "entropy_slope": -slope,
            }
        return out

    def _references(self, history: list[Bucket]) -> dict[str, dict[str, Any]]:
        """Per segment key: allocation share above the share of positive outcomes the model
        did not cause; per exposure scope: clicks on its own traffic more concentrated than
        on exploration traffic."""
        s = self.settings
        acted: Counter[str] = Counter()
        reference: Counter[str] = Counter()
        clicks: Counter[str] = Counter()
        explore_clicks: Counter[str] = Counter()
        for b in history:
            acted.update(b.acted)
            reference.update(b.reference)
            clicks.update(b.clicks)
            explore_clicks.update(b.explore_clicks)
        out: dict[str, dict[str, Any]] = {}
        for key in acted:
            dim = key.split(PAIR, 1)[0]
            a_total = sum(n for k, n in acted.items() if k.split(PAIR, 1)[0] == dim)
            r_total = sum(n for k, n in reference.items() if k.split(PAIR, 1)[0] == dim)
            available = r_total >= s.feedback_min_reference
            a = acted[key] / a_total
            r = reference.get(key, 0) / r_total if r_total else 0.0
            se = math.sqrt(a * (1 - a) / a_total + max(r * (1 - r), 1e-9) / max(r_total, 1))
            out[key] = {
                "test": "allocation_above_reference",
                "available": available,
                "p_value": float(norm.sf((a - r) / se)) if available else 1.0,
                "effect": a - r,
                "min_effect": s.feedback_min_gap,
                "allocation_share": round(a, 4),
                "reference_share": round(r, 4),
                "reference_events": r_total,
            }
        for dim in {k.split(PAIR, 1)[0] for k in acted}:
            own = {k: n for k, n in acted.items() if k.split(PAIR, 1)[0] == dim}
            ref = {k: n for k, n in reference.items() if k.split(PAIR, 1)[0] == dim}
            a_total, r_total = sum(own.values()), sum(ref.values())
            available = r_total >= s.feedback_min_reference
            excess = {
                k: own.get(k, 0) / a_total - (ref.get(k, 0) / r_total if r_total else 0.0)
                for k in set(own) | set(ref)
            }
            over = sorted((k for k, v in excess.items() if v > 0), key=lambda k: -excess[k])
            out[f"allocation:{dim}"] = {
                "test": "allocation_differs_from_reference",
                "available": available,
                "p_value": g_test(own, ref) if available else 1.0,
                "effect": sum(v for v in excess.values() if v > 0),
                "min_effect": s.feedback_min_gap,
                "over_allocated": [
                    {"segment": k.split(PAIR, 1)[1], "excess_share": round(excess[k], 4)}
                    for k in over
                ],
                "reference_events": r_total,
            }
        n_clicks, n_explore = sum(clicks.values()), sum(explore_clicks.values())
        available = n_clicks >= s.feedback_min_reference and n_explore >= s.feedback_min_reference
        h_own, h_explore = entropy(clicks.values()), entropy(explore_clicks.values())
        gap = 1.0 - h_own / h_explore if h_explore > 0 else 0.0
        click_gap = {
            "test": "clicks_more_concentrated_than_exploration",
            "available": available,
            "p_value": g_test(clicks, explore_clicks) if available and gap > 0 else 1.0,
            "effect": gap,
            "min_effect": s.feedback_min_gap,
            "click_entropy": round(h_own, 4),
            "exploration_click_entropy": round(h_explore, 4),
            "reference_events": n_explore,
        }
        scopes = set().union(*(b.exposure for b in history))
        for scope in scopes:
            out[f"exposure:{scope}"] = click_gap
        return out

    def _label_dependence(self, history: list[Bucket]) -> dict[str, Any]:
        """Selective labels: are outcomes observed mostly where the model acted?"""
        s = self.settings
        n_a, n_n, l_a, l_n = (sum(b.coverage[i] for b in history) for i in range(4))
        if n_a < s.feedback_min_bucket_events or n_n < s.feedback_min_bucket_events:
            return {"found": False, "available": False}
        c_a, c_n = l_a / n_a, l_n / n_n
        se = math.sqrt(max(c_a * (1 - c_a), 1e-9) / n_a + max(c_n * (1 - c_n), 1e-9) / n_n)
        p = float(norm.sf((c_a - c_n) / se))
        return {
            "test": "labels_depend_on_action",
            "available": True,
            "found": p < s.feedback_fdr and c_a - c_n >= s.feedback_min_coverage_gap,
            "p_value": p,
            "label_coverage_acted": round(c_a, 4),
            "label_coverage_not_acted": round(c_n, 4),
            "acted": n_a,
            "not_acted": n_n,
        }

    def _self_confirmation(self, history: list[Bucket]) -> dict[str, Any]:
        """Agreement between predictions and later labels rising."""
        s = self.settings
        judged = np.array([b.agreement[1] for b in history], np.float64)
        if (judged < s.feedback_min_bucket_events).any():
            return {"found": False, "available": False}
        rate = np.array([b.agreement[0] for b in history], np.float64) / judged
        p, slope = mann_kendall(rate)
        return {
            "test": "agreement_increase",
            "available": True,
            "found": p < s.feedback_fdr and slope > 0,
            "p_value": p,
            "series": [round(float(x), 4) for x in rate],
        }

    def _decision(
        self,
        key: str,
        signal: dict[str, Any],
        reference: dict[str, Any] | None,
        dependence: dict[str, Any],
        confirmation: dict[str, Any],
        history: list[Bucket],
        trigger: tuple[int, int, str],
        involved: list[str],
    ) -> Decision:
        ts, seq, event_id = trigger
        has_reference = reference is not None and reference["available"]
        exposure = key.startswith("exposure:")
        spread = key.startswith("allocation:")
        scope = key.split(":", 1)[1] if exposure or spread else key
        segment: dict[str, str] | None = None
        if spread:
            over = (reference or {}).get("over_allocated") or []
            top = over[0]["segment"] if has_reference and over else _gainer(history, scope)
            segment = {scope: top} if top is not None else None
            finding = f"the model's actions over {scope} keep narrowing"
        else:
            if scope != OVERALL:
                name, value = scope.split(PAIR, 1)
                segment = {name: value}
            where = "all traffic" if segment is None else f"{scope.replace(PAIR, '=')}"
            finding = (
                f"the diversity of what the model shows ({where}) keeps falling"
                if exposure
                else f"the share of the model's actions going to {where} keeps growing"
            )
        if has_reference:
            basis = "beyond what outcomes it cannot influence justify"
            reference_text = (
                "exploration traffic"
                if exposure or not any(b.reference for b in history)
                else "independent outcomes and exploration traffic"
            )
        else:
            basis = (
                "while labels exist mostly where it acted"
                if dependence["found"]
                else "while its agreement with the labels rises"
            )
            reference_text = (
                "none in the data (no exploration traffic, no independent outcomes): "
                "severity lowered; add one to confirm"
            )
        signals = [{k: v for k, v in signal.items() if k != "min_effect"}]
        if has_reference:
            signals.append({k: v for k, v in reference.items() if k != "available"})  # type: ignore[union-attr]
        if dependence.get("available"):
            signals.append({k: v for k, v in dependence.items() if k != "available"})
        if confirmation.get("available"):
            signals.append({k: v for k, v in confirmation.items() if k != "available"})
        share = signal.get("share_now", 1.0)
        return Decision(
            decision_id=decision_id(self.model_id, "alert", "feedback_loop", _group(key)),
            type="alert",
            kind="feedback_loop",
            model_id=self.model_id,
            model_version="",
            severity="critical" if has_reference else "warning",
            features=(),
            detector={
                "name": "feedback_loop",
                "config": {
                    "sample_rate": 1.0 / (1 << self.sample_shift),
                    "bucket_ms": self.bucket_ms,
                    "windows": self.settings.feedback_windows,
                    "persistence": self.settings.feedback_persistence,
                    "fdr": self.settings.feedback_fdr,
                },
            },
            evidence={
                "statistic": signal["test"],
                "value": round(signal["effect"], 6),
                "threshold": signal["min_effect"],
                "p_value": signal["p_value"],
                "window": {
                    "first_ts": history[0].start_ts,
                    "last_ts": ts,
                    "count": sum(b.events for b in history),
                },
                "reference": reference_text,
                "reference_available": has_reference,
                "trigger_event_id": event_id,
                "buckets": [b.start_ts for b in history],
                "involved": involved,
                "signals": signals,
            },
            impact={
                "traffic_share": round(float(share), 6),
                "effect_size": round(signal["effect"], 6),
                "effect_unit": "share_change"
                if signal["test"] == "allocation_share_increase"
                else "relative_entropy_drop",
            },
            ts=ts,
            seq=seq,
            recommendation=f"Possible feedback loop: {finding} {basis}. {RECOMMENDATION}",
            segment=segment,
        )

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "open": [b.to_dict() for b in self.open.values()],
            "closed_through": self.closed_through,
            "watermarks": self.watermarks,
            "watermark": self.watermark,
            "sample_shift": self.sample_shift,
            "tags": self.registry.state(),
            "history": [b.to_dict() for b in self.history],
            "streaks": dict(self.streaks),
            "decided": sorted(self.decided),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.open = {b["start_ts"]: RawBucket.from_dict(b) for b in state["open"]}
        self.closed_through = state["closed_through"]
        self.watermarks = list(state["watermarks"])
        self.watermark = state["watermark"]
        self.sample_shift = state["sample_shift"]
        self.registry = TagRegistry.from_state(state["tags"], self.settings.feedback_max_tags)
        self.history = deque(
            (Bucket.from_dict(b) for b in state["history"]), maxlen=self.settings.feedback_windows
        )
        self.streaks = dict(state["streaks"])
        self.decided = set(state["decided"])


def _group(key: str) -> str:
    """One loop, one decision: segment-level and dimension-level allocation findings of the
    same dimension are the same loop, and so are exposure findings overall and per cohort."""
    if key.startswith("exposure:"):
        return "exposure"
    if key.startswith("allocation:"):
        return key
    return "allocation:" + key.split(PAIR, 1)[0]


def _gainer(history: list[Bucket], dim: str) -> str | None:
    """The value of a dimension whose share of actions grew most over the window."""
    half = len(history) // 2

    def shares(buckets: list[Bucket]) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for b in buckets:
            counts.update({k: n for k, n in b.acted.items() if k.split(PAIR, 1)[0] == dim})
        total = sum(counts.values()) or 1
        return {k: n / total for k, n in counts.items()}

    before, after = shares(history[:half]), shares(history[half:])
    gains = {k: v - before.get(k, 0.0) for k, v in after.items()}
    if not gains:
        return None
    return max(gains, key=lambda k: (gains[k], k)).split(PAIR, 1)[1]


def _breadth(key: str) -> int:
    """0 for findings about all traffic or a whole dimension, 1 for a single segment."""
    return 0 if key in (f"exposure:{OVERALL}",) or key.startswith("allocation:") else 1


def _scope_name(key: str) -> str:
    """Readable scope of a finding: ``all``, ``district`` or ``district=d2``."""
    scope = key.split(":", 1)[1] if key.startswith(("exposure:", "allocation:")) else key
    return "all" if scope == OVERALL else scope.replace(PAIR, "=")


def _agrees(prediction: object, label: object) -> int | None:
    """1 when the label confirms the prediction, 0 when not, None when not comparable."""
    if isinstance(prediction, tuple):
        return int(label in prediction)
    if isinstance(prediction, (str, bool)) or type(prediction) is int:
        return int(str(prediction) == str(label))
    return None
