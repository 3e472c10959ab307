"""Sequential tests that latch: after an alarm, a test watches for its quantity's return.

A plain CUSUM restarts after an alarm and, on a change that persists, alarms again and
again. Here a column that alarms *latches*: its forward test stops and a reverse CUSUM
starts, testing "still changed" (a level halfway between the reference and the change the
alarm estimated) against "back at the reference". Only when the reverse test crosses does
the column unlatch and its forward test start again from zero, so one persistent change is
one alarm, and a change that returns after a real recovery is a new one.

Every column is a one-parameter exponential family observed through a sufficient
statistic ``t`` (``llr = a * t + b``): a Gaussian mean (``t`` a normal score), a Gaussian
variance (``t`` a squared score) or a Bernoulli rate (``t`` a 0/1 indicator). That is what
lets the reverse test be built, at the alarm, from the alarm's own estimate of the change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.stats.cusum import Alarm, bernoulli_kl, gaussian_threshold

GAUSS_MEAN, GAUSS_VAR, BERNOULLI = range(3)
"""Column families: the mean of unit-variance scores, the variance of zero-mean scores
(the parameter is the variance), and the rate of a 0/1 indicator."""

HALF_CHANGE_FLOOR = 0.5
"""The change an alarm is taken to have found is at least half the design change (the
run's mean overshoots and undershoots; below half the design the forward test would not
have crossed at the speed it did)."""

HALF_CHANGE_CAP = 3.0
"""...and at most three design changes, so one wild run cannot make recovery unreachable."""

_RATE_EDGE = 1e-6

NEXT = -(2**62)
"""Run start of a column whose statistic stands at zero: its run starts with the next
event."""


def llr_terms(
    family: np.ndarray, theta1: np.ndarray, theta0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` with ``log f(t; theta1) / f(t; theta0) = a * t + b`` per column.

    >>> a, b = llr_terms(np.array([GAUSS_MEAN]), np.array([0.3]), np.array([0.0]))
    >>> float(a[0]), round(float(b[0]), 3)
    (0.3, -0.045)
    """
    family = np.asarray(family)
    t1 = np.asarray(theta1, dtype=np.float64)
    t0 = np.asarray(theta0, dtype=np.float64)
    mean = family == GAUSS_MEAN
    var = family == GAUSS_VAR
    a = np.zeros(len(family))
    b = np.zeros(len(family))
    a[mean] = t1[mean] - t0[mean]
    b[mean] = -(t1[mean] ** 2 - t0[mean] ** 2) / 2
    a[var] = 0.5 * (1 / t0[var] - 1 / t1[var])
    b[var] = -0.5 * np.log(t1[var] / t0[var])
    rate = ~(mean | var)
    p1, p0 = t1[rate], t0[rate]
    b[rate] = np.log((1 - p1) / (1 - p0))
    a[rate] = np.log(p1 / p0) - b[rate]
    return a, b


def kl_divergence(family: np.ndarray, theta1: np.ndarray, theta0: np.ndarray) -> np.ndarray:
    """``KL(f(theta1) || f(theta0))`` per column: the expected llr per event under theta1."""
    family = np.asarray(family)
    t1 = np.asarray(theta1, dtype=np.float64)
    t0 = np.asarray(theta0, dtype=np.float64)
    out = np.empty(len(family))
    mean = family == GAUSS_MEAN
    var = family == GAUSS_VAR
    rate = ~(mean | var)
    out[mean] = (t1[mean] - t0[mean]) ** 2 / 2
    ratio = t1[var] / t0[var]
    out[var] = 0.5 * (ratio - 1 - np.log(ratio))
    out[rate] = bernoulli_kl(t1[rate], t0[rate])
    return out


