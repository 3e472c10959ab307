"""Label maturity: compare realised with estimated quality only on predictions whose labels
are in.

Labels often arrive in an order that depends on the outcome: a repayment is known at the
due date, a default after a day of grace; a click within seconds, a purchase days later.
The labels seen so far are then not a random sample of the predictions, and realised
error on them is biased against any label-free estimate. `LabelMaturity` learns the
label delay per outcome class (a histogram of log delays for each binary outcome, one
for any other kind of label) and the horizon that a high quantile of every class's delays
falls within; `Cohorts` holds labelled quantities by the minute their predictions were
made and releases a minute only once the horizon has passed behind it, so what is
compared is the labels of whole cohorts, whatever order they came in. Labels that come
later than the horizon (the tail beyond the quantile) are released at once.

The delays learnt are those of the labels seen, which understates the horizon while the
late class is still arriving: a class counts only from ``min_labels`` labels on, for a
binary task nothing is released until both outcomes have that many, and a horizon is
trusted only once the stream has been watched for twice its length (delays longer than
the time watched cannot have been seen).

Waiting costs a comparison the horizon's worth of time, and it buys nothing when the
delays do not depend on the outcome (the labels in are then a random sample of the
predictions). So for a binary label the horizon is 0 until the two outcomes' delay
distributions are shown to differ: their Kolmogorov-Smirnov distance above both
``DEPENDENCE_MIN_DISTANCE`` and its critical value at ``DEPENDENCE_ALPHA``. Other labels
(regression targets, several classes) always wait, since their delays cannot be split
by outcome here.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

_Key = TypeVar("_Key", tuple[str, int], tuple[str, str, int])
_Held = TypeVar("_Held", "Cohort", "PairCohort")

LOG_DELAY_BINS = np.arange(0.0, 8.05, 0.05)
"""Bin edges of log10(delay in seconds): a second to three years, in 12 % steps."""

OTHER = -1
"""The outcome of a label that is neither 0 nor 1 (a multiclass or regression model's)
where the input stage counts it: the ``*`` class here."""

COHORT_MS = 60_000
"""Predictions are grouped by the minute they were made in: fine enough for models whose
labels come within minutes, coarse enough that a two-day horizon holds 2,880 cohorts."""

DEPENDENCE_MIN_DISTANCE = 0.1
"""Smallest KS distance between the two outcomes' delay distributions taken as a
dependence: below it the sample of labels in is biased by at most a tenth of the
difference between the outcomes' rates, whatever the sample size."""

DEPENDENCE_ALPHA = 1e-3
"""Significance of the KS test for a dependence (critical value
``sqrt(-ln(alpha / 2) / 2 * (n0 + n1) / (n0 n1))``): noise on a few dozen labels is
not a dependence."""

MAX_PENDING = 20_000
"""Cohorts held per model at most (two weeks of minutes); beyond it the oldest are
released before their horizon (counted in `Cohorts.forced`), bounding the state."""


class LabelMaturity:
    """The delay after which a prediction's label is taken as in, per model."""

    def __init__(self, quantile: float, min_labels: int, binary: bool = False) -> None:
        self.quantile = quantile
        self.min_labels = min_labels
        self.binary = binary
        self.histograms: dict[str, np.ndarray] = {}
        self.span = [2**62, -(2**62)]
        """[earliest prediction time, latest label time] seen: delays longer than the
        span between them cannot have been seen yet."""

    def observe(
        self,
        classes: np.ndarray,
        log_delays: np.ndarray,
        prediction_ts: np.ndarray | None = None,
        label_ts: np.ndarray | None = None,
    ) -> None:
        """Labels seen: their outcome class (0/1 for binary labels, NaN for any other
        label) and log10 delay in seconds (NaN: not known), and when their predictions
        were made and they arrived (epoch ms; for the span of delays that could be
        seen)."""
        if prediction_ts is not None and len(prediction_ts):
            self.span[0] = min(self.span[0], int(np.nanmin(prediction_ts)))
        if label_ts is not None and len(label_ts):
            self.span[1] = max(self.span[1], int(np.nanmax(label_ts)))
        known = np.isfinite(log_delays)
        if not known.any():
            return
        classes, log_delays = classes[known], log_delays[known]
        bins = np.minimum(
            np.searchsorted(LOG_DELAY_BINS, log_delays, "right"), len(LOG_DELAY_BINS) - 1
        )
        binary = np.isfinite(classes)
        if binary.any():
            self.binary = True
        for name, mask in (("0", classes == 0), ("1", classes == 1), ("*", ~binary)):
            if mask.any():
                np.add.at(self._histogram(name), bins[mask], 1)

    def observe_counts(
        self, delays: list[list[int]], first_prediction_ts: int, last_label_ts: int
    ) -> None:
        """`observe` of labels counted by the input stage: ``[outcome, bin, count]``
        rows of their log delays' bins (the outcome 0, 1 or `OTHER`), and the span they
        cover."""
        self.span[0] = min(self.span[0], first_prediction_ts)
        self.span[1] = max(self.span[1], last_label_ts)
        for outcome, bin_, count in delays:
            if outcome == OTHER:
                self._histogram("*")[bin_] += count
            else:
                self.binary = True
                self._histogram(str(outcome))[bin_] += count

    def _histogram(self, name: str) -> np.ndarray:
        """The delay histogram of one outcome class (``0``, ``1``, ``*``), made empty."""
        hist = self.histograms.get(name)
        if hist is None:
            hist = self.histograms[name] = np.zeros(len(LOG_DELAY_BINS), np.int64)
        return hist

    def horizon_ms(self) -> float | None:
        """The largest per-class quantile of the delays, in milliseconds; 0 for a binary
        label whose delays do not depend on the outcome (None: not known yet)."""
        if self.quantile <= 0:
            return 0.0
        learnt = {c: h for c, h in self.histograms.items() if h.sum() >= self.min_labels}
        if not learnt or (self.binary and len(learnt) < 2):
            return None
        if self.binary and not self.outcome_dependent():
            return 0.0
        worst = 0.0
        for hist in learnt.values():
            cum = np.cumsum(hist)
            i = int(np.searchsorted(cum, self.quantile * cum[-1]))
            worst = max(worst, float(LOG_DELAY_BINS[min(i, len(LOG_DELAY_BINS) - 1)]))
        horizon = 10.0**worst * 1000.0
        if self.span[1] > self.span[0] and self.span[1] - self.span[0] < 2 * horizon:
            # Only delays shorter than the time watched can have been seen: a quantile
            # of them understates the horizon (the late outcome's labels are still on
            # their way) until the stream has run for twice the horizon.
            return None
        return horizon

    def delay_distance(self) -> float:
        """Kolmogorov-Smirnov distance between the delays of the two outcomes (0 when
        either has none)."""
        zero, one = self.histograms.get("0"), self.histograms.get("1")
        if zero is None or one is None or not zero.sum() or not one.sum():
            return 0.0
        return float(np.abs(np.cumsum(zero) / zero.sum() - np.cumsum(one) / one.sum()).max())

    def outcome_dependent(self) -> bool:
        """Whether the two outcomes' labels arrive with different delays (see the module
        docstring); False until both have ``min_labels``.

        >>> m = LabelMaturity(0.95, 30)
        >>> hours, days = np.full(200, 3.6), np.full(200, 5.0)  # log10 seconds
        >>> m.observe(np.r_[np.zeros(200), np.ones(200)], np.r_[hours, days])
        >>> m.outcome_dependent(), m.horizon_ms() > 86_400_000
        (True, True)
        >>> m = LabelMaturity(0.95, 30)
        >>> rng = np.random.default_rng(1)
        >>> m.observe(rng.integers(0, 2, 400).astype(float), rng.uniform(2.0, 4.0, 400))
        >>> m.outcome_dependent(), m.horizon_ms()
        (False, 0.0)
        """
        zero, one = self.histograms.get("0"), self.histograms.get("1")
        if zero is None or one is None:
            return False
        n0, n1 = int(zero.sum()), int(one.sum())
        if min(n0, n1) < self.min_labels:
            return False
        critical = math.sqrt(-math.log(DEPENDENCE_ALPHA / 2) / 2 * (n0 + n1) / (n0 * n1))
        return self.delay_distance() > max(DEPENDENCE_MIN_DISTANCE, critical)

    def state(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "histograms": {k: v.tolist() for k, v in self.histograms.items()},
            "span": self.span,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.binary = state["binary"]
        self.histograms = {k: np.asarray(v, np.int64) for k, v in state["histograms"].items()}
        self.span = list(state.get("span", [2**62, -(2**62)]))


@dataclass(slots=True)
class Cohort:
    """Sums of one quantity over the labelled predictions of one version and hour."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    last: list[Any] = field(default_factory=lambda: [0, 0, ""])
    """[seq, event time, event id] of the last label added (where a verdict is placed)."""
    parts: list[list[Any]] = field(default_factory=list)
    """``[n, total, last]`` of what was added, in order, in parts of at least `PART_VALUES`
    values (and `PART_SHARE`) but the last, where the holder keeps them (`Cohorts` with
    ``parts``)."""
    extra: list[float] = field(default_factory=list)
    """Further sums over the same values, added element by element (the summed labels'
    Brier scores and delays: `detectors.versions.registry._group_extra`)."""

    def add(self, n: int, total: float, total_sq: float, extra: Sequence[float]) -> None:
        """``n`` more values by their sums (``extra``: `Cohort.extra`'s, see `added`)."""
        self.n += n
        self.total += total
        self.total_sq += total_sq
        self.extra = added(self.extra, extra)


PART_VALUES = 25
"""Fewest values in a part of a held cohort but its last (`Cohort.parts`): a reader that
steps per part (the concept monitor's CUSUM on summed labels) then steps about as often
as on the sums one partition of a model with 50 labels a second sends per 2-s slice
(measured: a concept change found 2 s after label by label with a part per sum, 4 s with
parts of 25, 8 s with parts of 100)."""

PART_SHARE = 32
"""A part also holds at least this fraction's inverse of its cohort so far, so a cohort
of N values keeps about N / `PART_VALUES` parts while small and 32 ln N beyond (a
minute of a hot model's labels held for days: a few hundred parts, not one per sum)."""


def added(extra: list[float], more: Sequence[float]) -> list[float]:
    """Extra sums (`Cohort.extra`) with more of them, element by element; none unless
    both have them (a cohort restored from a checkpoint before them, or values whose
    sums are not known, keeps none from then on rather than sums of part of its values).

    >>> added([1.0, 2.0], (1.0, 1.0)), added([], (1.0, 1.0)), added([1.0], ())
    ([2.0, 3.0], [], [])
    """
    if not extra or not more:
        return []
    return [a + b for a, b in zip(extra, more, strict=True)]


class Cohorts:
    """Labelled quantities held by prediction minute until their cohort has matured; with
    ``parts``, each cohort also keeps what was added in parts (`Cohort.parts`)."""

    def __init__(self, parts: bool = False) -> None:
        self.parts = parts
        self.pending: dict[tuple[str, int], Cohort] = {}
        self.watermark = -(2**62)
        """Largest label event time seen."""
        self.forced = 0
        """Cohorts released before their horizon because too many were held."""
        self.order: list[tuple[int, tuple[str, int]]] = []
        """Heap of the (minute, key) held (and of dropped ones, skipped when met)."""
        self.values = 0
        """Values held, over every cohort (kept as they come and go: a gauge reads it)."""

    def add(
        self,
        version: str,
        start: int,
        n: int,
        total: float,
        total_sq: float,
        last: list[Any],
        extra: Sequence[float] = (),
    ) -> None:
        """Hold the sums of ``n`` values of one version's predictions made in the minute
        from ``start`` until that minute matures (`release`); ``extra``: further sums of
        them (`Cohort.extra`)."""
        self.watermark = max(self.watermark, int(last[1]))
        self.values += n
        held = self.pending.get((version, start))
        if held is None:
            held = self.pending[(version, start)] = Cohort(n, total, total_sq, last)
            held.extra = list(extra)
            heapq.heappush(self.order, (start, (version, start)))
        else:
            held.add(n, total, total_sq, extra)
            held.last = last
        if not self.parts:
            return
        if held.parts and held.parts[-1][0] < max(PART_VALUES, held.n // PART_SHARE):
            part = held.parts[-1]
            part[0] += n
            part[1] += total
            part[2] = last
        else:
            held.parts.append([n, total, last])

    def release(self, horizon_ms: float | None) -> list[tuple[int, str, Cohort]]:
        """The cohorts that matured as (minute, version, sums), oldest first, and the
        oldest beyond `MAX_PENDING`."""
        bound = -math.inf if horizon_ms is None else self.watermark - COHORT_MS - horizon_ms
        return self.release_through(bound)

    def release_through(self, bound: float) -> list[tuple[int, str, Cohort]]:
        """`release` of the minutes up to ``bound`` (and the oldest beyond
        `MAX_PENDING`)."""
        out = [
            (start, version, cohort)
            for start, (version, _), cohort in _release(self.pending, self.order, bound)
        ]
        self.forced += sum(start > bound for start, _, _ in out)
        self.values -= sum(cohort.n for _, _, cohort in out)
        return out

    def drop(self, version: str) -> None:
        for key in [k for k in self.pending if k[0] == version]:
            self.values -= self.pending.pop(key).n

    def state(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "forced": self.forced,
            "pending": [
                [v, start, c.n, c.total, c.total_sq, c.last, c.parts, c.extra]
                for (v, start), c in self.pending.items()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.watermark = state["watermark"]
        self.forced = state["forced"]
        self.pending = {}
        for v, start, n, total, total_sq, last, *more in state["pending"]:
            # Checkpoints before parts have none (such a cohort is read whole), and
            # before extra sums none (no canary compared on summed labels).
            parts, extra = [*more, [], []][:2]
            kept = [[m, t, list(at)] for m, t, at in parts]
            if self.parts and not kept:  # from before parts: what it holds is one part
                kept = [[n, total, list(last)]]
            self.pending[(v, start)] = Cohort(n, total, total_sq, list(last), kept, list(extra))
        self.values = sum(c.n for c in self.pending.values())
        self.order = [(start, (v, start)) for v, start in self.pending]
        heapq.heapify(self.order)


@dataclass(slots=True)
class PairCohort:
    """Discordance counts of two versions on the same requests, predictions of one minute."""

    n: int = 0
    first_only: int = 0
    """Pairs where only the first version was right."""
    second_only: int = 0
    last: list[Any] = field(default_factory=lambda: [0, 0, ""])
    """[seq, event time, event id] of the last pair added."""


class PairCohorts:
    """`Cohorts` for pairs of versions: discordance counts held by (first version, second
    version, prediction minute) until that minute has matured."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str, int], PairCohort] = {}
        self.order: list[tuple[int, tuple[str, str, int]]] = []
        """Heap of the (minute, key) held (and of dropped ones, skipped)."""

    def add(
        self, first: str, second: str, start: int, n: int, first_only: int, second_only: int,
        last: list[Any],
    ) -> None:  # fmt: skip
        held = self.pending.get((first, second, start))
        if held is None:
            self.pending[(first, second, start)] = PairCohort(n, first_only, second_only, last)
            heapq.heappush(self.order, (start, (first, second, start)))
        else:
            held.n += n
            held.first_only += first_only
            held.second_only += second_only
            held.last = last

    def release_through(self, bound: float) -> list[tuple[str, str, PairCohort]]:
        """The counts of the minutes up to ``bound``, oldest first (and the oldest beyond
        `MAX_PENDING`)."""
        return [
            (first, second, found)
            for _, (first, second, _), found in _release(self.pending, self.order, bound)
        ]

    def drop(self, version: str) -> None:
        for key in [k for k in self.pending if version in k[:2]]:
            del self.pending[key]

    def state(self) -> list[list[Any]]:
        return [
            [first, second, start, c.n, c.first_only, c.second_only, c.last]
            for (first, second, start), c in self.pending.items()
        ]

    def restore(self, state: list[list[Any]]) -> None:
        self.pending = {
            (first, second, start): PairCohort(n, a, b, list(last))
            for first, second, start, n, a, b, last in state
        }
        self.order = [(key[2], key) for key in self.pending]
        heapq.heapify(self.order)


def _release(
    pending: dict[_Key, _Held], order: list[tuple[int, _Key]], bound: float
) -> list[tuple[int, _Key, _Held]]:
    """Pop the held entries of the minutes up to ``bound``, oldest first, and the oldest
    beyond `MAX_PENDING` (heap entries of dropped ones are skipped)."""
    out = []
    while order and (order[0][0] <= bound or len(pending) > MAX_PENDING):
        start, key = heapq.heappop(order)
        found = pending.pop(key, None)
        if found is not None:
            out.append((start, key, found))
    return out
