"""Concept drift: the error rate of joined predictions against the reference error rate."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import numpy as np
from scipy.stats import norm

from driftline.detectors.drift.channel import bernoulli_llr_terms, bernoulli_rate
from driftline.detectors.drift.reference import (
    PerformanceSummary,
    from_wire,
    infer_task,
    performance_summary,
    prediction_errors,
    split_pairs,
    to_wire,
)
from driftline.detectors.drift.river_bridge import RiverErrorDetector
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import Recovery, Signal, WindowReport
from driftline.detectors.stats.cusum import Alarm
from driftline.detectors.stats.latch import BERNOULLI, LatchingBank
from driftline.detectors.stats.margin import calibrated_nulls

REFERENCE_STEP = 1_000
"""Judged labels between the points at which a learning reference may absorb labels and
its tests be redesigned: the learning happens at the same labels whatever the batching."""

REFRESH_GROWTH = 1.25
"""The tests are redesigned when the reference has grown by this factor since the last
design (a handful of redesigns per decade of labels)."""


class SummedLabels(NamedTuple):
    """Labels of one version summed by the input stage (`detectors.intake.labelsums`), as
    the concept monitor reads them: how many, how many wrong, and where the last one is."""

    labels: int
    errors: int
    seq: int
    """Position of the last label in the model's merged order."""
    ts: int
    event_id: str


class LabelBatch(NamedTuple):
    """One version's joined labels, as columns in arrival order (what the model stage
    gathers per batch and the concept monitor reads)."""

    predictions: list[Any]
    """The values predicted."""
    labels: list[Any]
    """What each prediction's outcome was."""
    seqs: list[int]
    """Positions in the model's merged order."""
    ts: list[int]
    """Outcome event times."""
    event_ids: list[str]
    prediction_ts: list[int]
    """Event times of the predictions the labels are for."""

    @classmethod
    def empty(cls) -> LabelBatch:
        return cls([], [], [], [], [], [])

    def extend(self, sources: Sequence[Sequence[Any]]) -> None:
        """Append one sequence per field (in field order) to the columns."""
        for column, source in zip(self, sources, strict=True):
            cast(list[Any], column).extend(source)


def n_tests(settings: DetectorSettings) -> int:
    """The bank of error-rate CUSUMs and the windowed online/offline comparison."""
    return settings.error_rate_designs + 1


