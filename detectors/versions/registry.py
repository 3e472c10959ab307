"""Which versions of a model are live, in which role, and how they compare.

Per model: every version's role (from its predictions), when it first and last served,
and its recent share of traffic. Three comparisons run on top, all anytime-valid (they may
be looked at after every event):

* **Canary vs stable** on the same period of traffic
  (`detectors.versions.comparison.MeanComparison`):
  error rate and Brier score once outcomes arrive (a regression emits one ``rollback``,
  ``from_version`` = canary, ``to_version`` = stable), and, as alerts, the label-free
  estimated error from the canary's own scores, its positive-prediction rate, its rate of
  missing inputs and the delay of its outcomes.
* **Champion vs challenger or shadow** on the same requests
  (`detectors.versions.comparison.PairedComparison`): a better challenger is an
  ``alert``/``challenger_better``.
* **After a promotion** (a newer champion becomes the stable one), the new champion against
  the old one: concurrently when the old one still serves or shadows, otherwise against the
  old one's last labelled events. A regression emits ``rollback``/``promotion_regression``.

Per version, the realised error rate is also checked against the label-free estimate from
its scores (``alert``/``performance_estimate_gap``): a gap means the scores are not
calibrated and the label-free estimates of that version cannot be trusted.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from driftline.detectors.decision import Decision, Impact, Trigger, build_decision
from driftline.detectors.drift.concept import LabelBatch
from driftline.detectors.intake.labelsums import LabelGroup, LabelSums
from driftline.detectors.intake.slices import SliceSummary, traffic_weight
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.versions.comparison import MeanComparison, MeanVerdict, PairedComparison
from driftline.detectors.versions.maturity import (
    COHORT_MS,
    Cohort,
    Cohorts,
    LabelMaturity,
    PairCohort,
    PairCohorts,
)

LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class Metric:
    """One quantity a canary is compared on."""

    name: str
    labelled: bool
    """Needs outcomes (compared on joined events) or not (compared on predictions)."""
    action: str
    """``rollback`` or ``alert`` when the canary is significantly worse."""
    worse_only: bool
    """Only a higher canary value counts (losses); otherwise either direction does."""
    prior_var: float
    unit: str
    describe: str
    """What a regression on it means, for the recommendation."""


CANARY_METRICS = (
    Metric("error_rate", True, "rollback", True, 0.25, "error_rate_increase", "makes more errors"),
    Metric(
        "brier_score",
        True,
        "rollback",
        True,
        0.25,
        "brier_score_increase",
        "has worse calibrated scores (higher Brier score)",
    ),
    Metric(
        "estimated_error",
        False,
        "alert",
        True,
        0.25,
        "estimated_error_increase",
        "is less confident: its own scores estimate more errors (labels still pending)",
    ),
    Metric(
        "positive_rate",
        False,
        "alert",
        False,
        0.25,
        "positive_rate_difference",
        "predicts the positive class at a different rate",
    ),
    Metric(
        "missing_rate",
        False,
        "alert",
        True,
        0.25,
        "missing_rate_increase",
        "receives more missing inputs (data quality)",
    ),
    Metric(
        "outcome_latency",
        True,
        "alert",
        True,
        1.0,
        "log10_seconds_increase",
        "gets its outcomes later",
    ),
)
"""Everything a canary is compared on, in the order verdicts are reported."""

ROLLBACK_METRICS = sum(m.action == "rollback" for m in CANARY_METRICS)


@dataclass(slots=True)
class Rows:
    """Events of one model in arrival order, one column per quantity (NaN = not known)."""

    versions: np.ndarray
    seqs: list[int]
    ts: list[int]
    event_ids: list[str]
    values: Mapping[str, np.ndarray]

    def take(self, index: np.ndarray) -> Rows:
        """The rows at ``index``, in that order."""
        return Rows(
            versions=self.versions[index],
            seqs=[self.seqs[i] for i in index.tolist()],
            ts=[self.ts[i] for i in index.tolist()],
            event_ids=[self.event_ids[i] for i in index.tolist()],
            values={k: v[index] for k, v in self.values.items()},
        )

    def part(self, start: int, stop: int) -> Rows:
        """The rows from ``start`` to ``stop``."""
        if start == 0 and stop == len(self.seqs):
            return self
        return Rows(
            versions=self.versions[start:stop],
            seqs=self.seqs[start:stop],
            ts=self.ts[start:stop],
            event_ids=self.event_ids[start:stop],
            values={k: v[start:stop] for k, v in self.values.items()},
        )

    @staticmethod
    def join(parts: list[Rows]) -> Rows:
        """The rows of ``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        return Rows(
            versions=np.concatenate([p.versions for p in parts]),
            seqs=[x for p in parts for x in p.seqs],
            ts=[x for p in parts for x in p.ts],
            event_ids=[x for p in parts for x in p.event_ids],
            values={k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values},
        )

    def __len__(self) -> int:
        return len(self.seqs)

    def state(self) -> list[Any]:
        return [
            self.versions.tolist(),
            self.seqs,
            self.ts,
            self.event_ids,
            {k: v.tolist() for k, v in self.values.items()},
        ]

    @classmethod
    def from_state(cls, state: list[Any]) -> Rows:
        versions, seqs, ts, event_ids, values = state
        return cls(
            versions=np.array(versions, dtype=object),
            seqs=list(seqs),
            ts=list(ts),
            event_ids=list(event_ids),
            values={k: np.array(v, dtype=np.float64) for k, v in values.items()},
        )


def _feed_rows(
    rows: Rows,
    mine: np.ndarray,
    canary: str,
    labelled: bool,
    metric: Metric,
    comparison: MeanComparison,
) -> tuple[MeanVerdict, int] | None:
    """A canary comparison fed the rows of the canary and its stable version (``mine``)
    that have the metric: its verdict and the row it fell on, or None."""
    values = rows.values.get(metric.name)
    if metric.labelled != labelled or values is None:
        return None
    use = np.flatnonzero(mine & np.isfinite(values))
    if not len(use):
        return None
    verdict = comparison.update(rows.versions[use] == canary, values[use])
    return None if verdict is None else (verdict, int(use[verdict.index]))


def _group_extra(g: LabelGroup) -> list[float]:
    """What a cohort of summed labels keeps beside its errors (`Cohort.extra`): labels with
    a Brier score, the scores' sum and sum of squares, and the log10 delays' sum and sum
    of squares (read back by `_summed_metrics`); none for a group of the build before,
    whose delays' sums are not known."""
    if math.isnan(g.latency):
        return []
    return [g.scored, g.brier, g.brier_sq, g.latency, g.latency_sq]


