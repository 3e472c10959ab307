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
from typing import Any, Final
from zlib import crc32

import numpy as np
from scipy.stats import norm

from driftline.detectors.decision import Decision, Impact, Trigger, build_decision
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.stats.onset import (
    Scan,
    contrast_rise,
    difference,
    dispersion,
    log_level_rise,
    pooled_log_split,
    proportion_gap,
    proportion_rise,
    scales,
    simpson,
    threshold,
)

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


def no_action_words(settings: DetectorSettings) -> frozenset[str]:
    """The action strings that mean "not acted" (lower case)."""
    return frozenset(v.strip().lower() for v in settings.feedback_no_action.split(",") if v.strip())


NOT_LOOKED_UP: frozenset[str] = frozenset({"(not looked up)"})
"""Stands for a model whose "not acted" words are not looked up yet (in caches where None
means that its feedback-loop detection is off)."""


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

PREDICTION, LABEL, INDEPENDENT = 0, 1, 2


Record = tuple[str, int, int, int, str, Any, Any, Any, int]
"""An event for the feedback monitor, in arrival order: a tuple read by the indices below.
Not a NamedTuple: measured with `benchmarks/feedback_cost.py`, one cost about 1 us more per
event on the loop simulations (building one takes about 0.5 us, each field read 25 ns
more), on a path whose cost is already above its target."""

R_MODEL: Final = 0
R_KIND: Final = 1
R_SEQ: Final = 2
R_TS: Final = 3
R_EVENT_ID: Final = 4
R_TAG: Final = 5
R_ITEMS: Final = 6
R_LABEL: Final = 7
R_PREDICTION_TS: Final = 8
"""A record's fields: model id; kind (`PREDICTION`, `LABEL` for a joined outcome,
`INDEPENDENT` for an outcome of no prediction); position in the model stage's merge order;
event time; event id; the prediction's tag id (`TagRegistry`), or an independent outcome's
segment pairs; the items shown (a ranked list) or the prediction a label is for, else None;
the label; the event time of the prediction a label is for (its own time otherwise)."""


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
OVERFLOW_PAIRS = ((OVERFLOW_VALUE, OVERFLOW_VALUE),)
"""The segment pairs of a pooled tag."""


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
            pooled = (tag[0], tag[1], OVERFLOW_PAIRS)
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


@dataclass(slots=True)
class Bucket:
    """What the tests keep of one closed event-time bucket of one model: counts per
    segment key and concentration indices, small enough to keep weeks of them
    (``feedback_history_buckets``); item counts only while the bucket is among the last
    ``feedback_windows`` (the click reference pools them)."""

    start_ts: int
    events: int = 0
    acted: Counter[str] = field(default_factory=Counter)
    """Acted, non-exploration predictions per segment key (the allocation)."""
    served: Counter[str] = field(default_factory=Counter)
    """Non-exploration predictions per segment key, acted on or not (the demand)."""
    reference: Counter[str] = field(default_factory=Counter)
    """Positive outcomes the model did not cause, per segment key (the reference)."""
    concentration: dict[str, list[float]] = field(default_factory=dict)
    """Per exposure scope (overall, cohorts): [Simpson index of the items shown by acted,
    non-exploration predictions, its sampling variance, predictions that showed items]."""
    exposure: Counter[str] = field(default_factory=Counter)
    """Items shown by acted, non-exploration predictions (recent buckets only)."""
    clicks: Counter[str] = field(default_factory=Counter)
    """Labels (clicked items) on acted, non-exploration predictions (recent buckets only)."""
    explore_clicks: Counter[str] = field(default_factory=Counter)
    """Labels on exploration predictions (kept for the whole history: they are few, and
    pooled over windows they measure what users want far better than bucket by bucket)."""
    coverage: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """[acted predictions, not-acted predictions, acted labelled, not-acted labelled], the
    labels counted in the bucket of their prediction (late labels still count here)."""
    agreement: list[int] = field(default_factory=lambda: [0, 0])
    """[labelled acted predictions the label agreed with, labelled acted predictions]."""

    def forget_items(self) -> None:
        """Drop the item counts of the model's own traffic (the bucket left the recent
        window)."""
        self.exposure, self.clicks = Counter(), Counter()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_ts": self.start_ts,
            "events": self.events,
            "acted": dict(self.acted),
            "served": dict(self.served),
            "reference": dict(self.reference),
            "concentration": self.concentration,
            "exposure": dict(self.exposure),
            "clicks": dict(self.clicks),
            "explore_clicks": dict(self.explore_clicks),
            "coverage": self.coverage,
            "agreement": self.agreement,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bucket:
        if "served" not in d:  # a checkpoint of the earlier fixed-window tests
            exposure = {k: Counter(v) for k, v in d["exposure"].items()}
            d = {
                **d,
                "served": dict(d["acted"]),
                "concentration": {
                    scope: [*simpson(_array(c)), sum(c.values()) / EXPOSURE_PER_PREDICTION]
                    for scope, c in exposure.items()
                },
                "exposure": exposure.get(OVERALL, {}),
            }
        return cls(
            d["start_ts"],
            d["events"],
            Counter(d["acted"]),
            Counter(d["served"]),
            Counter(d["reference"]),
            {k: list(v) for k, v in d["concentration"].items()},
            Counter(d["exposure"]),
            Counter(d["clicks"]),
            Counter(d["explore_clicks"]),
            list(d["coverage"]),
            list(d["agreement"]),
        )