class ConceptMonitor:
    """Watches the 0/1 error stream of labelled predictions.

    A bank of Bernoulli CUSUMs against the reference error rate catches a rise quickly; a
    window of labelled events compares accuracy with the offline figure
    (``online_offline_gap``) when the reference came from offline data. Without an offline
    figure, the first ``label_warmup_events`` labelled predictions set the reference rate,
    and it goes on learning: labelled events more than ``reference_lag_labels`` old join it
    (in steps of `REFERENCE_STEP`, up to ``reference_max_labels``) while no test is in
    alarm, so its standard error, and with it the margins and thresholds the tests take
    for it (`detectors.stats.margin`), shrinks from that of 5,000 labels (0.65 points at a
    0.3 error rate) towards that of all in-control traffic. Labels seen while a test is in
    alarm never join it.
    """

    def __init__(
        self, settings: DetectorSettings, performance: PerformanceSummary | None, offline: bool
    ) -> None:
        self.settings = settings
        self.offline = offline and performance is not None
        self.task: str | None = performance.task if performance else None
        self.tolerance = performance.residual_tolerance if performance else None
        self.reference_rate: float | None = performance.error_rate if performance else None
        self.reference_count = performance.count if performance else 0
        self.judged = 0
        """Labelled events judged since the reference was set."""
        self.marks: list[tuple[int, int]] = []
        """(judged, cumulative errors) every `REFERENCE_STEP` judged events since the last
        point the reference may learn from: the lag buffer, in counts."""
        self.cum_errors = 0
        self.learned: tuple[int, float] = (0, 0.0)
        """(events, errors) absorbed into the reference so far."""
        self.base = (self.reference_count, (self.reference_rate or 0.0) * self.reference_count)
        """The reference before it learned: (events, errors)."""
        self.refreshed_count = self.reference_count
        self.warmup: list[tuple[Any, Any]] = []
        self.warm_sums = [0, 0]
        """[labels, errors] of the label warm-up gathered from sums (`update_sums`)."""
        self.sums_rule: tuple[str, float | None] = ("binary", None)
        """The task and tolerance the input stage judged this version's summed labels by
        (`note_sums`)."""
        self.bank = LatchingBank(np.array([BERNOULLI]), np.array([0.5]), np.array([0.6]))
        """Placeholder until the reference rate is known (`_set_threshold` builds the real one)."""
        self.nulls = self.bank.null
        self.designs = self.bank.design
        self.river: RiverErrorDetector | None = None
        """River's detector in place of the bank, when ``concept_detector`` names one."""
        self.arl: float | None = None
        self.window_n = 0
        self.window_errors = 0
        self.window_first_ts: int | None = None
        self.skipped = 0

    @property
    def ready(self) -> bool:
        return self.reference_rate is not None and self.arl is not None

    def calibrate(self, arl_per_test: float) -> None:
        self.arl = arl_per_test
        self._set_threshold()

    def _set_threshold(self) -> None:
        if self.arl is None or self.reference_rate is None:
            return
        estimate, se, steps = self._steps()
        family = np.full(len(steps), BERNOULLI)
        self.nulls, self.designs, thresholds = calibrated_nulls(
            family, np.full(len(steps), estimate), np.full(len(steps), se), steps, self.arl
        )
        self.bank = LatchingBank(family, self.nulls, self.designs)
        self.bank.calibrate(thresholds, self.arl)
        name = self.settings.concept_detector
        if name != "cusum":
            p0, p1 = self._design()
            base = float(p1[min(2, len(p1) - 1)])
            if self.river is None:
                self.river = RiverErrorDetector(name, self.arl, p0, base)
            elif not self.river.latched:
                self.river.redesign(self.arl, p0, base)

    def _steps(self) -> tuple[float, float, np.ndarray]:
        """The reference error rate, its standard error, and the bank's design rises.

        The designs are a bank of ``error_rate_designs`` CUSUMs spaced by factors of two
        around the base rise (``error_rate_ratio`` or ``error_rate_min_change``, the
        larger): four and two times it, it, and halvings. One CUSUM is fast only near its
        design (the base design alone needs about four times the information limit for a
        rise of half its size, and twice it for one four times as large); the bank keeps
        every rise from a quarter to four times the base within about 1.3 times of it,
        for a budget split ``error_rate_designs`` ways (ln 5 = 1.6 on the threshold).
        Each design's null stands as far above the estimate, and its threshold as high,
        as `detectors.stats.margin.calibrated_nulls` finds fastest for its rise within the
        budget, the reference's sampling error included: a large rise takes almost no
        margin, a rise near the reference's own noise a wide one.
        """
        estimate = float(self.reference_rate or 0.0)
        n = max(self.reference_count, 1)
        # A reference without errors (or without correct predictions) is not exact: its
        # standard error is taken as at least that of one event in n.
        se = math.sqrt(max(estimate * (1 - estimate), 1 / n) / n)
        base = max(
            estimate * (self.settings.error_rate_ratio - 1), self.settings.error_rate_min_change
        )
        steps = base * 2.0 ** (2 - np.arange(self.settings.error_rate_designs))
        return estimate, se, steps

    def _design(self) -> tuple[float, np.ndarray]:
        """Null and design error rates of River's detectors and the windowed online/offline
        comparison: the null is the reference's upper confidence bound
        (``reference_uncertainty_z`` standard errors above it)."""
        estimate, se, steps = self._steps()
        p0 = min(estimate + self.settings.reference_uncertainty_z * se, 0.99)
        return p0, np.minimum(p0 + steps, 0.999)

    def update(self, batch: LabelBatch) -> tuple[list[Signal], list[WindowReport | Recovery]]:
        """Feed a batch of labelled predictions in arrival order."""
        signals: list[Signal] = []
        reports: list[WindowReport | Recovery] = []
        seq, ts, event_ids = batch.seqs, batch.ts, batch.event_ids
        start = 0
        if self.reference_rate is None:
            start = self._warm(batch.predictions, batch.labels)
        n = len(batch.labels)
        if start >= n:
            return signals, reports
        if not self.ready:
            self.skipped += n - start
            return signals, reports
        assert self.task is not None
        predictions, labels = batch.predictions, batch.labels
        if start:
            predictions, labels = predictions[start:], labels[start:]
        errors = prediction_errors(
            self.task, predictions, labels, self.settings.classification_threshold, self.tolerance
        )
        judged = np.flatnonzero(~np.isnan(errors))
        if len(judged) == 0:
            return signals, reports
        e = errors[judged]
        rows = judged + start
        pos = 0
        while pos < len(e):
            stop = min(len(e), pos + REFERENCE_STEP - self.judged % REFERENCE_STEP)
            self._sequential(e[pos:stop], rows[pos:stop], seq, ts, event_ids, signals, reports)
            self.judged += stop - pos
            self.cum_errors += int(e[pos:stop].sum())
            pos = stop
            if self.judged % REFERENCE_STEP == 0:
                self._learn()
        self._windows(e, rows, seq, ts, event_ids, signals, reports)
        return signals, reports

    def _learn(self) -> None:
        """At a step boundary: absorb what is old enough into the reference, or, while a
        test is in alarm, forget what is waiting so the changed period never joins it."""
        lag = self.settings.reference_lag_labels
        if self.offline or lag <= 0:
            return
        if self.bank.latched.any() or (self.river is not None and self.river.latched):
            self.marks = [(self.judged, self.cum_errors)]
            return
        self.marks.append((self.judged, self.cum_errors))
        ripe = [m for m in self.marks if m[0] <= self.judged - lag]
        if not ripe:
            return
        start_judged, start_errors = self.marks[0]
        upto_judged, upto_errors = ripe[-1]
        self.marks = [m for m in self.marks if m[0] >= upto_judged]
        room = self.settings.reference_max_labels - self.base[0] - self.learned[0]
        add = min(upto_judged - start_judged, max(room, 0))
        if add <= 0:
            return
        errors = (upto_errors - start_errors) * add / (upto_judged - start_judged)
        self.learned = (self.learned[0] + add, self.learned[1] + errors)
        count = self.base[0] + self.learned[0]
        self.reference_rate = (self.base[1] + self.learned[1]) / count
        self.reference_count = count
        if count >= REFRESH_GROWTH * self.refreshed_count:
            self.refreshed_count = count
            old = self.bank
            self._set_threshold()
            self.bank.statistic[:] = old.statistic
            self.bank.run_length[:] = old.run_length

    def _sequential(
        self,
        e: np.ndarray,
        rows: np.ndarray,
        seq: list[int],
        ts: list[int],
        event_ids: list[str],
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
    ) -> None:
        if self.river is not None:
            self._river(e, rows, seq, ts, event_ids, signals, reports, self._design()[0])
            return
        k = len(self.designs)
        stats = np.repeat(e[:, None], k, axis=1)
        stamps = np.asarray(ts, dtype=np.int64)[rows]
        latched = int(self.bank.latched.sum())
        alarms = self.bank.update(stats, np.ones((len(e), k), dtype=bool), stamps)

        def where(alarm: Alarm) -> tuple[int, int, str, int]:
            row = int(rows[alarm.row])
            first = int(rows[max(alarm.row - max(alarm.run_length, 1) + 1, 0)])
            started = ts[first] if alarm.first_stamp is None else alarm.first_stamp
            return seq[row], ts[row], event_ids[row], started

        self._bank_alarms(alarms, latched, where, signals, reports)

    def _bank_alarms(
        self,
        alarms: list[Alarm],
        latched: int,
        where: Callable[[Alarm], tuple[int, int, str, int]],
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
    ) -> None:
        """The bank's alarms as signals and recoveries (``latched``: its latched columns
        before the update); ``where`` gives an alarm's position, event time, event id
        and the event time its run started."""
        # The bank watches one quantity: the first of its CUSUMs to alarm speaks for it,
        # and it has recovered when the last latched one has.
        test = "concept_drift::cusum_error_rate"
        for alarm in alarms:
            at, stamp, event_id, first_ts = where(alarm)
            p0 = float(self.nulls[alarm.column])
            p1 = float(self.designs[alarm.column])
            latched += -1 if alarm.recovered else 1
            if alarm.recovered and latched == 0:
                reports.append(
                    Recovery(
                        at,
                        "concept_drift",
                        None,
                        "cusum_error_rate",
                        stamp,
                        alarm.run_length,
                        test,
                    )
                )
            if alarm.recovered or latched > 1:
                continue
            one, zero = (float(v) for v in bernoulli_llr_terms(np.array(p0), np.array(p1)))
            run = max(alarm.run_length, 1)
            rate = bernoulli_rate(alarm.statistic / run, one, zero)
            signals.append(
                Signal(
                    seq=at,
                    kind="concept_drift",
                    feature=None,
                    detector="cusum_error_rate",
                    statistic="cusum_llr",
                    value=round(alarm.statistic, 6),
                    threshold=round(float(self.bank.thresholds[alarm.column]), 6),
                    p_value=None,
                    effect=round(rate - float(self.reference_rate or 0.0), 6),
                    effect_unit="error_rate_increase",
                    strength=round(alarm.statistic / run, 6),
                    ts=stamp,
                    event_id=event_id,
                    first_ts=first_ts,
                    count=run,
                    config={
                        "reference_error_rate": round(p0, 6),
                        "design_error_rate": round(p1, 6),
                        "false_alarm_arl": self.arl,
                    },
                    extra={
                        "task": self.task,
                        "error_rate": round(rate, 6),
                        "reference_error_rate": round(float(self.reference_rate or 0.0), 6),
                        "reference_standard_error": round(self._steps()[1], 6),
                        "reference_upper_bound": round(p0, 6),
                    },
                    test=test,
                )
            )

    def note_sums(self, task: str, tolerance: float | None) -> None:
        """The input stage judged this version's summed labels by ``task`` and
        ``tolerance`` (its profile's performance figure): `update_sums` reads them only
        where they match this monitor's own."""
        self.sums_rule = (task, tolerance)

    def update_sums(
        self, found: Sequence[SummedLabels]
    ) -> tuple[list[Signal], list[WindowReport | Recovery]]:
        """Feed labels summed by the input stage (`detectors.intake.labelsums`), in
        order. The bank takes a row's count of errors as one step (its increment is
        exactly its labels', so it can alarm later than on the labels, never earlier),
        a window closes at the first row that fills it (it may hold more than
        ``label_window_events``), and the reference learns at the steps its count
        crosses. Labels judged by this monitor's task and tolerance only (`note_sums`):
        others, and any before the reference is known, are counted as skipped."""
        signals: list[Signal] = []
        reports: list[WindowReport | Recovery] = []
        if self.reference_rate is None:
            found = self._warm_sums(found)
        if not found:
            return signals, reports
        judged_here = (self.task, self.tolerance) == self.sums_rule
        if not self.ready or not judged_here or self.river is not None:
            self.skipped += sum(row.labels for row in found)
            return signals, reports
        k = len(self.designs)
        n = np.array([row.labels for row in found], dtype=np.int64)
        errors = np.array([row.errors for row in found], dtype=np.float64)
        stamps = np.array([row.ts for row in found], dtype=np.int64)
        latched = int(self.bank.latched.sum())
        alarms = self.bank.update(
            np.repeat(errors[:, None], k, axis=1),
            np.repeat(n[:, None].astype(np.float64), k, axis=1),
            stamps,
            events=n,
        )

        def where(alarm: Alarm) -> tuple[int, int, str, int]:
            row = found[alarm.row]
            started = row.ts if alarm.first_stamp is None else alarm.first_stamp
            return row.seq, row.ts, row.event_id, started

        self._bank_alarms(alarms, latched, where, signals, reports)
        size = self.settings.label_window_events
        for count, wrong, at, stamp, event_id in found:
            before = self.judged
            self.judged += count
            self.cum_errors += wrong
            if self.judged // REFERENCE_STEP > before // REFERENCE_STEP:
                self._learn()
            if self.window_first_ts is None:
                self.window_first_ts = stamp
            self.window_errors += wrong
            self.window_n += count
            if self.window_n >= size:
                self._close_window(at, stamp, event_id, signals, reports)
        return signals, reports

    def _river(
        self,
        e: np.ndarray,
        rows: np.ndarray,
        seq: list[int],
        ts: list[int],
        event_ids: list[str],
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
        p0: float,
    ) -> None:
        assert self.river is not None
        name = self.river.name
        test = f"concept_drift::river_{name}"
        for alarm in self.river.update(e):
            row = int(rows[alarm.row])
            if alarm.recovered:
                reports.append(
                    Recovery(
                        seq[row],
                        "concept_drift",
                        None,
                        f"river_{name}",
                        ts[row],
                        alarm.run_length,
                        test,
                    )
                )
                continue
            rate = alarm.statistic
            first = int(rows[max(alarm.row - alarm.run_length + 1, 0)])
            signals.append(
                Signal(
                    seq=seq[row],
                    kind="concept_drift",
                    feature=None,
                    detector=f"river_{name}",
                    statistic="recent_error_rate",
                    value=round(rate, 6),
                    threshold=round(p0, 6),
                    p_value=None,
                    effect=round(rate - float(self.reference_rate or 0.0), 6),
                    effect_unit="error_rate_increase",
                    strength=round(rate - p0, 6),
                    ts=ts[row],
                    event_id=event_ids[row],
                    first_ts=ts[first],
                    count=alarm.run_length,
                    config={
                        "river_detector": name,
                        **self.river.params,
                        "false_alarm_arl": self.arl,
                        "reference_error_rate": round(p0, 6),
                    },
                    extra={
                        "task": self.task,
                        "error_rate": round(rate, 6),
                        "reference_error_rate": round(float(self.reference_rate or 0.0), 6),
                        "reference_upper_bound": round(p0, 6),
                    },
                    test=test,
                )
            )

    def _warm(self, predictions: list[Any], labels: list[Any]) -> int:
        """Gather the label warm-up from the first labels; how many of these it took."""
        need = self.settings.label_warmup_events - len(self.warmup)
        take = list(zip(predictions[:need], labels[:need], strict=True))
        self.warmup.extend((p, y) for p, y in take if y is not None)
        if len(self.warmup) >= self.settings.label_warmup_events:
            preds, labels = split_pairs(self.warmup)
            summary = performance_summary(preds, labels, self.settings)
            if summary is not None:
                self.task = summary.task
                self.tolerance = summary.residual_tolerance
                self.reference_rate = summary.error_rate
                self.reference_count = summary.count
                self.base = (summary.count, summary.error_rate * summary.count)
                self.refreshed_count = summary.count
                self._set_threshold()
            elif infer_task(preds, labels) is None:
                self.warmup.clear()
            self.warmup = []
        return len(take)

    def _warm_sums(self, found: Sequence[SummedLabels]) -> Sequence[SummedLabels]:
        """The label warm-up from sums (a monitor without an offline figure whose labels
        the input stage sums: its profile reached the input stage first): rows are taken
        whole until ``label_warmup_events`` labels, whose error rate is the reference as
        `performance_summary` gives it, judged by the sums' rule (`note_sums`); the rows
        after them."""
        need = self.settings.label_warmup_events
        for i, row in enumerate(found):
            self.warm_sums[0] += row.labels
            self.warm_sums[1] += row.errors
            if self.warm_sums[0] >= need:
                count, wrong = self.warm_sums
                self.task, self.tolerance = self.sums_rule
                self.reference_rate = (wrong + 0.5) / (count + 1.0)
                self.reference_count = count
                self.base = (count, self.reference_rate * count)
                self.refreshed_count = count
                self.warm_sums = [0, 0]
                self._set_threshold()
                return found[i + 1 :]
        return []

    def _windows(
        self,
        e: np.ndarray,
        rows: np.ndarray,
        seq: list[int],
        ts: list[int],
        event_ids: list[str],
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
    ) -> None:
        size = self.settings.label_window_events
        pos = 0
        while pos < len(e):
            take = min(len(e) - pos, size - self.window_n)
            if self.window_first_ts is None:
                self.window_first_ts = ts[int(rows[pos])]
            self.window_errors += int(e[pos : pos + take].sum())
            self.window_n += take
            pos += take
            if self.window_n == size:
                row = int(rows[pos - 1])
                self._close_window(seq[row], ts[row], event_ids[row], signals, reports)

    def _close_window(
        self,
        seq: int,
        ts: int,
        event_id: str,
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
    ) -> None:
        p0, _ = self._design()
        offline_rate = float(self.reference_rate or 0.0)
        n = self.window_n
        rate = self.window_errors / n
        se = math.sqrt(max(p0 * (1 - p0), 1e-9) / n)
        p_value = float(norm.sf((rate - p0) / se))
        gap = rate - p0
        alpha = self.settings.label_window_events / (self.arl or 1.0)
        drifted = gap >= self.settings.accuracy_gap_floor and p_value < 1e-3
        reports.append(WindowReport(seq, "concept_drift", drifted, ts))
        if self.offline and gap >= self.settings.accuracy_gap_floor and p_value < alpha:
            signals.append(
                Signal(
                    seq=seq,
                    kind="online_offline_gap",
                    feature=None,
                    detector="window_error_rate",
                    statistic="z_error_rate",
                    value=round((rate - p0) / se, 6),
                    threshold=round(float(norm.isf(alpha)), 6),
                    p_value=p_value,
                    effect=round(gap, 6),
                    effect_unit="error_rate_increase",
                    strength=round(gap, 6),
                    ts=ts,
                    event_id=event_id,
                    first_ts=int(self.window_first_ts or ts),
                    count=n,
                    config={
                        "label_window_events": n,
                        "gap_floor": self.settings.accuracy_gap_floor,
                        "alpha": alpha,
                    },
                    extra={
                        "online_error_rate": round(rate, 6),
                        "offline_error_rate": round(offline_rate, 6),
                        "offline_upper_bound": round(p0, 6),
                        "offline_count": self.reference_count,
                    },
                )
            )
        self.window_n = 0
        self.window_errors = 0
        self.window_first_ts = None

    def state(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tolerance": self.tolerance,
            "reference_rate": self.reference_rate,
            "reference_count": self.reference_count,
            "warmup": [[to_wire(p), y] for p, y in self.warmup],
            "warm_sums": self.warm_sums,
            "sums_rule": list(self.sums_rule),
            "learning": {
                "judged": self.judged,
                "cum_errors": self.cum_errors,
                "marks": self.marks,
                "learned": list(self.learned),
                "base": list(self.base),
                "refreshed_count": self.refreshed_count,
            },
            "bank": self.bank.state(),
            "river": None if self.river is None else self.river.state(),
            "arl": self.arl,
            "window": [self.window_n, self.window_errors, self.window_first_ts],
            "skipped": self.skipped,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.task = state["task"]
        self.tolerance = state["tolerance"]
        self.reference_rate = state["reference_rate"]
        self.reference_count = state["reference_count"]
        self.warmup = [(from_wire(p), y) for p, y in state["warmup"]]
        self.warm_sums = list(state.get("warm_sums", [0, 0]))
        task, tolerance = state.get("sums_rule", ("binary", None))  # before: binary sums only
        self.sums_rule = (task, tolerance)
        learning = state.get("learning")
        if learning is not None:
            self.judged = learning["judged"]
            self.cum_errors = learning["cum_errors"]
            self.marks = [(int(a), int(b)) for a, b in learning["marks"]]
            self.learned = (learning["learned"][0], learning["learned"][1])
            self.base = (learning["base"][0], learning["base"][1])
            self.refreshed_count = learning["refreshed_count"]
        else:
            self.base = (self.reference_count, (self.reference_rate or 0.0) * self.reference_count)
            self.refreshed_count = self.reference_count
        self.arl = state["arl"]
        if self.arl is not None:
            self.calibrate(self.arl)
        self.bank.restore(state["bank"])
        if self.river is not None and state.get("river"):
            self.river.restore(state["river"])
        self.window_n, self.window_errors, self.window_first_ts = state["window"]
        self.skipped = state["skipped"]
