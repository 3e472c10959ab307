"""A bank of one-sided CUSUM tests on log-likelihood-ratio increments, updated in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Alarm:
    """One CUSUM crossing its threshold."""

    row: int
    """Index in the batch of the event that crossed."""
    column: int
    """Which test of the bank."""
    statistic: float
    """The CUSUM statistic at the crossing (log-likelihood ratio units)."""
    run_length: int
    """Events since the statistic last stood at zero: the estimated age of the change (for
    a recovery: events since the alarm it ends)."""
    recovered: bool = False
    """A latched test's reverse CUSUM crossing: the quantity is back at the reference."""
    first_stamp: int | None = None
    """The stamp (event time) of the first event of the run, when the bank was given
    stamps: exact however the events were batched, where ``row - run_length + 1`` may lie
    in an earlier batch."""


def gaussian_threshold(arl: float, kl: float) -> float:
    """CUSUM threshold for an average run length ``arl`` under the null.

    Siegmund's approximation, ``ARL0 ~ exp(h) / KL`` with ``KL`` the design alternative's
    information per event, without its overshoot correction (which would lower ``h``
    further). Derived for Gaussian increments; ``benchmarks/calibration.py`` measures it
    on every test family here (Bernoulli tests included) at budgets where false alarms are
    frequent enough to count.

    >>> round(gaussian_threshold(1e9, 0.045), 2)
    17.62
    """
    return max(math.log(arl * kl), 1.0)


def bernoulli_kl(p1: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """Kullback-Leibler divergence of Bernoulli(p1) from Bernoulli(p0), per event.

    >>> round(float(bernoulli_kl(np.array([0.3]), np.array([0.15]))[0]), 4)
    0.072
    """
    return p1 * np.log(p1 / p0) + (1 - p1) * np.log((1 - p1) / (1 - p0))


def wald_threshold(arl: float) -> float:
    """CUSUM threshold with ``ARL0 >= exp(h)`` for exact likelihood ratios (Wald's bound).

    Used for Bernoulli tests, whose jumpy increments the Gaussian approximation misjudges.

    >>> round(wald_threshold(1e9), 2)
    20.72
    """
    return math.log(arl)


class CusumBank:
    """``m`` one-sided CUSUMs ``S_t = max(0, S_{t-1} + llr_t)``.

    A batch is processed with cumulative sums (``S_t = C_t - min(0, min_j C_j)``), so the
    result is exactly that of one event at a time, whatever the batch boundaries. After an
    alarm the test restarts from zero at the next event.

    Examples
    --------
    >>> bank = CusumBank(np.array([5.0]))
    >>> llr = np.concatenate([np.full(10, -0.5), np.full(10, 1.0)])[:, None]
    >>> [(a.row, a.run_length) for a in bank.update(llr)]
    [(15, 6)]
    """

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.statistic = np.zeros(len(self.thresholds))
        self.run_length = np.zeros(len(self.thresholds), dtype=np.int64)

    def update(self, llr: np.ndarray) -> list[Alarm]:
        """Feed ``llr`` of shape (n_events, m); return the alarms in event order."""
        n = llr.shape[0]
        if n == 0:
            return []
        cusum = self.statistic + np.cumsum(llr, axis=0)
        stat = cusum - np.minimum(np.minimum.accumulate(cusum, axis=0), 0.0)
        alarms: list[Alarm] = []
        crossed = np.flatnonzero((stat > self.thresholds).any(axis=0))
        for col in crossed:
            alarms.extend(self._resolve_column(int(col), llr[:, col], stat[:, col]))
        at_zero = stat == 0.0
        any_zero = at_zero.any(axis=0)
        last_zero = n - 1 - np.argmax(at_zero[::-1], axis=0)
        self.run_length = np.where(any_zero, n - 1 - last_zero, self.run_length + n)
        self.statistic = stat[-1].copy()
        alarms.sort(key=lambda a: (a.row, a.column))
        return alarms

    def _resolve_column(self, col: int, llr: np.ndarray, stat: np.ndarray) -> list[Alarm]:
        """Walk one column's crossings, restarting after each; rewrites ``stat`` in place."""
        alarms: list[Alarm] = []
        start = 0
        prior_run = int(self.run_length[col])
        threshold = self.thresholds[col]
        while True:
            above = np.flatnonzero(stat[start:] > threshold)
            if len(above) == 0:
                return alarms
            row = start + int(above[0])
            zeros = np.flatnonzero(stat[start : row + 1] == 0.0)
            run = row - (start + int(zeros[-1])) if len(zeros) else prior_run + row - start + 1
            alarms.append(Alarm(row, col, float(stat[row]), run))
            stat[row] = 0.0
            prior_run = 0
            start = row + 1
            if start >= len(stat):
                return alarms
            tail = np.cumsum(llr[start:])
            stat[start:] = tail - np.minimum(np.minimum.accumulate(tail), 0.0)

    def state(self) -> dict[str, Any]:
        """JSON-compatible state."""
        return {"statistic": self.statistic.tolist(), "run_length": self.run_length.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        """Load what `state` returned."""
        self.statistic = np.asarray(state["statistic"], dtype=np.float64)
        self.run_length = np.asarray(state["run_length"], dtype=np.int64)