def _summed_metrics(cohort: Cohort, errors: bool) -> dict[str, tuple[int, float, float]]:
    """Per labelled canary metric, a cohort of summed labels' count, sum and sum of
    squares (the error rate only where ``errors``), from its errors and `_group_extra`."""
    found = {}
    if cohort.extra:  # none where not known for all of its labels (`maturity.added`)
        scored, brier, brier_sq, latency, latency_sq = cohort.extra
        found["brier_score"] = (round(scored), brier, brier_sq)
        found["outcome_latency"] = (cohort.n, latency, latency_sq)
    if errors:
        found["error_rate"] = (cohort.n, cohort.total, cohort.total_sq)
    return found


def _feed_sums(
    sums: dict[str, tuple[int, float, float]],
    candidate: bool,
    metric: Metric,
    comparison: MeanComparison,
) -> tuple[MeanVerdict, int] | None:
    """A canary comparison fed one side's summed labels at once (see
    `MeanComparison.update_summary`): its verdict, or None."""
    got = sums.get(metric.name) if metric.labelled else None
    if got is None or got[0] == 0:
        return None
    verdict = comparison.update_summary(*got, candidate=candidate)
    return None if verdict is None else (verdict, 0)


def _trigger(rows: Rows, row: int) -> Trigger:
    """The labelled row at ``row`` as a decision's trigger."""
    return Trigger(rows.ts[row], rows.seqs[row], rows.event_ids[row])