EXPOSURE_PER_PREDICTION = 5
"""Items per prediction assumed for a checkpoint of the earlier tests (item counts only)."""


def _array(counts: Counter[str]) -> np.ndarray:
    return np.fromiter(counts.values(), np.float64, len(counts))


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
    """Labels per tag id of the predictions made in this bucket."""
    explore_positive: Counter[int] = field(default_factory=Counter)
    independent: Counter[tuple[tuple[str, str], ...]] = field(default_factory=Counter)
    exposure: dict[str, Counter[str]] = field(default_factory=dict)
    shown: Counter[str] = field(default_factory=Counter)
    """Predictions that showed items, per exposure scope."""
    clicks: Counter[str] = field(default_factory=Counter)
    explore_clicks: Counter[str] = field(default_factory=Counter)
    agreement: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, run: list[Record], registry: TagRegistry, max_cohorts: int, shift: int) -> None:
        self.events += len(run)
        self.volume += len(run) << shift
        own_ids, explore_ids, tags = registry.own, registry.explore, registry.tags
        predictions = [r for r in run if r[R_KIND] == PREDICTION]
        if predictions:
            self.predictions.update([r[R_TAG] for r in predictions])
            shown = [r for r in predictions if r[R_ITEMS] is not None and r[R_TAG] in own_ids]
            if shown:
                _count(self.exposure, OVERALL, chain.from_iterable(r[R_ITEMS] for r in shown))
                self.shown[OVERALL] += len(shown)
                for r in shown:
                    for pair in tags[r[R_TAG]][2][:max_cohorts]:
                        _count(self.exposure, key(pair), r[R_ITEMS])
                        self.shown[key(pair)] += 1
        labels = [r for r in run if r[R_KIND] == LABEL and r[R_LABEL] is not None]
        if labels:
            explore = [r for r in labels if r[R_TAG] in explore_ids]
            own = [r for r in labels if r[R_TAG] in own_ids]
            self.explore_positive.update([r[R_TAG] for r in explore if is_positive(r[R_LABEL])])
            self.explore_clicks.update([r[R_LABEL] for r in explore if type(r[R_LABEL]) is str])
            self.clicks.update([r[R_LABEL] for r in own if type(r[R_LABEL]) is str])
            # Agreement needs a class or a ranked list; scores are skipped.
            for r in [r for r in own if type(r[R_ITEMS]) is not float]:
                agreed = _agrees(r[R_ITEMS], r[R_LABEL])
                if agreed is not None:
                    self.agreement[0] += agreed
                    self.agreement[1] += 1
        independent = [r for r in run if r[R_KIND] == INDEPENDENT and is_positive(r[R_LABEL])]
        if independent:
            self.independent.update([r[R_TAG] for r in independent])

    def label(self, tag: int) -> None:
        """A label of a prediction made in this bucket (never more labels than
        predictions of a tag: coverage is a rate)."""
        if self.labelled[tag] < self.predictions[tag]:
            self.labelled[tag] += 1

    def summary(self, settings: DetectorSettings, tags: list[Tag]) -> Bucket:
        """Per-segment counts and concentration indices of the closed bucket."""
        out = Bucket(self.start_ts, self.events)
        for tag, n in self.predictions.items():
            acted, explore, pairs = tags[tag]
            if explore:
                continue
            out.coverage[0 if acted else 1] += n
            for pair in pairs:
                out.served[key(pair)] += n
                if acted:
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
        out.concentration = {
            scope: [*simpson(_array(c)), float(self.shown[scope])]
            for scope, c in self.exposure.items()
        }
        limit = settings.feedback_max_items
        out.exposure = _capped(self.exposure.get(OVERALL, Counter()), limit)
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
            "shown": dict(self.shown),
            "clicks": dict(self.clicks),
            "explore_clicks": dict(self.explore_clicks),
            "agreement": self.agreement,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RawBucket:
        def tags(items: list[Any]) -> Counter[int]:
            return Counter(dict(items))

        exposure = {k: Counter(v) for k, v in d["exposure"].items()}
        shown = d.get("shown") or {
            k: sum(c.values()) // EXPOSURE_PER_PREDICTION for k, c in exposure.items()
        }
        return cls(
            d["start_ts"],
            d["events"],
            d["volume"],
            tags(d["predictions"]),
            tags(d["labelled"]),
            tags(d["explore_positive"]),
            Counter({tuple((k, v) for k, v in pairs): n for pairs, n in d["independent"]}),
            exposure,
            Counter(shown),
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


@dataclass(frozen=True, slots=True)
class Finding:
    """The best scale of one concentration test, with the reference evidence at it."""

    key: str
    """Segment key (``district\x1ed2``) or exposure scope (``exposure:*``)."""
    test: str
    score: float
    """The weakest z among the tests that must agree (concentration, reference)."""
    scan: Scan
    """The concentration change at the best scale."""
    reference: dict[str, Any] | None
    """Reference evidence at that scale (None: no reference in the data)."""
    measure: str
    """What the concentration change is measured on."""
    share: float
    """The segment's share of the model's actions in the after window (1 for exposure)."""


class FeedbackMonitor:
    """Feedback-loop signals of one model over event-time buckets."""

    def __init__(self, model_id: str, settings: DetectorSettings) -> None:
        self.model_id = model_id
        self.settings = settings
        self.no_action = no_action_words(settings)
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
        self.sample_mask = 0
        """Requests are counted when their id's CRC-32 has none of these bits set (the low
        `sample_shift` ones): all of them at low volume, a deterministic half, quarter...
        above ``feedback_sample_target`` events a bucket (see `_close`). The model stage
        tests it inline (``crc32(request_id.encode()) & mask``): a method call would double
        the cost of the test."""
        self.history: deque[Bucket] = deque(maxlen=settings.feedback_history_buckets)
        self.decided: set[str] = set()
        self.decisions: list[Decision] = []
        self.unmatched_labels = 0
        """Labels of predictions older than the history (their coverage is not known)."""

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
        own_ts = [r[R_TS] for r in records if r[R_KIND] == PREDICTION]
        other_ts = [r[R_TS] for r in records if r[R_KIND] != PREDICTION]
        own_max = max(own_ts, default=self.watermarks[0])
        other_max = max(other_ts, default=self.watermarks[1])
        final = min(own_max, other_max) if other_max > -_NEVER else own_max
        if other_max > -_NEVER and self.watermarks[1] == -_NEVER:
            # The batch brings the first outcomes: until the first of them, the
            # predictions alone drove event time (as in the walk below).
            first = next(i for i, r in enumerate(records) if r[R_KIND] != PREDICTION)
            final = max(final, max((r[R_TS] for r in records[:first]), default=-_NEVER))
        # The oldest bucket open at any point of the batch: an open one, or one a record
        # of the batch opens (the first one, or one older than those open).
        oldest = min(min(own_ts, default=_NEVER), min(other_ts, default=_NEVER))
        oldest = max(oldest - oldest % bucket_ms, self.closed_through + bucket_ms)
        if self.open:
            oldest = min(oldest, *self.open)
        if max(final, self.watermark) < oldest + bucket_ms + lateness:
            # Nothing closes in this batch (the usual case): count it all at once.
            self.watermarks = [float(max(own_max, self.watermarks[0])), float(other_max)]
            self.watermark = float(max(final, self.watermark))
            self._add(records)
            return
        ts = np.fromiter((r[R_TS] for r in records), np.float64, len(records))
        is_prediction = np.fromiter((r[R_KIND] == PREDICTION for r in records), bool, len(records))
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
            # A record that opens a bucket older than every open one lowers the threshold
            # for the records after it.
            k = self._opens_oldest(records, i, j)
            if k is not None:
                self._add(records[i : k + 1])
                i = k + 1
                continue
            if j > i:
                self._add(records[i:j])
                i = j
            if j < n:
                self._close(records[j])

    def _opens_oldest(self, records: list[Record], start: int, stop: int) -> int | None:
        """The first record from ``start`` to ``stop`` whose bucket is older than every
        open one (or the first record, when none is open)."""
        if start >= stop:
            return None
        if not self.open:
            return start
        oldest = min(self.open)
        starts = self._starts(records[start:stop])
        return next((start + k for k, s in enumerate(starts) if s < oldest), None)

    @property
    def sample_shift(self) -> int:
        return self.sample_mask.bit_length()

    @sample_shift.setter
    def sample_shift(self, shift: int) -> None:
        self.sample_mask = (1 << shift) - 1

    def sampled(self, request_id: str) -> bool:
        """Whether this request is counted (the same answer for its prediction and its
        outcome, in replay and in every worker)."""
        return not self.sample_mask or not crc32(request_id.encode()) & self.sample_mask

    def _close(self, trigger: Record) -> None:
        """Close the oldest open bucket, evaluate the window, and set the sampling for the
        buckets to come from the volume of the one closed: shares and diversities are as
        good on a few thousand events as on all of them, and the cost per event falls as
        volume rises."""
        oldest = min(self.open)
        closed = self.open.pop(oldest)
        self.history.append(closed.summary(self.settings, self.registry.tags))
        recent = self.settings.feedback_windows
        if len(self.history) > recent:
            self.history[-recent - 1].forget_items()
        self.closed_through = oldest
        self.decisions += self._evaluate(trigger[R_TS], trigger[R_SEQ], trigger[R_EVENT_ID])
        volume = closed.volume
        shift = 0
        while volume >> (shift + 1) >= self.settings.feedback_sample_target:
            shift += 1
        self.sample_shift = min(shift, 16)

    def _add(self, run: list[Record]) -> None:
        """Count records in the buckets of their event times. A record that opens a
        bucket beyond ``feedback_windows`` open ones closes the oldest (it is that
        close's trigger, wherever the batch ends)."""
        windows = self.settings.feedback_windows
        while run:
            starts = self._starts(run)
            if len(self.open) + len(set(starts).difference(self.open)) <= windows:
                self._count(run, starts)
                return
            opened = set(self.open)
            k = 0
            for k, start in enumerate(starts):  # noqa: B007 (k is the record that opens one too many)
                if start not in opened:
                    opened.add(start)
                    if len(opened) > windows:
                        break
            self._count(run[: k + 1], starts[: k + 1])
            self._close(run[k])
            run = run[k + 1 :]

    def _starts(self, run: list[Record]) -> list[int]:
        """The bucket of each record: its event time's, or the oldest open one for a
        record too late for a closed bucket."""
        bucket_ms, floor = self.bucket_ms, self.closed_through + self.bucket_ms
        starts = [r[R_TS] - r[R_TS] % bucket_ms for r in run]
        if min(starts) < floor:
            starts = [max(start, floor) for start in starts]
        return starts

    def _count(self, run: list[Record], starts: list[int]) -> None:
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
        labels = [r for r in run if r[R_KIND] == LABEL]
        if labels:
            self._cover(labels)

    def _cover(self, labels: list[Record]) -> None:
        """Count labels against the bucket of their prediction (open, or closed and still
        in the history), so label coverage is a rate of that bucket's predictions."""
        bucket_ms = self.bucket_ms
        closed: dict[int, Bucket] | None = None
        for r in labels:
            start = r[R_PREDICTION_TS] - r[R_PREDICTION_TS] % bucket_ms
            raw = self.open.get(start)
            if raw is not None:
                raw.label(r[R_TAG])
                continue
            if closed is None:
                closed = {b.start_ts: b for b in self.history}
            bucket = closed.get(start)
            acted, explore, _ = self.registry.tags[r[R_TAG]]
            if bucket is None or explore:
                self.unmatched_labels += bucket is None
                continue
            side = 0 if acted else 1
            if bucket.coverage[2 + side] < bucket.coverage[side]:
                bucket.coverage[2 + side] += 1

    def take_decisions(self) -> list[Decision]:
        out, self.decisions = self.decisions, []
        return out

    # -- evaluation at each bucket close -----------------------------------------------

    def _evaluate(self, ts: int, seq: int, event_id: str) -> list[Decision]:
        """Run every test on the history; report each loop (a group of findings) once,
        when its evidence passes the threshold of the model's false-alarm budget."""
        s = self.settings
        history = list(self.history)
        lengths = scales(len(history))
        if not lengths:
            return []
        dependence = self._label_dependence(history)
        confirmation = self._self_confirmation(history, lengths)
        findings, tests = self._allocation(history, lengths, dependence)
        more, exposure_tests = self._exposure(history, confirmation)
        findings += more
        z_star = threshold(s.feedback_alpha, tests + exposure_tests)
        passed = [f for f in findings if f.score >= z_star]
        ready: dict[str, list[Finding]] = {}
        for f in passed:
            if _group(f.key) not in self.decided:
                ready.setdefault(_group(f.key), []).append(f)
        decisions = []
        for group, found in sorted(ready.items()):
            self.decided.add(group)
            # The broadest finding leads (all traffic), then the strongest.
            lead = min(found, key=lambda f: (_breadth(f.key), -f.score, f.key))
            decisions.append(
                self._decision(
                    lead,
                    z_star,
                    dependence,
                    confirmation,
                    history,
                    (ts, seq, event_id),
                    sorted(_scope_name(f.key) for f in found),
                )
            )
        return decisions

    def _allocation(
        self, history: list[Bucket], lengths: list[int], dependence: dict[str, Any]
    ) -> tuple[list[Finding], int]:
        """Per segment key: has its share of the model's actions risen or fallen (against
        its share of the requests, when the model declines some), and is it above (below)
        the share of outcomes the model cannot influence over the same window? Returns the
        findings and the number of (series, scale, direction) tests run."""
        s = self.settings
        dims: dict[str, list[str]] = {}
        for k in sorted(set().union(*(b.acted for b in history))):
            dims.setdefault(k.split(PAIR, 1)[0], []).append(k)
        out: list[Finding] = []
        tests = 0
        for dim, keys in dims.items():
            acted_total = _totals(history, "acted", dim)
            served_total = _totals(history, "served", dim)
            reference_total = _totals(history, "reference", dim)
            demand = bool((served_total > acted_total).any())
            has_reference = reference_total.sum() >= s.feedback_min_reference
            if not has_reference and not dependence["found"]:
                continue  # nothing in the data could back a finding
            tests += 2 * len(keys) * len(lengths)  # each key, both directions
            for k in keys:
                acted = _series(history, "acted", k)
                if demand:
                    served = _series(history, "served", k)
                    trend = contrast_rise(
                        acted,
                        acted_total,
                        served,
                        served_total,
                        lengths,
                        s.feedback_min_bucket_events,
                    )
                else:
                    trend = proportion_rise(
                        acted, acted_total, lengths, s.feedback_min_bucket_events
                    )
                phi = dispersion(acted, acted_total)
                reference = _series(history, "reference", k)
                best: Finding | None = None
                for length, scan in zip(lengths, trend, strict=True):
                    if scan is None:
                        continue
                    # A runaway shows on the segment that gains and on the one starved.
                    direction = 1.0 if scan.z >= 0 else -1.0
                    evidence = None
                    score = direction * scan.z
                    a, n = float(acted[-length:].sum()), float(acted_total[-length:].sum())
                    if has_reference:
                        r, m = (
                            float(reference[-length:].sum()),
                            float(reference_total[-length:].sum()),
                        )
                        if m < s.feedback_min_reference:
                            continue
                        gap = direction * proportion_gap(a, n, r, m, phi)
                        score = min(score, gap)
                        evidence = {
                            "test": "allocation_above_reference"
                            if direction > 0
                            else "allocation_below_reference",
                            "z": round(gap, 3),
                            "allocation_share": round(a / n, 4),
                            "reference_share": round(r / m, 4),
                            "reference_events": int(m),
                        }
                    if best is None or score > best.score:
                        best = Finding(
                            k,
                            "allocation_share_increase"
                            if direction > 0
                            else "allocation_share_decrease",
                            score,
                            scan,
                            evidence,
                            "share relative to requests (log odds ratio)"
                            if demand
                            else "share of actions",
                            a / max(n, 1.0),
                        )
                if best is not None:
                    out.append(best)
        return out, tests

    def _exposure(
        self, history: list[Bucket], confirmation: dict[str, Any]
    ) -> tuple[list[Finding], int]:
        """Per exposure scope (all traffic, cohorts): has what the model shows become more
        concentrated, beyond any concentration of clicks on exploration traffic (what
        users want, measured where the model did not choose), with its own clicks more
        concentrated than the exploration clicks? Returns the findings and the number of
        (series, scale) tests run."""
        s = self.settings
        scopes = sorted(set().union(*(b.concentration for b in history)))
        if not scopes:
            return [], 0
        click = self._click_reference(history)
        has_reference = click["available"]
        wanted_since: dict[int, Scan | None] = {}
        """Exploration click concentration by the start of the after window (the scopes
        share their windows)."""
        out: list[Finding] = []
        tests = 0
        for scope in scopes:
            rows = [
                (b.start_ts, b.concentration[scope])
                for b in history
                if scope in b.concentration
                and b.concentration[scope][2] >= s.feedback_min_bucket_events
            ]
            lengths = scales(len(rows))
            if not lengths or (not has_reference and not confirmation["found"]):
                continue
            tests += len(lengths)
            values = np.array([c[0] for _, c in rows], np.float64)
            variances = np.array([c[1] for _, c in rows], np.float64)
            z_backing = threshold(s.feedback_fdr, len(lengths))
            best: Finding | None = None
            for length, scan in zip(
                lengths, log_level_rise(values, variances, lengths), strict=True
            ):
                if scan is None:
                    continue
                evidence = None
                score = scan.z
                if has_reference:
                    since = rows[-length][0]
                    if since not in wanted_since:
                        wanted_since[since] = self._wanted(history, since)
                    wanted = wanted_since[since]
                    if wanted is None:
                        continue
                    beyond = difference(scan, wanted)
                    if beyond < z_backing:
                        continue
                    score = min(score, click["z"])
                    evidence = {
                        **click,
                        "beyond_exploration_z": round(beyond, 3),
                        "exploration_concentration_before": round(wanted.before, 6),
                        "exploration_concentration_now": round(wanted.now, 6),
                    }
                if best is None or score > best.score:
                    best = Finding(
                        f"exposure:{scope}",
                        "exposure_concentration_increase",
                        score,
                        scan,
                        evidence,
                        "concentration index (Simpson)",
                        1.0,
                    )
            if best is not None:
                out.append(best)
        return out, tests

    def _wanted(self, history: list[Bucket], since: int) -> Scan | None:
        """How the concentration of clicks on exploration traffic (what users want, where
        the model did not choose) changed from before ``since`` to after it, on pooled
        counts."""
        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        for b in history:
            (after if b.start_ts >= since else before).update(b.explore_clicks)
        items = list(before.keys() | after.keys())
        return pooled_log_split(
            np.array([before.get(i, 0) for i in items], np.float64),
            np.array([after.get(i, 0) for i in items], np.float64),
        )

    def _click_reference(self, history: list[Bucket]) -> dict[str, Any]:
        """Over the last ``feedback_windows`` buckets: do the items that take half of the
        model's exposure take more of its own clicks than of the clicks on exploration
        traffic?"""
        s = self.settings
        exposure: Counter[str] = Counter()
        clicks: Counter[str] = Counter()
        explore_clicks: Counter[str] = Counter()
        for b in history[-s.feedback_windows :]:
            exposure.update(b.exposure)
            clicks.update(b.clicks)
            explore_clicks.update(b.explore_clicks)
        n_own, n_explore = sum(clicks.values()), sum(explore_clicks.values())
        available = n_own >= s.feedback_min_reference and n_explore >= s.feedback_min_reference
        if not available:
            return {
                "test": "clicks_more_concentrated_than_exploration",
                "available": False,
                "z": 0.0,
            }
        half = sum(exposure.values()) / 2.0
        top: list[str] = []
        running = 0
        for item, n in exposure.most_common():
            if running >= half:
                break
            top.append(item)
            running += n
        own = sum(clicks.get(i, 0) for i in top)
        wanted = sum(explore_clicks.get(i, 0) for i in top)
        return {
            "test": "clicks_more_concentrated_than_exploration",
            "available": True,
            "z": round(proportion_gap(own, n_own, wanted, n_explore), 3),
            "top_items": len(top),
            "own_click_share": round(own / n_own, 4),
            "exploration_click_share": round(wanted / n_explore, 4),
            "reference_events": n_explore,
            "click_entropy": round(entropy(clicks.values()), 4),
            "exploration_click_entropy": round(entropy(explore_clicks.values()), 4),
            "gini_now": round(gini(history[-1].exposure.values()), 4),
        }

    def _label_dependence(self, history: list[Bucket]) -> dict[str, Any]:
        """Selective labels: are outcomes observed mostly where the model acted? (Each
        bucket's labels are of its own predictions: the coverages are rates.)"""
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

    def _self_confirmation(self, history: list[Bucket], lengths: list[int]) -> dict[str, Any]:
        """Agreement between predictions and later labels rising (at any scale)."""
        s = self.settings
        judged = np.array([b.agreement[1] for b in history], np.float64)
        if judged.sum() < 2 * s.feedback_min_bucket_events:
            return {"found": False, "available": False}
        agreed = np.array([b.agreement[0] for b in history], np.float64)
        scans = [
            x for x in proportion_rise(agreed, judged, lengths, s.feedback_min_bucket_events) if x
        ]
        if not scans:
            return {"found": False, "available": False}
        best = max(scans, key=lambda x: x.z)
        return {
            "test": "agreement_increase",
            "available": True,
            "found": best.z >= threshold(s.feedback_fdr, len(lengths)),
            "z": round(best.z, 3),
            "agreement_before": round(best.before, 4),
            "agreement_now": round(best.now, 4),
            "after_buckets": best.after,
        }

    def _decision(
        self,
        finding: Finding,
        z_star: float,
        dependence: dict[str, Any],
        confirmation: dict[str, Any],
        history: list[Bucket],
        trigger: tuple[int, int, str],
        involved: list[str],
    ) -> Decision:
        ts, seq, event_id = trigger
        key, scan = finding.key, finding.scan
        has_reference = finding.reference is not None
        exposure = key.startswith("exposure:")
        scope = key.split(":", 1)[1] if exposure else key
        segment: dict[str, str] | None = None
        if scope != OVERALL:
            name, value = scope.split(PAIR, 1)
            segment = {name: value}
        where = "all traffic" if segment is None else scope.replace(PAIR, "=")
        if exposure:
            finding_text = f"what the model shows ({where}) keeps concentrating"
        elif finding.test == "allocation_share_decrease":
            finding_text = f"the share of the model's actions going to {where} keeps falling"
        else:
            finding_text = f"the share of the model's actions going to {where} keeps growing"
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
        after = history[-scan.after :]
        onset = after[0].start_ts
        trend = {
            "test": finding.test,
            "z": round(scan.z, 3),
            "before": round(scan.before, 6),
            "now": round(scan.now, 6),
            "change": round(scan.change, 6),
            "after_buckets": scan.after,
            "measure": finding.measure,
        }
        signals: list[dict[str, Any]] = [trend]
        if finding.reference is not None:
            signals.append({k: v for k, v in finding.reference.items() if k != "available"})
        if dependence.get("available"):
            signals.append({k: v for k, v in dependence.items() if k != "available"})
        if confirmation.get("available"):
            signals.append({k: v for k, v in confirmation.items() if k != "available"})
        return build_decision(
            id_parts=(self.model_id, "alert", "feedback_loop", _group(key)),
            type_="alert",
            kind="feedback_loop",
            model_id=self.model_id,
            model_version="",
            severity="critical" if has_reference else "warning",
            detector="feedback_loop",
            config={
                "sample_rate": 1.0 / (1 << self.sample_shift),
                "bucket_ms": self.bucket_ms,
                "history_buckets": self.settings.feedback_history_buckets,
                "alpha": self.settings.feedback_alpha,
                "fdr": self.settings.feedback_fdr,
            },
            statistic=finding.test,
            value=round(finding.score, 6),
            threshold=round(z_star, 6),
            p_value=float(norm.sf(finding.score)),
            first_ts=onset,
            count=sum(b.events for b in after),
            reference=reference_text,
            trigger=Trigger(ts, seq, event_id),
            details={
                "onset_ts": onset,
                "scale_hours": round(scan.after * self.bucket_ms / 3_600_000, 3),
                "reference_available": has_reference,
                "history_first_ts": history[0].start_ts,
                "buckets": len(history),
                "involved": involved,
                "signals": signals,
            },
            impact=Impact(
                round(finding.share, 6),
                round(scan.change, 6),
                "log_ratio" if exposure else "log_odds_change",
            ),
            recommendation=f"Possible feedback loop: {finding_text} {basis}. {RECOMMENDATION}",
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
            "decided": sorted(self.decided),
            "unmatched_labels": self.unmatched_labels,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.open = {b["start_ts"]: RawBucket.from_dict(b) for b in state["open"]}
        self.closed_through = state["closed_through"]
        self.watermarks = list(state["watermarks"])
        self.watermark = state["watermark"]
        self.sample_shift = state["sample_shift"]
        self.registry = TagRegistry.from_state(state["tags"], self.settings.feedback_max_tags)
        self.history = deque(
            (Bucket.from_dict(b) for b in state["history"]),
            maxlen=self.settings.feedback_history_buckets,
        )
        for b in list(self.history)[: -self.settings.feedback_windows]:
            b.forget_items()
        self.decided = set(state["decided"])
        self.unmatched_labels = state.get("unmatched_labels", 0)


def _group(key: str) -> str:
    """One loop, one decision: allocation findings of the values of one segment dimension
    are the same loop, and so are exposure findings overall and per cohort."""
    if key.startswith("exposure:"):
        return "exposure"
    return "allocation:" + key.split(PAIR, 1)[0]


def _totals(history: list[Bucket], field: str, dim: str) -> np.ndarray:
    """Per bucket, the counts of one field over every value of a segment dimension."""
    return np.array(
        [
            sum(n for k, n in getattr(b, field).items() if k.split(PAIR, 1)[0] == dim)
            for b in history
        ],
        np.float64,
    )


def _series(history: list[Bucket], field: str, key: str) -> np.ndarray:
    """Per bucket, the count of one field for one segment key."""
    return np.array([getattr(b, field).get(key, 0) for b in history], np.float64)


def _breadth(key: str) -> int:
    """0 for findings about all traffic, 1 for a single segment."""
    return 0 if key == f"exposure:{OVERALL}" else 1


def _scope_name(key: str) -> str:
    """Readable scope of a finding: ``all`` or ``district=d2``."""
    scope = key.split(":", 1)[1] if key.startswith("exposure:") else key
    return "all" if scope == OVERALL else scope.replace(PAIR, "=")


def _agrees(prediction: object, label: object) -> int | None:
    """1 when the label confirms the prediction, 0 when not, None when not comparable."""
    if isinstance(prediction, tuple):
        return int(label in prediction)
    if isinstance(prediction, (str, bool)) or type(prediction) is int:
        return int(str(prediction) == str(label))
    return None