class LatchingBank:
    """``m`` one-sided CUSUMs on ``a * t + b`` that latch at an alarm until their quantity
    returns to the reference.

    Results are exactly those of one event at a time, whatever the batch boundaries.

    Examples
    --------
    A mean shift of one sd that lasts 300 events is one alarm and, once the scores are back
    at the reference, one recovery:

    >>> bank = LatchingBank(np.array([GAUSS_MEAN]), np.array([0.0]), np.array([0.5]))
    >>> bank.calibrate(np.array([8.0]), arl=1e5)
    >>> t = np.r_[np.zeros(100), np.ones(300), np.zeros(400)][:, None]
    >>> [(c.row, c.recovered) for c in bank.update(t, np.ones_like(t, dtype=bool))]
    [(121, False), (475, True)]
    """

    def __init__(self, family: np.ndarray, null: np.ndarray, design: np.ndarray) -> None:
        self.family = np.asarray(family, dtype=np.int64)
        self.null = np.asarray(null, dtype=np.float64)
        self.design = np.asarray(design, dtype=np.float64)
        self.a, self.b = llr_terms(self.family, self.design, self.null)
        m = len(self.family)
        self.thresholds = np.zeros(m)
        """Forward thresholds."""
        self.arl = 1.0
        self.statistic = np.zeros(m)
        """Forward statistic (zero while latched)."""
        self.run_length = np.zeros(m, dtype=np.int64)
        self.latched = np.zeros(m, dtype=bool)
        self.rev_a = np.zeros(m)
        self.rev_b = np.zeros(m)
        self.rev_threshold = np.full(m, np.inf)
        self.rev_statistic = np.zeros(m)
        self.rev_level = np.zeros(m)
        """The "still changed" level each latched column's reverse test is designed for."""
        self.since_latch = np.zeros(m, dtype=np.int64)
        self.run_start = np.full(m, NEXT, dtype=np.int64)
        """Stamp of the first event of each forward run (`NEXT`: the next event's)."""

    def calibrate(self, thresholds: np.ndarray, arl: float) -> None:
        """Forward thresholds, and the per-test ``arl`` that reverse thresholds derive from."""
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.arl = float(arl)
        for col in np.flatnonzero(self.latched):
            self.rev_threshold[col] = self._reverse_threshold(int(col))

    def ratios(self) -> np.ndarray:
        """Forward statistic over threshold per column; 1 for a latched column (in alarm)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(self.thresholds > 0, self.statistic / self.thresholds, 0.0)
        return np.where(self.latched, 1.0, r)

    def estimate(self, column: int, mean_llr: float) -> float:
        """The parameter value whose expected forward llr is ``mean_llr``."""
        return float((mean_llr - self.b[column]) / self.a[column])

    def latch(self, column: int, estimate: float) -> None:
        """Latch ``column`` as if its forward test had alarmed having estimated the
        parameter at ``estimate`` (for detectors outside the bank that use its recovery)."""
        self._latch(column, float(self.a[column] * estimate + self.b[column]))

    def update(
        self,
        t: np.ndarray,
        valid: np.ndarray,
        stamps: np.ndarray | None = None,
        events: np.ndarray | None = None,
    ) -> list[Alarm]:
        """Feed statistics ``t`` (n_rows, m), ``valid`` marking the events that count;
        ``stamps`` (n_rows,), the events' times, date each alarm's run
        (`Alarm.first_stamp`).

        A row is one event, or, with ``events`` (n_rows,) giving how many events each row
        holds, a *slice* of events summed: ``t`` the sums of the statistic over the
        events that count and ``valid`` (float) how many counted. A slice's increment,
        ``a * sum(t) + b * count``, is exactly the sum of its events' increments, so a
        statistic standing above zero through a slice ends it where the events would
        have; where the events' path would have touched zero inside, the slice's ends
        lower. Slices can therefore delay an alarm or miss one that falls back within a
        slice, never add one. Run lengths count events; an alarm's row is the slice's.
        """
        n = t.shape[0]
        if n == 0:
            return []
        dated = stamps is not None
        if stamps is None:
            stamps = np.zeros(n, dtype=np.int64)
        # Events up to and including each row.
        ends = np.arange(1, n + 1) if events is None else np.cumsum(events, dtype=np.int64)
        total = int(ends[-1])
        latched = self.latched
        a = np.where(latched, self.rev_a, self.a)
        b = np.where(latched, self.rev_b, self.b)
        llr = _increments(a, b, t, valid, events is not None)
        start = np.where(latched, self.rev_statistic, self.statistic)
        threshold = np.where(latched, self.rev_threshold, self.thresholds)
        path = _cusum(start, llr)
        crossed = (path > threshold).any(axis=0)
        quiet = ~crossed
        forward = quiet & ~latched
        backward = quiet & latched
        at_zero = path == 0.0
        any_zero = at_zero.any(axis=0)
        last_zero = n - 1 - np.argmax(at_zero[::-1], axis=0)
        runs = np.where(any_zero, total - ends[last_zero], self.run_length + total)
        self.statistic[forward] = path[-1, forward]
        self.run_length[forward] = runs[forward]
        after = last_zero + 1
        started = np.where(after < n, stamps[np.minimum(after, n - 1)], NEXT)
        carried = np.where(self.run_start == NEXT, stamps[0], self.run_start)
        self.run_start[forward] = np.where(any_zero, started, carried)[forward]
        self.rev_statistic[backward] = path[-1, backward]
        self.since_latch[backward] += total
        alarms: list[Alarm] = []
        summed = events is not None
        for col in np.flatnonzero(crossed):
            alarms += self._walk(int(col), t[:, col], valid[:, col], stamps, dated, ends, summed)
        alarms.sort(key=lambda c: (c.row, c.column))
        return alarms

    def _walk(
        self,
        col: int,
        t: np.ndarray,
        valid: np.ndarray,
        stamps: np.ndarray,
        dated: bool,
        ends: np.ndarray,
        summed: bool,
    ) -> list[Alarm]:
        """One column through a batch in which it crosses, mode by mode (``dated``: the
        stamps are the caller's, and alarms say where their runs started; ``ends``:
        events up to each row; ``summed``: rows are slices, `update`)."""
        out: list[Alarm] = []
        n = len(t)
        pos = 0

        def events_in(first: int, last: int) -> int:
            """Events of rows ``first`` to ``last``, both included."""
            return int(ends[last] - (ends[first - 1] if first > 0 else 0))

        while pos < n:
            latched = bool(self.latched[col])
            if latched:
                a, b, thr, s0 = (
                    self.rev_a[col],
                    self.rev_b[col],
                    self.rev_threshold[col],
                    self.rev_statistic[col],
                )
            else:
                a, b, thr, s0 = self.a[col], self.b[col], self.thresholds[col], self.statistic[col]
            llr = _increments(a, b, t[pos:], valid[pos:], summed)
            path = _cusum(np.array([s0]), llr[:, None])[:, 0]
            above = np.flatnonzero(path > thr)
            if len(above) == 0:
                if latched:
                    self.rev_statistic[col] = path[-1]
                    self.since_latch[col] += events_in(pos, n - 1)
                else:
                    zeros = np.flatnonzero(path == 0.0)
                    self.statistic[col] = path[-1]
                    self.run_length[col] = (
                        events_in(pos + int(zeros[-1]) + 1, n - 1)
                        if len(zeros)
                        else self.run_length[col] + events_in(pos, n - 1)
                    )
                    self.run_start[col] = self._started(col, zeros, pos, stamps)
                return out
            hit = int(above[0])
            row = pos + hit
            if latched:
                since = int(self.since_latch[col]) + events_in(pos, row)
                out.append(Alarm(row, col, float(path[hit]), since, True))
                self._unlatch(col)
            else:
                zeros = np.flatnonzero(path[: hit + 1] == 0.0)
                run = (
                    events_in(pos + int(zeros[-1]) + 1, row)
                    if len(zeros)
                    else int(self.run_length[col]) + events_in(pos, row)
                )
                first = self._started(col, zeros, pos, stamps) if dated else None
                out.append(Alarm(row, col, float(path[hit]), run, first_stamp=first))
                self._latch(col, float(path[hit]) / max(run, 1))
            pos = row + 1
        return out

    def _started(self, col: int, zeros: np.ndarray, pos: int, stamps: np.ndarray) -> int:
        """The stamp a forward run walked from ``pos`` started at: after its last zero
        (``zeros``, from ``pos``), else where it stood."""
        if len(zeros):
            after = pos + int(zeros[-1]) + 1
            return int(stamps[after]) if after < len(stamps) else NEXT
        return int(stamps[pos]) if self.run_start[col] == NEXT else int(self.run_start[col])

    def _latch(self, col: int, mean_llr: float) -> None:
        theta0 = self.null[col]
        step = self.design[col] - theta0
        found = (self.estimate(col, mean_llr) - theta0) / step if step else 1.0
        half = theta0 + step * min(max(found, HALF_CHANGE_FLOOR), HALF_CHANGE_CAP) / 2
        if self.family[col] == BERNOULLI:
            half = min(max(half, _RATE_EDGE), 1 - _RATE_EDGE)
        elif self.family[col] == GAUSS_VAR:
            half = max(half, 0.05)
        fam = self.family[col : col + 1]
        a, b = llr_terms(fam, np.array([theta0]), np.array([half]))
        self.rev_a[col], self.rev_b[col] = float(a[0]), float(b[0])
        self.latched[col] = True
        self.rev_statistic[col] = 0.0
        self.since_latch[col] = 0
        self.rev_level[col] = half
        self.rev_threshold[col] = self._reverse_threshold(col)
        self.statistic[col] = 0.0
        self.run_length[col] = 0
        self.run_start[col] = NEXT

    def _reverse_threshold(self, col: int) -> float:
        fam = self.family[col : col + 1]
        half = self.rev_level[col : col + 1]
        kl = float(kl_divergence(fam, self.null[col : col + 1], half)[0])
        return gaussian_threshold(self.arl, kl)

    def _unlatch(self, col: int) -> None:
        self.latched[col] = False
        self.rev_a[col] = self.rev_b[col] = self.rev_level[col] = 0.0
        self.rev_threshold[col] = np.inf
        self.rev_statistic[col] = 0.0
        self.since_latch[col] = 0
        self.statistic[col] = 0.0
        self.run_length[col] = 0
        self.run_start[col] = NEXT

    def state(self) -> dict[str, Any]:
        """JSON-compatible state."""
        return {
            "statistic": self.statistic.tolist(),
            "run_length": self.run_length.tolist(),
            "latched": self.latched.tolist(),
            "reverse": [
                self.rev_a.tolist(),
                self.rev_b.tolist(),
                self.rev_statistic.tolist(),
                self.rev_level.tolist(),
            ],
            "since_latch": self.since_latch.tolist(),
            "run_start": self.run_start.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load what `state` returned (or a plain CUSUM bank's state: nothing latched). A
        state of another number of columns (a bank redesigned between versions) is not
        loaded: the tests start again from zero."""
        if len(state["statistic"]) != len(self.family):
            return
        self.statistic = np.asarray(state["statistic"], dtype=np.float64)
        self.run_length = np.asarray(state["run_length"], dtype=np.int64)
        m = len(self.statistic)
        self.latched = np.asarray(state.get("latched", [False] * m), dtype=bool)
        rev = state.get("reverse") or [[0.0] * m] * 4
        self.rev_a, self.rev_b, self.rev_statistic, self.rev_level = (
            np.asarray(r, dtype=np.float64) for r in rev
        )
        self.since_latch = np.asarray(state.get("since_latch", [0] * m), dtype=np.int64)
        # States before run starts were kept: a run under way is dated from the next event.
        self.run_start = np.asarray(state.get("run_start", [NEXT] * m), dtype=np.int64)
        self.rev_threshold = np.full(m, np.inf)
        for col in np.flatnonzero(self.latched):
            self.rev_threshold[col] = self._reverse_threshold(int(col))


def _increments(
    a: np.ndarray | float, b: np.ndarray | float, t: np.ndarray, valid: np.ndarray, summed: bool
) -> np.ndarray:
    """Log-likelihood-ratio increments of rows: ``a * t + b`` per event that counts, or
    ``a * sum(t) + b * count`` per slice (``summed``, `LatchingBank.update`)."""
    if summed:
        return a * t + b * valid
    return np.where(valid, a * t + b, 0.0)


def _cusum(start: np.ndarray, llr: np.ndarray) -> np.ndarray:
    """``S_t = max(0, S_{t-1} + llr_t)`` from ``start`` per column, by cumulative sums."""
    c = start + np.cumsum(llr, axis=0)
    return c - np.minimum(np.minimum.accumulate(c, axis=0), 0.0)