class HeldLabels:
    """Labelled rows held back until their predictions' cohort has matured.

    The version comparisons (canary vs stable, a promoted version vs the one it replaced,
    champion vs challenger on the same requests) read labelled rows as they arrive. When
    labels arrive in an order that depends on the outcome, a young version's labels are
    the early outcome's alone and it looks better or worse than it is (an equal canary
    was rolled back on every seed of such a stream). So its rows wait here until the
    minute their prediction was made lies the maturity horizon behind the newest label
    (`detectors.versions.maturity`), and are released at the model's steps
    (`ModelVersions.step`), cohort by cohort. Where the horizon is 0 (delays that do not
    depend on the outcome) and nothing is held, rows are not held at all
    (`ModelVersions.matured`), so the comparisons keep their speed there; an unknown
    horizon (too few labels of each outcome yet) holds everything. Both labelled rows of
    a pair (one outcome, two versions) are held in one cohort (the later of their
    predictions') and released together. At most ``limit`` rows are held: beyond it the
    oldest cohorts are released early (counted in ``forced``), which bounds the state of
    a high-volume model with slow labels.

    Rows are kept as they were added, each batch sorted by cohort, with a heap of the
    oldest cohort left in each, so a step costs what it releases, not what is held.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: dict[int, tuple[Rows, np.ndarray, int]] = {}
        """Held rows as added: (rows sorted by cohort, their cohorts, rows released)."""
        self.order: list[tuple[int, int]] = []
        """Heap of (oldest cohort left, chunk)."""
        self.added = 0
        """Chunks added so far (their keys)."""
        self.count = 0
        self.watermark = -(2**62)
        """Largest label event time seen."""
        self.forced = 0

    @property
    def held(self) -> Rows | None:
        """Every held row (oldest cohort first), or None."""
        if not self.count:
            return None
        parts = [
            (rows.part(done, len(rows)), cohorts[done:])
            for rows, cohorts, done in self.chunks.values()
        ]
        return _by_cohort(parts)

    def add(self, rows: Rows) -> None:
        """Hold labelled rows until their cohort matures (`release`)."""
        if not len(rows):
            return
        self.watermark = max(self.watermark, int(max(rows.ts)))
        t0 = rows.values["prediction_ts"]
        start = (t0 - t0 % COHORT_MS).astype(np.int64)
        _, pair, counts = np.unique(np.asarray(rows.seqs), return_inverse=True, return_counts=True)
        if (counts > 1).any():  # a pair's rows go in the later of their cohorts
            latest = np.full(len(counts), np.iinfo(np.int64).min)
            np.maximum.at(latest, pair, start)
            start = latest[pair]
        if (np.diff(start) < 0).any():
            order = np.argsort(start, kind="stable")
            rows, start = rows.take(order), start[order]
        key = self.added
        self.added += 1
        self.chunks[key] = (rows, start, 0)
        heapq.heappush(self.order, (int(start[0]), key))
        self.count += len(rows)

    def release(self, horizon_ms: float | None) -> Rows | None:
        """The held rows whose cohort matured, cohort by cohort (oldest predictions
        first, in arrival order within one), and the oldest beyond ``limit``."""
        parts: list[tuple[Rows, np.ndarray]] = []
        order, bound = self.order, matured_through(horizon_ms, self.watermark)
        while order and (order[0][0] <= bound or self.count > self.limit):
            oldest, key = heapq.heappop(order)
            rows, cohorts, done = self.chunks[key]
            upto = oldest if oldest > bound else bound  # beyond the limit: one cohort
            end = int(np.searchsorted(cohorts, upto, side="right"))
            parts.append((rows.part(done, end), cohorts[done:end]))
            self.count -= end - done
            if oldest > bound:
                self.forced += end - done
            if end < len(rows):
                self.chunks[key] = (rows, cohorts, end)
                heapq.heappush(order, (int(cohorts[end]), key))
            else:
                del self.chunks[key]
        return _by_cohort(parts) if parts else None

    def state(self) -> dict[str, Any]:
        held = self.held
        return {
            "watermark": self.watermark,
            "forced": self.forced,
            "held": None if held is None else held.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.chunks, self.order, self.count = {}, [], 0
        if state["held"] is not None:
            self.add(Rows.from_state(state["held"]))
        self.watermark = state["watermark"]
        self.forced = state["forced"]


def _by_cohort(parts: list[tuple[Rows, np.ndarray]]) -> Rows:
    """Rows of several chunks in the order of their cohorts, then of their positions."""
    rows = Rows.join([p for p, _ in parts])
    if len(parts) == 1:
        return rows
    cohorts = np.concatenate([c for _, c in parts])
    return rows.take(np.lexsort((np.asarray(rows.seqs), cohorts)))


class HeldPairs:
    """Joined (prediction, label) pairs of one model's versions held until their cohort
    has matured, for the versions' concept monitors (error-rate drift and the online vs
    offline comparison), by the same rule as `HeldLabels`: a model whose first labels
    are its early outcome's alone would otherwise learn its warm-up error rate from them
    and take the late outcome's arrival for concept drift. Each entry is ``[prediction
    time, prediction, label, position, event time, event id]``; per version they wait in
    a heap by (cohort, position), so a step costs what it releases."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, list[tuple[int, int, list[Any]]]] = {}
        """Per version, a heap of (cohort, position, entry)."""
        self.count = 0
        self.forced = 0

    def add(self, version: str, batch: LabelBatch) -> None:
        heap = self.held.setdefault(version, [])
        for p, y, q, t, i, t0 in zip(*batch, strict=True):
            heapq.heappush(heap, (t0 - t0 % COHORT_MS, q, [t0, p, y, q, t, i]))
        self.count += len(batch.seqs)

    def release(self, horizon_ms: float | None, watermark: int) -> dict[str, LabelBatch]:
        """Per version, the labels whose cohort matured (cohort by cohort, oldest first),
        and the oldest beyond ``limit``."""
        go: dict[str, list[list[Any]]] = {}
        bound = matured_through(horizon_ms, watermark)
        if bound > -_END:
            for version, heap in self.held.items():
                while heap and heap[0][0] <= bound:
                    go.setdefault(version, []).append(heapq.heappop(heap)[2])
                    self.count -= 1
        while self.count > self.limit:
            version = min(self.held, key=lambda v: self.held[v][0][:2] if self.held[v] else (_END,))
            go.setdefault(version, []).append(heapq.heappop(self.held[version])[2])
            self.count -= 1
            self.forced += 1
        self.held = {version: heap for version, heap in self.held.items() if heap}
        return {
            version: LabelBatch(
                [e[1] for e in got],
                [e[2] for e in got],
                [e[3] for e in got],
                [e[4] for e in got],
                [e[5] for e in got],
                [e[0] for e in got],
            )
            for version, got in go.items()
        }

    def drop(self, version: str) -> None:
        self.count -= len(self.held.pop(version, ()))

    def state(self) -> dict[str, Any]:
        return {
            "forced": self.forced,
            "held": {version: [e for _, _, e in heap] for version, heap in self.held.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.forced = state["forced"]
        self.held, self.count = {}, 0
        for version, entries in state["held"].items():
            heap = [(e[0] - e[0] % COHORT_MS, e[3], list(e)) for e in entries]
            heapq.heapify(heap)
            self.held[version] = heap
            self.count += len(heap)


_END = 2**63
"""Sorts after every cohort."""


def matured_through(horizon_ms: float | None, watermark: int) -> float:
    """The latest minute whose predictions' labels may be read now: none while the
    horizon is unknown, every one when it is 0 (delays that do not depend on the
    outcome), else the minutes that lie the horizon behind ``watermark``.

    >>> matured_through(1_000.0, 62_000), matured_through(0.0, 0) == _END
    (1000.0, True)
    """
    if horizon_ms is None:
        return -_END
    if horizon_ms == 0.0:
        return _END
    return watermark - COHORT_MS - horizon_ms


@dataclass(slots=True)
class VersionInfo:
    """What is known about one version of a model."""

    role: str
    first_ts: int
    last_ts: int
    events: int = 0
    """Predictions served so far."""
    traffic: float = -math.inf
    """Log of the event-time-decayed prediction count (see `ModelVersions.observe`)."""
    history: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """Recent labelled errors in two generations: [previous n, previous errors, current n,
    current errors]."""


class ModelVersions:
    """Version registry and version comparisons of one model."""

    def __init__(self, model_id: str, settings: DetectorSettings) -> None:
        self.model_id = model_id
        self.settings = settings
        self.versions: dict[str, VersionInfo] = {}
        self.anchor: int | None = None
        """Event time the decayed traffic counts are relative to."""
        self.champion: str | None = None
        """The stable champion as of the last batch (to notice promotions)."""
        self.canaries: dict[str, tuple[str, dict[str, MeanComparison]]] = {}
        """Canary version -> (stable version it is compared with, comparison per metric)."""
        self.promotions: dict[str, tuple[str, MeanComparison]] = {}
        """Newly promoted champion -> (champion it replaced, error-rate comparison)."""
        self.challengers: dict[str, tuple[str, PairedComparison]] = {}
        """Challenger or shadow version -> (champion it is paired with, comparison)."""
        self.gaps: dict[str, MeanComparison] = {}
        """Version -> realised minus estimated error on its labelled events."""
        self.maturity = self._maturity()
        """The model's label delays (when a cohort of predictions has its labels)."""
        self.cohorts = Cohorts()
        self.held = HeldLabels(settings.label_maturity_max_held)
        self.held_pairs = HeldPairs(settings.label_maturity_max_held)
        self.summed = Cohorts(parts=True)
        """Labels summed by the input stage (their count and errors), held by version and
        prediction minute until it matured (`observe_label_sums`), in parts for the
        concept monitor."""
        self.summed_pairs = PairCohorts()
        """Their paired discordance counts, held by two versions and minute."""
        self.gap_alerted: dict[str, str] = {}
        """Direction of a reported estimate gap (``more``/``fewer`` errors) -> version."""
        self.decided: set[str] = set()
        """``version:comparison`` keys already decided (one decision each)."""
        self.horizon: float | None = None
        """The label-delay horizon as of the last step (`step`)."""
        self.evidence = self._maturity_evidence(None)
        """How labels are read, as of the last step (the ``label_maturity`` evidence of
        every decision made on labels)."""
        self.served: dict[str, int] = {}
        """Predictions served per version as of the last step (a canary's traffic share)."""
        self.learnt = False
        """Whether labels were taught to the delay model since the last step."""
        self.stepped: list[tuple[int, str | None, dict[str, Any]]] = []
        """(position, stable champion, label maturity) of the steps taken in the current
        batch."""
        self.batch_start: tuple[str | None, dict[str, Any]] = (None, self.evidence)
        """The stable champion and the label maturity when the current batch began."""

    # -- registry ----------------------------------------------------------------------

    def observe(self, version: str, role: str, ts: np.ndarray) -> None:
        """A batch of predictions of one version (all with this role), their event times.

        The traffic count decays with half-life ``version_half_life_ms`` of event time;
        it is kept as a log relative to the model's first event time, so it neither
        overflows nor depends on how events were batched.
        """
        weight = traffic_weight(ts, int(ts[0]), self.settings.version_half_life_ms)
        self._count(version, role, len(ts), int(ts.min()), int(ts.max()), int(ts[0]), weight)

    def observe_slice(self, version: str, summary: SliceSummary, start: int) -> None:
        """A slice of a version's predictions summed by the input stage, as `observe`
        counts its predictions (``start``: the slice's first event time, what its traffic
        weight is relative to)."""
        self._count(
            version,
            summary.role,
            summary.events,
            summary.first_ts,
            summary.last_ts,
            start,
            summary.traffic,
        )

    def _count(
        self, version: str, role: str, events: int, first: int, last: int, at: int, weight: float
    ) -> None:
        """``events`` predictions from event time ``first`` to ``last``, whose decaying
        weight is ``log(sum(exp((ts - at) * ln 2 / half-life)))``."""
        if self.anchor is None:
            self.anchor = first
        info = self.versions.get(version)
        if info is None:
            info = self.versions[version] = VersionInfo(role, first, last)
        info.role = role
        info.first_ts = min(info.first_ts, first)
        info.last_ts = max(info.last_ts, last)
        info.events += events
        shifted = weight + (at - self.anchor) * (LN2 / self.settings.version_half_life_ms)
        info.traffic = float(np.logaddexp(info.traffic, shifted))

    def stable(self) -> str | None:
        """The champion serving the most recent traffic (the rollback target)."""
        champions = [(v.traffic, name) for name, v in self.versions.items() if v.role == "champion"]
        return max(champions)[1] if champions else None

    def live_canaries(self) -> list[str]:
        return [
            name
            for name, v in self.versions.items()
            if v.role == "canary" and f"{name}:canary" not in self.decided
        ]

    def note_promotion(self) -> None:
        """At a step: a newer champion that became stable was promoted; start comparing
        it with the one it replaced (seeded with that one's recent labelled errors)."""
        current = self.stable()
        previous, self.champion = self.champion, current
        if previous is None or current is None or current == previous:
            return
        old = self.versions.get(previous)
        if old is None or self.versions[current].first_ts <= old.first_ts:
            return  # back to an older version: a rollback, not a promotion
        comparison = self._mean_comparison(
            CANARY_METRICS[0], self.settings.rollback_alpha, self.settings.comparison_tau
        )
        prev_n, prev_x, cur_n, cur_x = old.history
        errors = prev_x + cur_x
        comparison.preload_baseline(round(prev_n + cur_n), errors, errors)
        self.promotions[current] = (previous, comparison)

    def prune(self) -> int:
        """Forget the least recently seen versions beyond ``max_versions_per_model`` (never
        the stable champion), with their comparisons; returns how many were dropped."""
        limit = self.settings.max_versions_per_model
        if len(self.versions) <= limit:
            return 0
        keep = {self.champion, self.stable()}
        order = sorted(self.versions, key=lambda name: (self.versions[name].last_ts, name))
        dropped = 0
        for name in order:
            if len(self.versions) <= limit:
                break
            if name in keep:
                continue
            del self.versions[name]
            for table in (self.canaries, self.promotions, self.challengers, self.gaps):
                table.pop(name, None)
            self.cohorts.drop(name)
            self.summed.drop(name)
            self.summed_pairs.drop(name)
            self.decided = {key for key in self.decided if not key.startswith(f"{name}:")}
            dropped += 1
        return dropped

    @property
    def labels_held(self) -> int:
        """Labelled predictions (one per version a label judged) waiting for the minute
        they were made in to mature: rows and summed labels. The concept monitors hold
        the same labels apart (`HeldPairs`); they are not counted twice."""
        return self.held.count + self.summed.values

    def matured(self, rows: Rows) -> Rows | None:
        """Labelled rows taught to the label-delay model; those the version comparisons
        may read at once: all of them where the horizon is 0 and nothing is held, else
        none (they are held until a step releases them, see `HeldLabels`)."""
        values = rows.values
        self.maturity.observe(
            values["outcome_class"],
            values["outcome_latency"],
            values["prediction_ts"],
            np.asarray(rows.ts, dtype=np.float64),
        )
        self.learnt = True
        if self.horizon == 0.0 and not self.held.count:
            self.held.watermark = max(self.held.watermark, int(max(rows.ts)))
            return rows
        self.held.add(rows)
        return None

    def begin_batch(self) -> None:
        """Before a batch: forget the positions of the last batch's steps."""
        self.stepped = []
        self.batch_start = (self.champion, self.evidence)

    def step(self, seq: int) -> Rows | None:
        """The model's periodic step, before the item at position ``seq``: read the
        label-delay horizon, notice a promotion, forget versions beyond the bound, take
        the figures decisions report of these; the held labelled rows that matured.

        Steps fall at positions of the model's merged stream (`DetectorSettings.step_ms`),
        so what is read and released here does not depend on where batches end.
        """
        if self.learnt:
            self.horizon = self.maturity.horizon_ms()
            self.evidence = self._maturity_evidence(self.horizon)
            self.learnt = False
        self.note_promotion()
        self.prune()
        self.served = {name: info.events for name, info in self.versions.items()}
        self.stepped.append((seq, self.champion, self.evidence))
        return self.held.release(self.horizon)

    def champion_at(self, seq: int) -> str | None:
        """The stable champion as of the last step at or before position ``seq`` of the
        current batch."""
        return self._at(seq)[0]

    def evidence_at(self, seq: int) -> dict[str, Any]:
        """The label maturity as of the last step at or before position ``seq`` of the
        current batch."""
        return self._at(seq)[1]

    def _at(self, seq: int) -> tuple[str | None, dict[str, Any]]:
        for at, champion, evidence in reversed(self.stepped):
            if at <= seq:
                return champion, evidence
        return self.batch_start

    def _maturity_evidence(self, horizon: float | None) -> dict[str, Any]:
        return {
            "horizon_s": None if horizon is None else round(horizon / 1000.0, 3),
            "quantile": self.settings.label_maturity_quantile,
            "outcome_dependent_delays": self.maturity.outcome_dependent(),
            "delay_distance": round(self.maturity.delay_distance(), 6),
            "compared": "labels of predictions older than the horizon, by the minute they "
            "were made; the horizon is 0 while the two outcomes' label delays do not differ "
            "(labels in are then a random sample of the predictions)",
        }

    def record_errors(self, rows: Rows) -> None:
        """Keep each version's recent labelled errors (the baseline after a promotion)."""
        errors = rows.values["error_rate"]
        limit = self.settings.promotion_baseline_labels
        for version in set(rows.versions.tolist()):
            info = self.versions.get(version)
            if info is None:
                continue
            mine = errors[(rows.versions == version) & np.isfinite(errors)]
            h = info.history
            while len(mine):
                take = mine[: max(limit - round(h[2]), 0)]
                h[2] += len(take)
                h[3] += float(take.sum())
                mine = mine[len(take) :]
                if h[2] >= limit:
                    h[:] = [h[2], h[3], 0.0, 0.0]

    def _record_counts(self, version: str, n: int, errors: float) -> None:
        """`record_errors` of ``n`` summed labels with ``errors`` among them (a generation
        that fills part-way through takes its share of the errors)."""
        info = self.versions.get(version)
        if info is None:
            return
        limit = self.settings.promotion_baseline_labels
        h = info.history
        while n > 0:
            take = min(n, max(limit - round(h[2]), 0))
            share = errors * take / n
            h[2] += take
            h[3] += share
            n, errors = n - take, errors - share
            if h[2] >= limit:
                h[:] = [h[2], h[3], 0.0, 0.0]

    # -- labels summed by the input stage ----------------------------------------------

    def observe_label_sums(
        self, sums: LabelSums, seq: int
    ) -> tuple[list[tuple[str, Cohort]], list[Decision]]:
        """Labels summed by the input stage (at position ``seq``): their delays taught to
        the label-delay model, their estimate gaps held by cohort (`add_estimates`); per
        version, what may be read at once (the horizon 0 and nothing held, as
        `matured`), the rest held by prediction minute until a step releases it
        (`release_label_sums`); and the paired comparisons' decisions on the pairs read
        at once."""
        self.maturity.observe_counts(sums.delays, sums.first_prediction_ts, sums.ts)
        self.learnt = True
        summed = self.summed
        at_once = self.horizon == 0.0 and not summed.pending and not self.summed_pairs.pending
        decisions = []
        for p in sums.pairs:
            last = [seq, p.last_ts, p.last_event_id]
            if at_once:
                counts = PairCohort(p.n, p.first_only, p.second_only, last)
                decisions += self.read_pair_sums(p.first, p.second, counts)
            else:
                self.summed_pairs.add(
                    p.first, p.second, p.cohort, p.n, p.first_only, p.second_only, last
                )
        now: dict[str, Cohort] = {}
        for g in sums.groups:
            last = [seq, g.last_ts, g.last_event_id]
            known = g.version in self.versions
            if g.scored and known and f"{g.version}:estimate_gap" not in self.decided:
                self.cohorts.add(g.version, g.cohort, g.scored, g.gap_sum, g.gap_sq, last)
            extra = _group_extra(g)
            if at_once:
                summed.watermark = max(summed.watermark, g.last_ts)
                found = now.get(g.version)
                if found is None:
                    now[g.version] = Cohort(g.n, g.errors, g.errors, last, [], extra)
                else:
                    found.add(g.n, g.errors, g.errors, extra)
                    if g.last_ts >= found.last[1]:
                        found.last = last
            else:
                summed.add(g.version, g.cohort, g.n, g.errors, g.errors, last, extra)
        return list(now.items()), decisions

    def release_label_sums(self) -> tuple[list[tuple[str, Cohort]], list[Decision]]:
        """At a step: the summed labels whose prediction minute matured, oldest first,
        and the paired comparisons' decisions on the pairs released."""
        bound = matured_through(self.horizon, self.summed.watermark)
        decisions = []
        for first, second, found in self.summed_pairs.release_through(bound):
            decisions += self.read_pair_sums(first, second, found)
        released = [(version, c) for _, version, c in self.summed.release_through(bound)]
        return released, decisions

    def read_pair_sums(self, first: str, second: str, found: PairCohort) -> list[Decision]:
        """`compare_pairs` on discordance counts summed by the input stage: a pair of the
        stable champion and a challenger or shadow feeds their paired comparison."""
        champion = self.champion
        if champion not in (first, second):
            return []
        candidate = second if champion == first else first
        info = self.versions.get(candidate)
        decided = f"{candidate}:paired:{champion}" in self.decided
        if info is None or info.role not in ("challenger", "shadow") or decided:
            return []
        comparison = self._paired_with(candidate, champion)
        candidate_only, champion_only = (
            (found.second_only, found.first_only)
            if candidate == second
            else (found.first_only, found.second_only)
        )
        verdict = comparison.update_counts(found.n, candidate_only, champion_only)
        if verdict is None:
            return []
        seq, ts, event_id = found.last
        return self._paired_verdict(
            candidate, champion, verdict, Trigger(ts, seq, event_id), comparison
        )

    def read_label_sums(self, version: str, cohort: Cohort, errors: bool) -> list[Decision]:
        """Summed labels of a version that may be read: the live canaries' comparisons,
        and where their ``errors`` are judged here (not a regression's), its error
        history and a promoted champion's comparison with the one it replaced."""
        if version not in self.versions:
            return []
        decisions = self.compare_canary_sums(version, cohort, errors)
        if not errors:
            return decisions
        self._record_counts(version, cohort.n, cohort.total)
        for new, (old, comparison) in list(self.promotions.items()):
            key = f"{new}:promotion"
            if version not in (new, old) or key in self.decided:
                continue
            verdict = comparison.update_summary(
                cohort.n, cohort.total, cohort.total_sq, candidate=version == new
            )
            if verdict is None:
                continue
            seq, ts, event_id = cohort.last
            decisions.append(
                self._promotion_rollback(new, old, verdict, Trigger(ts, seq, event_id), comparison)
            )
        return decisions

    # -- canary vs stable --------------------------------------------------------------

    def _mean_comparison(self, metric: Metric, alpha: float, tau: float) -> MeanComparison:
        return MeanComparison(
            tau=tau,
            alpha=alpha,
            margin=self.settings.rollback_margin,
            min_each=self.settings.comparison_min_labels,
            worse_only=metric.worse_only,
            prior_var=metric.prior_var,
        )

    def _canary_comparisons(self) -> dict[str, MeanComparison]:
        # The rollback metrics share rollback_alpha (Bonferroni), so an equal canary is
        # rolled back with probability at most rollback_alpha; each alert metric has its own.
        s = self.settings
        comparisons = {}
        for metric in CANARY_METRICS:
            rollback = metric.action == "rollback"
            alpha = s.rollback_alpha / ROLLBACK_METRICS if rollback else s.rollback_alpha
            tau = s.outcome_latency_tau if metric.name == "outcome_latency" else s.comparison_tau
            comparisons[metric.name] = self._mean_comparison(metric, alpha, tau)
        return comparisons

    def compare_canaries(self, rows: Rows, labelled: bool) -> list[Decision]:
        """Every live canary against the stable champion (as of the last step) on these
        rows."""
        stable = self.champion
        if stable is None:
            return []
        decisions = []
        for canary in self.live_canaries():
            mine = (rows.versions == canary) | (rows.versions == stable)
            if not mine.any():
                continue
            feed = partial(_feed_rows, rows, mine, canary, labelled)
            decisions += [
                self._mean_decision(kind, canary, stable, m, v, _trigger(rows, row), comparison)
                for kind, m, v, row, comparison in self._judge_canary(canary, stable, feed)
            ]
        return decisions

    def compare_canary_sums(self, version: str, cohort: Cohort, errors: bool) -> list[Decision]:
        """`compare_canaries` on one version's labels summed by the input stage (a
        cohort of `observe_label_sums`): each labelled metric's count, sum and sum of
        squares fed to its side at once; the error rate only where ``errors`` (not a
        regression's, as for its labelled rows)."""
        stable = self.champion
        if stable is None:
            return []
        decisions = []
        sums = _summed_metrics(cohort, errors)
        seq, ts, event_id = cohort.last
        for canary in self.live_canaries():
            if version not in (canary, stable):
                continue
            feed = partial(_feed_sums, sums, version == canary)
            decisions += [
                self._mean_decision(kind, canary, stable, m, v, Trigger(ts, seq, event_id), c)
                for kind, m, v, _, c in self._judge_canary(canary, stable, feed)
            ]
        return decisions

    def _judge_canary(
        self,
        canary: str,
        stable: str,
        feed: Callable[[Metric, MeanComparison], tuple[MeanVerdict, int] | None],
    ) -> list[tuple[str, Metric, MeanVerdict, int, MeanComparison]]:
        """A canary's comparisons with ``stable`` (made afresh when the stable version
        changed) fed by ``feed`` (a verdict and where it fell, or None), metric by
        metric: every alert, and the earliest of the rollback metrics' verdicts as the
        one rollback, each decided once."""
        existing = self.canaries.get(canary)
        if existing is None or existing[0] != stable:
            existing = self.canaries[canary] = (stable, self._canary_comparisons())
        comparisons = existing[1]
        rollback: tuple[Metric, MeanVerdict, int] | None = None
        found: list[tuple[str, Metric, MeanVerdict, int, MeanComparison]] = []
        for metric in CANARY_METRICS:
            key = f"{canary}:canary:{metric.name}"
            if key in self.decided:
                continue
            got = feed(metric, comparisons[metric.name])
            if got is None:
                continue
            verdict, where = got
            if metric.action == "rollback":
                if rollback is None or where < rollback[2]:
                    rollback = (metric, verdict, where)
                continue
            self.decided.add(key)
            found.append(("alert", metric, verdict, where, comparisons[metric.name]))
        if rollback is not None:
            self.decided.add(f"{canary}:canary")
            found.append(("rollback", *rollback, comparisons[rollback[0].name]))
        return found

    def compare_promotions(self, rows: Rows) -> list[Decision]:
        """Newly promoted champions against the champion they replaced (error rate)."""
        decisions = []
        errors = rows.values["error_rate"]
        for new, (old, comparison) in list(self.promotions.items()):
            key = f"{new}:promotion"
            if key in self.decided:
                continue
            use = np.flatnonzero(
                ((rows.versions == new) | (rows.versions == old)) & np.isfinite(errors)
            )
            if not len(use):
                continue
            verdict = comparison.update(rows.versions[use] == new, errors[use])
            if verdict is None:
                continue
            trigger = _trigger(rows, int(use[verdict.index]))
            decisions.append(self._promotion_rollback(new, old, verdict, trigger, comparison))
        return decisions

    def _promotion_rollback(
        self,
        new: str,
        old: str,
        verdict: MeanVerdict,
        trigger: Trigger,
        comparison: MeanComparison,
    ) -> Decision:
        """A promoted champion found worse than the one it replaced: decided once."""
        self.decided.add(f"{new}:promotion")
        return self._mean_decision(
            "rollback", new, old, CANARY_METRICS[0], verdict, trigger, comparison
        )

    def _mean_decision(
        self,
        type_: str,
        version: str,
        baseline: str,
        metric: Metric,
        verdict: MeanVerdict,
        trigger: Trigger,
        comparison: MeanComparison,
    ) -> Decision:
        """A canary or promotion verdict as a decision; its configuration and confidence
        are the comparison's own (the rollback metrics split ``rollback_alpha`` between
        them, and outcome latency has its own ``tau``)."""
        info = self.versions[version]
        promoted = type_ == "rollback" and self.versions[version].role == "champion"
        kind = "promotion_regression" if promoted else "canary_regression"
        label = "Promoted version" if promoted else "Canary"
        action = (
            f"route its traffic back to {baseline}"
            if type_ == "rollback"
            else "hold the rollout and look into it"
        )
        pending = "" if metric.labelled else " This is judged before labels arrive."
        # Shares of traffic as of the last step (what was served when the rows came).
        served, base_events = self.served.get(version, 0), self.served.get(baseline, 0)
        return build_decision(
            id_parts=(
                self.model_id,
                version,
                type_,
                kind,
                baseline,
                *(() if type_ == "rollback" else (metric.name,)),
            ),
            type_=type_,
            kind=kind,
            model_id=self.model_id,
            model_version=version,
            severity="critical" if type_ == "rollback" else "warning",
            detector="anytime_valid_mean_comparison",
            config={"metric": metric.name, **comparison.config()},
            statistic=f"{metric.name}_difference",
            value=round(verdict.difference, 6),
            threshold=comparison.margin,
            p_value=None,
            first_ts=info.first_ts,
            count=verdict.candidate_n + verdict.baseline_n,
            reference=f"{'previous champion' if promoted else 'stable version'} {baseline}",
            trigger=trigger,
            details={
                "confidence_interval": [round(verdict.lower, 6), round(verdict.upper, 6)],
                "confidence": 1 - comparison.alpha,
                "labels_pending": not metric.labelled,
                **({"label_maturity": self.evidence} if metric.labelled else {}),
                "candidate": {
                    "version": version,
                    "events": verdict.candidate_n,
                    metric.name: round(verdict.candidate_mean, 6),
                },
                "baseline": {
                    "version": baseline,
                    "events": verdict.baseline_n,
                    metric.name: round(verdict.baseline_mean, 6),
                },
            },
            impact=Impact(
                round(served / max(served + base_events, 1), 6),
                round(verdict.difference, 6),
                metric.unit,
            ),
            recommendation=f"{label} {version} {metric.describe} than {baseline}: {action}."
            + pending,
            rollback=(version, baseline) if type_ == "rollback" else None,
        )

    def add_estimates(self, rows: Rows) -> None:
        """Per version, realised minus estimated error on labelled events with scores,
        summed by the minute their predictions were made; compared once that cohort has
        matured (`release_estimates`, `detectors.versions.maturity`): labels that arrive in
        an order that depends on the outcome would otherwise bias the realised side."""
        values = rows.values
        gap = values["error_rate"] - values["estimated_error"]
        usable = np.isfinite(gap)
        for version in sorted(set(rows.versions[usable].tolist())):
            if f"{version}:estimate_gap" in self.decided or version not in self.versions:
                continue
            use = np.flatnonzero(usable & (rows.versions == version))
            ts = values["prediction_ts"][use]
            starts = (ts - ts % COHORT_MS).astype(np.int64)
            minutes, inverse = np.unique(starts, return_inverse=True)
            g = gap[use]
            n = np.bincount(inverse, minlength=len(minutes))
            total = np.bincount(inverse, weights=g, minlength=len(minutes))
            total_sq = np.bincount(inverse, weights=g * g, minlength=len(minutes))
            last = np.zeros(len(minutes), np.int64)
            last[inverse] = use  # the last row of each minute (rows are in arrival order)
            for j, start in enumerate(minutes.tolist()):
                row = int(last[j])
                self.cohorts.add(
                    version,
                    start,
                    int(n[j]),
                    float(total[j]),
                    float(total_sq[j]),
                    [rows.seqs[row], rows.ts[row], rows.event_ids[row]],
                )

    def release_estimates(self) -> list[Decision]:
        """At a step: the matured cohorts' gaps compared, in the order their predictions
        were made (fed in any other order, say every cohort that came complete at once
        first, the sequence would select by outcome)."""
        horizon = self.horizon
        ready = self.cohorts.release(horizon)
        decisions = []
        for _, version, cohort in ready:
            key = f"{version}:estimate_gap"
            if key in self.decided or version not in self.versions:
                continue
            comparison = self.gaps.get(version)
            if comparison is None:
                comparison = self.gaps[version] = self._gap_comparison()
            verdict = comparison.update_summary(cohort.n, cohort.total, cohort.total_sq)
            if verdict is None:
                continue
            self.decided.add(key)
            self.cohorts.drop(version)
            direction = "more" if verdict.difference > 0 else "fewer"
            earlier = self.gap_alerted.get(direction)
            if (
                earlier is not None
                and earlier in self.versions
                and self.versions[earlier].role == "champion"
                and self.versions[version].role == "champion"
            ):
                # A successor champion (a retrain) with the same gap as one already
                # reported: the same finding, not a new one.
                continue
            self.gap_alerted[direction] = version
            decisions.append(self._gap_decision(version, verdict, cohort.last, horizon, comparison))
        return decisions

    def _maturity(self) -> LabelMaturity:
        return LabelMaturity(
            self.settings.label_maturity_quantile, self.settings.label_maturity_min_labels
        )

    def _gap_comparison(self) -> MeanComparison:
        return MeanComparison(
            tau=self.settings.comparison_tau,
            alpha=self.settings.rollback_alpha,
            margin=self.settings.estimate_gap_margin,
            min_each=self.settings.comparison_min_labels,
            prior_var=0.25,
            one_sample=True,
        )

    def _gap_decision(
        self,
        version: str,
        verdict: MeanVerdict,
        last: list[Any],
        horizon_ms: float | None,
        comparison: MeanComparison,
    ) -> Decision:
        seq, ts, event_id = last
        direction = "more" if verdict.difference > 0 else "fewer"
        return build_decision(
            id_parts=(self.model_id, version, "alert", "performance_estimate_gap", "realised"),
            type_="alert",
            kind="performance_estimate_gap",
            model_id=self.model_id,
            model_version=version,
            severity="warning",
            detector="anytime_valid_mean_comparison",
            config={
                "metric": "realised_minus_estimated_error",
                **comparison.config(),
                "estimator": "confidence_based (expected error from the model's scores)",
            },
            statistic="realised_minus_estimated_error",
            value=round(verdict.difference, 6),
            threshold=comparison.margin,
            p_value=None,
            first_ts=self.versions[version].first_ts,
            count=verdict.candidate_n,
            reference="label-free estimate from the version's own scores",
            trigger=Trigger(ts, seq, event_id),
            details={
                "confidence_interval": [round(verdict.lower, 6), round(verdict.upper, 6)],
                "confidence": 1 - comparison.alpha,
                "label_maturity": {
                    "horizon_s": None if horizon_ms is None else round(horizon_ms / 1000.0, 3),
                    "quantile": self.settings.label_maturity_quantile,
                    "compared": "labels of predictions older than the horizon, by the minute "
                    "they were made (labels that arrive in an order that depends on the "
                    "outcome are not a random sample until their cohort is in)",
                },
            },
            impact=Impact(1.0, round(verdict.difference, 6), "error_rate_difference"),
            recommendation=f"Version {version} makes {direction} errors than its own scores "
            "predict: its scores are not calibrated, so label-free performance estimates "
            "for it are not reliable. Recalibrate (e.g. isotonic on recent labels) before "
            "relying on them.",
        )

    def _paired_comparison(self) -> PairedComparison:
        # Discordant pairs are a fraction of all pairs: a quarter of the labelled minimum.
        return PairedComparison(
            alpha=self.settings.rollback_alpha,
            prior=self.settings.paired_prior,
            min_discordant=self.settings.comparison_min_labels // 4,
        )

    def compare_pairs(self, rows: Rows) -> list[Decision]:
        """Labelled events sharing an outcome (same ``seq``) from the champion and a
        challenger or shadow form a pair. A better challenger is reported; a better
        *previous* champion (shadowing the one promoted over it) means a rollback."""
        champion = self.champion
        if champion is None or not any(
            (info := self.versions.get(name)) is not None and info.role in ("challenger", "shadow")
            for name in set(rows.versions.tolist())
        ):
            return []  # no pair can form (most models: no challenger, no shadow)
        errors = rows.values["error_rate"]
        groups: dict[int, dict[str, tuple[float, int]]] = {}
        for i, (version, seq) in enumerate(zip(rows.versions.tolist(), rows.seqs, strict=True)):
            if math.isfinite(errors[i]):
                groups.setdefault(seq, {})[version] = (float(errors[i]), i)
        pairs: dict[str, list[tuple[bool, bool, int]]] = {}
        for group in groups.values():
            if champion not in group:
                continue
            champion_error, _ = group[champion]
            for version, (error, row) in group.items():
                info = self.versions.get(version)
                if info is None or info.role not in ("challenger", "shadow"):
                    continue
                pairs.setdefault(version, []).append((not error, not champion_error, row))
        decisions = []
        for candidate, got in pairs.items():
            if f"{candidate}:paired:{champion}" in self.decided:
                continue
            comparison = self._paired_with(candidate, champion)
            verdict = comparison.update(
                np.array([r[0] for r in got]), np.array([r[1] for r in got])
            )
            if verdict is not None:
                trigger = _trigger(rows, got[verdict.index][2])
                decisions += self._paired_verdict(candidate, champion, verdict, trigger, comparison)
        return decisions

    def _paired_with(self, candidate: str, champion: str) -> PairedComparison:
        """The paired comparison of a challenger or shadow with the champion (a new one
        when the champion changed)."""
        existing = self.challengers.get(candidate)
        if existing is None or existing[0] != champion:
            existing = self.challengers[candidate] = (champion, self._paired_comparison())
        return existing[1]

    def _paired_verdict(
        self,
        candidate: str,
        champion: str,
        verdict: Any,
        trigger: Trigger,
        comparison: PairedComparison,
    ) -> list[Decision]:
        """A paired comparison's verdict, decided once: a decision when the candidate is
        the better (a rollback when it is the champion the current one replaced)."""
        self.decided.add(f"{candidate}:paired:{champion}")
        if not verdict.candidate_better:
            return []
        rollback = candidate == self.promotions.get(champion, (None, None))[0]
        return [self._paired_decision(candidate, champion, verdict, trigger, rollback, comparison)]

    def _paired_decision(
        self,
        candidate: str,
        champion: str,
        verdict: Any,
        trigger: Trigger,
        rollback: bool,
        comparison: PairedComparison,
    ) -> Decision:
        role = self.versions[candidate].role
        if rollback:
            type_, kind, version = "rollback", "promotion_regression", champion
            text = (
                f"Champion {champion} is less accurate than {candidate}, the version it "
                f"replaced, on the same requests: route traffic back to {candidate}."
            )
        else:
            type_, kind, version = "alert", "challenger_better", candidate
            text = (
                f"{role.capitalize()} {candidate} is more accurate than champion {champion} "
                "on the same requests: consider promoting it."
            )
        return build_decision(
            id_parts=(self.model_id, version, type_, kind, candidate, champion),
            type_=type_,
            kind=kind,
            model_id=self.model_id,
            model_version=version,
            severity="critical" if rollback else "info",
            detector="paired_discordance_e_process",
            config=comparison.config(),
            statistic="e_value",
            value=verdict.e_value,
            threshold=1 / comparison.alpha,
            p_value=min(1.0, 1 / verdict.e_value),
            first_ts=self.versions[candidate].first_ts,
            count=verdict.pairs,
            reference=f"champion version {champion} on the same requests",
            trigger=trigger,
            details={
                "candidate_only_right": verdict.candidate_only,
                "champion_only_right": verdict.baseline_only,
                "disagreement_rate": round(verdict.disagreement_rate, 6),
                "label_maturity": self.evidence,
            },
            impact=Impact(
                1.0,
                round((verdict.candidate_only - verdict.baseline_only) / verdict.pairs, 6),
                "accuracy_difference",
            ),
            recommendation=text,
            rollback=(champion, candidate) if rollback else None,
        )

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "versions": {
                k: [v.role, v.first_ts, v.last_ts, v.events, v.traffic, v.history]
                for k, v in self.versions.items()
            },
            "anchor": self.anchor,
            "champion": self.champion,
            "canaries": {
                k: [s, {m: c.state() for m, c in comps.items()}]
                for k, (s, comps) in self.canaries.items()
            },
            "promotions": {k: [old, c.state()] for k, (old, c) in self.promotions.items()},
            "challengers": {k: [c, p.state()] for k, (c, p) in self.challengers.items()},
            "gaps": {k: c.state() for k, c in self.gaps.items()},
            "maturity": self.maturity.state(),
            "cohorts": self.cohorts.state(),
            "summed": self.summed.state(),
            "summed_pairs": self.summed_pairs.state(),
            "held": self.held.state(),
            "held_pairs": self.held_pairs.state(),
            "gap_alerted": self.gap_alerted,
            "decided": sorted(self.decided),
            "step": {
                "horizon": self.horizon,
                "evidence": self.evidence,
                "served": self.served,
                "learnt": self.learnt,
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.versions = {
            k: VersionInfo(role, first, last, events, traffic, list(history))
            for k, (role, first, last, events, traffic, history) in state["versions"].items()
        }
        self.anchor = state["anchor"]
        self.champion = state["champion"]
        self.canaries = {}
        for canary, (stable, comparison_states) in state["canaries"].items():
            comparisons = self._canary_comparisons()
            for name, comparison_state in comparison_states.items():
                comparisons[name].restore(comparison_state)
            self.canaries[canary] = (stable, comparisons)
        self.promotions = {}
        for new, (old, comparison_state) in state["promotions"].items():
            comparison = self._mean_comparison(
                CANARY_METRICS[0], self.settings.rollback_alpha, self.settings.comparison_tau
            )
            comparison.restore(comparison_state)
            self.promotions[new] = (old, comparison)
        self.challengers = {}
        for candidate, (champion, paired_state) in state["challengers"].items():
            paired = self._paired_comparison()
            paired.restore(paired_state)
            self.challengers[candidate] = (champion, paired)
        self.gaps = {}
        for version, gap_state in state["gaps"].items():
            self.gaps[version] = self._gap_comparison()
            self.gaps[version].restore(gap_state)
        self.maturity = self._maturity()
        self.cohorts = Cohorts()
        if "maturity" in state:  # checkpoints before label maturity start afresh
            self.maturity.restore(state["maturity"])
            self.cohorts.restore(state["cohorts"])
        self.held = HeldLabels(self.settings.label_maturity_max_held)
        self.held_pairs = HeldPairs(self.settings.label_maturity_max_held)
        if "held" in state:  # checkpoints before held labels hold none
            self.held.restore(state["held"])
        if "held_pairs" in state:
            self.held_pairs.restore(state["held_pairs"])
        self.summed = Cohorts(parts=True)
        self.summed_pairs = PairCohorts()
        if "summed" in state:  # checkpoints before summed labels hold none
            self.summed.restore(state["summed"])
            self.summed_pairs.restore(state.get("summed_pairs", []))
        self.gap_alerted = dict(state.get("gap_alerted", {}))
        self.decided = set(state["decided"])
        step = state.get("step")
        if step is None:  # checkpoints before steps: as of the batch they ended
            self.horizon = self.maturity.horizon_ms()
            self.evidence = self._maturity_evidence(self.horizon)
            self.served = {name: info.events for name, info in self.versions.items()}
            self.learnt = False
        else:
            self.horizon = step["horizon"]
            self.evidence = step["evidence"]
            self.served = dict(step["served"])
            self.learnt = step["learnt"]
