"""Shared machinery of a monitored channel: sequential tests plus tumbling window tests.

A channel is a group of features of one kind (numeric inputs, categorical inputs, the
prediction). Subclasses supply log-likelihood-ratio increments for their sequential tests
and histogram counts for their window tests; this class calibrates, batches, and turns
crossings into `Signal` objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2

from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta, Recovery, Signal, WindowReport
from driftline.detectors.stats.cusum import Alarm
from driftline.detectors.stats.latch import LatchingBank


@dataclass(frozen=True, slots=True)
class TestSpec:
    """Static description of one sequential test column."""

    kind: str
    feature: str
    detector: str
    design: dict[str, Any]


@dataclass(slots=True)
class OpenSlice:
    """What a channel has summed of the slice of event time it has not tested yet
    (`Channel.update` with slices)."""

    index: int
    """The slice: event time // ``slice_ms``."""
    first_ts: int
    """Earliest event time in it (dates a run that starts with it)."""
    last_ts: int
    """Latest event time in it (dates what it triggers)."""
    t: np.ndarray
    """Per test column, the sum of the statistic over the events that count."""
    counted: np.ndarray
    """Per test column, the events that count."""
    events: int
    counts: Any
    """Histogram counts, as the window's."""
    bad: np.ndarray
    """Invalid values per feature."""


NEVER = 2**62
"""Event time of no event: a slice with nothing summed starts after it and ends before."""


def _add_part(into: OpenSlice, part: OpenSlice) -> None:
    """A part of a slice summed elsewhere, added to the open slice."""
    into.t = into.t + part.t
    into.counted = into.counted + part.counted
    into.events += part.events
    into.first_ts = min(into.first_ts, part.first_ts)
    into.last_ts = max(into.last_ts, part.last_ts)
    if isinstance(into.counts, list):
        into.counts = [a + b for a, b in zip(into.counts, part.counts, strict=True)]
    else:
        into.counts = into.counts + part.counts
    into.bad = into.bad + part.bad


def slice_state(part: OpenSlice) -> dict[str, Any]:
    """A slice as JSON-compatible values (checkpoints, the summaries topic)."""
    return {
        "index": part.index,
        "first_ts": part.first_ts,
        "last_ts": part.last_ts,
        "t": part.t.tolist(),
        "counted": part.counted.tolist(),
        "events": part.events,
        "counts": [np.asarray(c).tolist() for c in part.counts],
        "bad": part.bad.tolist(),
    }


def slice_from_state(found: dict[str, Any]) -> OpenSlice:
    """Inverse of `slice_state`, the histogram counts a list of arrays (one per feature:
    what adding the slice to another needs; `Channel.slice_from_state` shapes them as
    the channel's own)."""
    return OpenSlice(
        found["index"],
        found["first_ts"],
        found["last_ts"],
        np.asarray(found["t"], dtype=np.float64),
        np.asarray(found["counted"], dtype=np.float64),
        found["events"],
        [np.asarray(c, dtype=np.float64) for c in found["counts"]],
        np.asarray(found["bad"], dtype=np.float64),
    )


def histogram_test(counts: np.ndarray, ref_probs: np.ndarray) -> tuple[float, float, float]:
    """G-test and PSI of observed bin ``counts`` against reference bin probabilities.

    Returns ``(psi, g, p_value)``. Bins are smoothed by half an event so empty bins do not
    make PSI infinite.

    >>> psi, g, p = histogram_test(np.array([50, 50]), np.array([0.5, 0.5]))
    >>> round(psi, 6), round(p, 3)
    (0.0, 1.0)
    """
    n = counts.sum()
    if n == 0:
        return 0.0, 0.0, 1.0
    expected = n * ref_probs
    nz = counts > 0
    g = float(2.0 * np.sum(counts[nz] * np.log(counts[nz] / expected[nz])))
    k = len(counts)
    observed = (counts + 0.5) / (n + 0.5 * k)
    psi = float(np.sum((observed - ref_probs) * np.log(observed / ref_probs)))
    p = float(chi2.sf(max(g, 0.0), k - 1))
    return psi, g, p


class Channel(ABC):
    """Sequential CUSUM tests and window histogram tests over a group of features."""

    def __init__(self, kind: str, settings: DetectorSettings) -> None:
        self.kind = kind
        self.settings = settings
        self.specs: list[TestSpec] = self._specs()
        self.test_ids = [
            f"{s.kind}:{s.feature}:{s.detector}:{sorted(s.design.items())}" for s in self.specs
        ]
        self.bank = LatchingBank(*self._columns())
        self.window_alpha = 0.0
        self.window_count = 0
        self.window_first_ts: int | None = None
        self.window_counts = self._empty_counts()
        self.last_window_counts: Any = None
        """Histogram counts of the last closed window (for display; not checkpointed)."""
        self.window_bad = np.zeros(len(self.feature_names))
        self.open: OpenSlice | None = None
        """The slice being summed (`update_slices`); None per event or before the first."""

    # -- what subclasses provide -------------------------------------------------------

    @property
    @abstractmethod
    def feature_names(self) -> list[str]: ...

    @abstractmethod
    def _specs(self) -> list[TestSpec]: ...

    @abstractmethod
    def _thresholds(self, arl: float) -> np.ndarray: ...

    @abstractmethod
    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per test column: family (`detectors.stats.latch`), reference value, design value."""

    @abstractmethod
    def _stats(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per event and column: the family's sufficient statistic, and whether it counts."""

    @abstractmethod
    def _empty_counts(self) -> list[np.ndarray]: ...

    @abstractmethod
    def _add_counts(self, data: Any, into: Any = None) -> None:
        """Add the histogram counts of ``data`` to the window's, or to ``into``."""

    @abstractmethod
    def _bad(self, data: Any) -> np.ndarray: ...

    @abstractmethod
    def _ref_probs(self, feature: int) -> np.ndarray: ...

    @abstractmethod
    def _effect(self, spec: TestSpec, mean_llr: float) -> tuple[float, str, dict[str, Any]]: ...

    @abstractmethod
    def _slice(self, data: Any, start: int, stop: int) -> Any: ...

    def _other_alarms(self, data: Any) -> list[Alarm]:
        """Alarms of tests outside the bank (River's detectors, `detectors.drift.river_bridge`),
        whose columns follow the bank's in ``specs``."""
        return []

    def _other_signal(self, alarm: Alarm, meta: BatchMeta) -> Signal:
        raise NotImplementedError

    @property
    def summable(self) -> bool:
        """Whether every test of the channel can take slices of events summed (River's
        detectors take one event at a time)."""
        return True

    # -- shared ------------------------------------------------------------------------

    @property
    def n_tests(self) -> int:
        """Sequential tests plus one window test per feature (for the budget split)."""
        return len(self.specs) + len(self.feature_names)

    def calibrate(self, arl_per_test: float) -> None:
        """Set thresholds so each test false-alarms once per ``arl_per_test`` events."""
        self.bank.calibrate(self._thresholds(arl_per_test), arl_per_test)
        self.window_alpha = self.settings.window_events / arl_per_test

    def update(
        self, data: Any, meta: BatchMeta, slices: np.ndarray | None = None
    ) -> tuple[list[Signal], list[WindowReport | Recovery]]:
        """Feed a batch; window boundaries fall on the same events whatever the batching.

        A sequential test that alarms latches until its quantity is back at the reference
        (`detectors.stats.latch`); its return is reported as a `Recovery` among the reports.
        With ``slices`` (the slice of event time of each event), the tests run per slice
        instead (`update_slices`).
        """
        if slices is not None:
            return self.update_slices(data, meta, slices)
        signals: list[Signal] = []
        reports: list[WindowReport | Recovery] = []
        n = len(meta)
        pos = 0
        window = self.settings.window_events
        while pos < n:
            take = min(n - pos, window - self.window_count)
            part = self._slice(data, pos, pos + take)
            part_meta = meta.slice(pos, pos + take)
            if self.window_first_ts is None:
                self.window_first_ts = int(part_meta.ts[0])
            alarms = self.bank.update(*self._stats(part), part_meta.ts) + self._other_alarms(part)
            alarms.sort(key=lambda a: a.row)
            for alarm in alarms:
                if alarm.recovered:
                    reports.append(self._recovery(alarm, part_meta))
                else:
                    signals.append(self._sequential_signal(alarm, part_meta))
            self._add_counts(part)
            self.window_bad += self._bad(part).sum(axis=0)
            self.window_count += take
            pos += take
            if self.window_count == window:
                closed_signals, report = self._close_window(part_meta)
                signals.extend(closed_signals)
                reports.append(report)
        return signals, reports

    def update_slices(
        self,
        data: Any,
        meta: BatchMeta,
        slices: np.ndarray,
        partials: Sequence[tuple[int, int, OpenSlice]] = (),
    ) -> tuple[list[Signal], list[WindowReport | Recovery]]:
        """Feed a batch whose events fall in ``slices`` (event time // ``slice_ms``): the
        sequential tests take one row per slice, the sums of its events (`LatchingBank`),
        so their cost is per slice, not per event. ``partials`` are slices (or parts of
        slices) summed elsewhere, as ``(position, seq, part)``: the part comes before
        event ``position`` of the batch, at merge position ``seq``.

        A slice is tested when an event or part of a later slice arrives; an event or part
        of a slice already tested joins the open one. A slice's signals are dated at its
        last event and name no event (the slice triggered them, wherever it was summed).
        Window tests close at the end of the first slice that fills them. What was summed
        of the open slice is kept across batches (and in the state), added in event order,
        so where batches end changes nothing.
        """
        n = len(meta)
        if n:
            t, ok, bad = self.summed_stats(data)
            k = np.asarray(slices, dtype=np.int64)
        rows: list[tuple[OpenSlice, int]] = []  # slices done, and the seq that closed each
        done = 0
        for position, seq, part in [*partials, (n, -1, None)]:
            if position > done:
                self._sum_events(data, meta, t, ok, bad, k, done, position, rows)
                done = position
            if part is None:
                break
            if self.open is None or part.index > self.open.index:
                if self.open is not None:
                    rows.append((self.open, seq))
                self.open = self.empty_slice(part.index)
            _add_part(self.open, part)
        if not rows:
            return [], []
        closing = BatchMeta(
            np.array([seq for _, seq in rows], dtype=np.int64),
            np.array([row.last_ts for row, _ in rows], dtype=np.int64),
            [None] * len(rows),
        )
        alarms = self.bank.update(
            np.array([r.t for r, _ in rows]),
            np.array([r.counted for r, _ in rows]),
            np.array([r.first_ts for r, _ in rows], dtype=np.int64),
            np.array([r.events for r, _ in rows], dtype=np.int64),
        )
        signals: list[Signal] = []
        reports: list[WindowReport | Recovery] = []
        by_row: dict[int, list[Alarm]] = {}
        for alarm in alarms:
            by_row.setdefault(alarm.row, []).append(alarm)
        for i, (row, _) in enumerate(rows):
            for alarm in by_row.get(i, ()):
                if alarm.recovered:
                    reports.append(self._recovery(alarm, closing))
                else:
                    signals.append(self._sequential_signal(alarm, closing))
            if self.window_first_ts is None:
                self.window_first_ts = row.first_ts
            self._add_window(row)
            if self.window_count >= self.settings.window_events:
                closed_signals, report = self._close_window(closing.slice(i, i + 1))
                signals.extend(closed_signals)
                reports.append(report)
        return signals, reports

    def _sum_events(
        self,
        data: Any,
        meta: BatchMeta,
        t: np.ndarray,
        ok: np.ndarray,
        bad: np.ndarray,
        k: np.ndarray,
        start: int,
        stop: int,
        rows: list[tuple[OpenSlice, int]],
    ) -> None:
        """Events ``start:stop`` of a batch into the open slice, closing it (into
        ``rows``) at each event of a later slice."""
        opened = self.open.index if self.open is not None else int(k[start])
        part = k[start:stop]
        before = np.maximum.accumulate(np.r_[opened, part[:-1]])
        cuts = start + np.flatnonzero(part > before)
        for j, (first, end) in enumerate(zip(np.r_[start, cuts], np.r_[cuts, stop], strict=True)):
            if self.open is None or j > 0:  # an event of a later slice: the open one is done
                if self.open is not None:
                    rows.append((self.open, int(meta.seq[first])))
                self.open = self.empty_slice(int(k[first]))
            if end > first:
                self.sum_into(self.open, data, meta.ts, t, ok, bad, int(first), int(end))

    def empty_slice(self, index: int) -> OpenSlice:
        """Slice ``index`` with nothing summed."""
        m = len(self.bank.thresholds)
        return OpenSlice(
            index,
            NEVER,
            -NEVER,
            np.zeros(m),
            np.zeros(m),
            0,
            self._empty_counts(),
            np.zeros(len(self.feature_names)),
        )

    def sum_into(
        self,
        into: OpenSlice,
        data: Any,
        ts: np.ndarray,
        t: np.ndarray,
        ok: np.ndarray,
        bad: np.ndarray,
        start: int,
        stop: int,
    ) -> None:
        """Add events ``start:stop`` of a batch to a slice, in event order (cumulative sums
        from what the slice holds: the same additions however the batches were cut);
        ``t`` is zero where ``ok`` is not (`_stats`)."""
        into.t = np.cumsum(np.vstack([into.t, t[start:stop]]), axis=0)[-1]
        into.counted = into.counted + ok[start:stop].sum(axis=0)
        into.events += stop - start
        into.first_ts = min(into.first_ts, int(ts[start:stop].min()))
        into.last_ts = max(into.last_ts, int(ts[start:stop].max()))
        into.bad = into.bad + bad[start:stop].sum(axis=0)
        self._add_counts(self._slice(data, start, stop), into.counts)

    def summed_stats(self, data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a slice sums of a batch: the tests' statistics (zero where an event does
        not count), whether each counts, and the invalid values (`sum_into`)."""
        t, ok = self._stats(data)
        return np.where(ok, t, 0.0), ok, self._bad(data)

    def sum_all(self, into: OpenSlice, data: Any, ts: np.ndarray) -> None:
        """Add a whole batch of events (event times ``ts``) to a slice."""
        if len(ts):
            self.sum_into(into, data, ts, *self.summed_stats(data), 0, len(ts))

    def slice_from_state(self, found: dict[str, Any]) -> OpenSlice:
        """A slice this channel sums into, from `slice_state`."""
        part = slice_from_state(found)
        part.counts = self._shaped(part.counts)
        return part

    def _shaped(self, counts: Any) -> Any:
        """Histogram counts read back, in the layout of `_empty_counts` (one array for
        the numeric channel, where a list would be extended by ``+=``, not added to)."""
        empty = self._empty_counts()
        found = [np.asarray(c, dtype=np.float64) for c in counts]
        return found if isinstance(empty, list) else np.array(found).reshape(empty.shape)

    def _add_window(self, row: OpenSlice) -> None:
        """A tested slice's histogram counts and invalid values join the window."""
        if isinstance(self.window_counts, list):
            for f, part in enumerate(row.counts):
                self.window_counts[f] += part
        else:
            self.window_counts += row.counts
        self.window_bad += row.bad
        self.window_count += row.events

    def _sequential_signal(self, alarm: Alarm, meta: BatchMeta) -> Signal:
        if alarm.column >= len(self.bank.thresholds):
            return self._other_signal(alarm, meta)
        spec = self.specs[alarm.column]
        run = max(alarm.run_length, 1)
        mean_llr = alarm.statistic / run
        effect, unit, extra = self._effect(spec, mean_llr)
        start_row = max(alarm.row - run + 1, 0)
        return Signal(
            seq=int(meta.seq[alarm.row]),
            kind=spec.kind,
            feature=spec.feature,
            detector=spec.detector,
            statistic="cusum_llr",
            value=round(alarm.statistic, 6),
            threshold=round(float(self.bank.thresholds[alarm.column]), 6),
            p_value=None,
            effect=round(effect, 6),
            effect_unit=unit,
            strength=round(mean_llr, 6),
            ts=int(meta.ts[alarm.row]),
            event_id=meta.event_ids[alarm.row],
            first_ts=int(meta.ts[start_row]) if alarm.first_stamp is None else alarm.first_stamp,
            count=run,
            config={**spec.design, "false_alarm_arl": _arl_from(self)},
            extra=extra,
            test=self.test_ids[alarm.column],
        )

    def _recovery(self, alarm: Alarm, meta: BatchMeta) -> Recovery:
        spec = self.specs[alarm.column]
        return Recovery(
            seq=int(meta.seq[alarm.row]),
            kind=spec.kind,
            feature=spec.feature,
            detector=spec.detector,
            ts=int(meta.ts[alarm.row]),
            count=alarm.run_length,
            test=self.test_ids[alarm.column],
        )

    def _close_window(self, meta: BatchMeta) -> tuple[list[Signal], WindowReport]:
        signals = []
        drifted = False
        last = len(meta) - 1
        for f, name in enumerate(self.feature_names):
            counts = self.window_counts[f]
            psi, g, p = histogram_test(counts, self._ref_probs(f))
            over_floor = psi >= self.settings.psi_floor
            drifted = drifted or (over_floor and p < max(self.window_alpha, 1e-3))
            if over_floor and p < self.window_alpha:
                signals.append(
                    Signal(
                        seq=int(meta.seq[last]),
                        kind=self.kind,
                        feature=name,
                        detector="window_psi",
                        statistic="g_test",
                        value=round(g, 6),
                        threshold=round(float(chi2.isf(self.window_alpha, len(counts) - 1)), 6),
                        p_value=p,
                        effect=round(psi, 6),
                        effect_unit="psi",
                        strength=round(psi, 6),
                        ts=int(meta.ts[last]),
                        event_id=meta.event_ids[last],
                        first_ts=int(self.window_first_ts or meta.ts[0]),
                        count=self.window_count,
                        config={
                            "window_events": self.settings.window_events,
                            "psi_floor": self.settings.psi_floor,
                            "alpha": self.window_alpha,
                            "bins": len(counts),
                        },
                        extra={
                            "invalid_rate": round(float(self.window_bad[f]) / self.window_count, 6)
                        },
                    )
                )
        report = WindowReport(int(meta.seq[last]), self.kind, drifted, int(meta.ts[last]))
        self.last_window_counts = self.window_counts
        self.window_count = 0
        self.window_first_ts = None
        self.window_counts = self._empty_counts()
        self.window_bad = np.zeros(len(self.feature_names))
        return signals, report

    def distribution(self, feature: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A feature's reference bin shares and its current histogram counts (the open
        window once it holds half a window, else the last closed one); None when the
        channel does not monitor it."""
        if feature not in self.feature_names:
            return None
        f = self.feature_names.index(feature)
        counts = self.window_counts[f]
        if self.window_count < self.settings.window_events // 2 and (
            self.last_window_counts is not None
        ):
            counts = self.last_window_counts[f]
        return self._ref_probs(f), np.asarray(counts, np.float64)

    def state(self) -> dict[str, Any]:
        return {
            "bank": self.bank.state(),
            "window_count": self.window_count,
            "window_first_ts": self.window_first_ts,
            "window_counts": [c.tolist() for c in self.window_counts],
            "window_bad": self.window_bad.tolist(),
            "open": None if self.open is None else slice_state(self.open),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.bank.restore(state["bank"])
        self.window_count = state["window_count"]
        self.window_first_ts = state["window_first_ts"]
        self.window_counts = self._shaped(state["window_counts"])
        self.window_bad = np.asarray(state["window_bad"], dtype=np.float64)
        found = state.get("open")
        self.open = None if found is None else self.slice_from_state(found)


def _arl_from(channel: Channel) -> float:
    alpha = channel.window_alpha
    return round(channel.settings.window_events / alpha) if alpha > 0 else 0.0


def bernoulli_llr_terms(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-event log-likelihood ratios of a 1 and of a 0 for Bernoulli ``p1`` vs ``p0``."""
    return np.log(p1 / p0), np.log((1.0 - p1) / (1.0 - p0))


def bernoulli_rate(mean_llr: float, one: float, zero: float) -> float:
    """The event rate implied by an average log-likelihood ratio per event."""
    if one == zero:
        return 0.0
    return min(max((mean_llr - zero) / (one - zero), 0.0), 1.0)


def rate_band(p: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """``(upper, lower)`` edges of a rate's normal confidence band, ``z`` standard errors
    from estimates ``p`` over ``n`` reference events (kept inside (0, 1)).

    >>> hi, lo = rate_band(np.array([0.05]), np.array([10_000.0]), 2.0)
    >>> round(float(hi[0]), 4), round(float(lo[0]), 4)
    (0.0544, 0.0456)
    """
    se = np.sqrt(p * (1 - p) / np.maximum(n, 1.0))
    return np.minimum(p + z * se, 0.99), np.maximum(p - z * se, p / 4)
