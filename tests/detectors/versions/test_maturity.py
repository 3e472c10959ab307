"""Label maturity and cohorts (`detectors.versions.maturity`)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.detectors.versions.maturity import (
    COHORT_MS,
    LOG_DELAY_BINS,
    MAX_PENDING,
    OTHER,
    PART_VALUES,
    Cohorts,
    LabelMaturity,
)

HOUR_S = 3_600.0
DAY_MS = 86_400_000


def outcome_ordered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels: repayments (0) an hour after the prediction, defaults (1) a day
    and an hour later (log10 seconds, with a little spread)."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, n).astype(float)
    seconds = np.where(classes == 1, HOUR_S + 86_400.0, HOUR_S) * rng.uniform(0.9, 1.1, n)
    return classes, np.log10(seconds)


def test_outcome_dependent_delays_give_a_horizon_past_the_late_outcome() -> None:
    maturity = LabelMaturity(quantile=0.95, min_labels=30)
    classes, delays = outcome_ordered(400, seed=3)
    maturity.observe(classes, delays)
    assert maturity.outcome_dependent()
    horizon = maturity.horizon_ms()
    assert horizon is not None
    assert DAY_MS < horizon < 1.3 * (DAY_MS + HOUR_S * 1000)


def test_no_horizon_until_both_outcomes_have_enough_labels() -> None:
    """Only repayments so far (the defaults are still on their way): not known, rather
    than the repayments' short horizon."""
    maturity = LabelMaturity(quantile=0.95, min_labels=30)
    maturity.observe(np.zeros(500), np.full(500, np.log10(HOUR_S)))
    assert maturity.horizon_ms() is None
    maturity.observe(np.ones(29), np.full(29, np.log10(HOUR_S + 86_400.0)))
    assert maturity.horizon_ms() is None
    maturity.observe(np.ones(1), np.full(1, np.log10(HOUR_S + 86_400.0)))
    assert maturity.horizon_ms() is not None


def test_a_horizon_longer_than_half_the_time_watched_is_not_trusted() -> None:
    """Delays of up to a day seen in a stream watched for a day and a half: longer ones
    could not have been seen yet, so the horizon is not known until two days passed."""
    maturity = LabelMaturity(quantile=0.95, min_labels=30)
    classes, delays = outcome_ordered(400, seed=4)
    start = 1_700_000_000_000
    maturity.observe(classes, delays, np.array([start]), np.array([start + DAY_MS * 3 // 2]))
    assert maturity.horizon_ms() is None
    maturity.observe(classes[:0], delays[:0], None, np.array([start + 3 * DAY_MS]))
    assert maturity.horizon_ms() is not None


def test_labels_that_are_not_binary_always_wait_and_unknown_delays_are_ignored() -> None:
    maturity = LabelMaturity(quantile=0.9, min_labels=10)
    delays = np.log10(np.full(50, 600.0))  # ten minutes
    maturity.observe(np.full(50, np.nan), np.r_[delays[:40], np.full(10, np.nan)])
    assert int(maturity.histograms["*"].sum()) == 40
    assert not maturity.binary
    assert maturity.horizon_ms() == pytest.approx(600_000, rel=0.13)


def test_the_maturity_survives_its_state() -> None:
    maturity = LabelMaturity(quantile=0.95, min_labels=30)
    classes, delays = outcome_ordered(400, seed=5)
    maturity.observe(classes, delays, np.array([0]), np.array([10 * DAY_MS]))
    restored = LabelMaturity(quantile=0.95, min_labels=30)
    restored.restore(maturity.state())
    assert restored.horizon_ms() == maturity.horizon_ms()
    assert restored.delay_distance() == maturity.delay_distance()


def test_cohorts_are_released_whole_once_their_minute_is_past_the_horizon() -> None:
    """A minute's sums are added up across calls and released once the labels' event
    time has passed its end by the horizon, oldest first; nothing without a horizon."""
    cohorts = Cohorts()
    horizon = 10 * COHORT_MS
    cohorts.add("v1", 0, 2, 1.0, 1.0, [1, 30_000, "a"])
    cohorts.add("v1", 0, 3, 2.0, 2.0, [2, 50_000, "b"])
    cohorts.add("v2", COHORT_MS, 1, 1.0, 1.0, [3, 70_000, "c"])
    assert cohorts.release(None) == []
    assert cohorts.release(horizon) == []  # label time 70 s: nothing is 10 minutes behind
    cohorts.add("v1", 12 * COHORT_MS, 1, 0.0, 0.0, [4, 12 * COHORT_MS + 5, "d"])
    released = cohorts.release(horizon)
    assert [(start, version, c.n, c.total, c.last[0]) for start, version, c in released] == [
        (0, "v1", 5, 3.0, 2),
        (COHORT_MS, "v2", 1, 1.0, 3),
    ]
    assert cohorts.forced == 0
    assert list(cohorts.pending) == [("v1", 12 * COHORT_MS)] and cohorts.values == 1


def test_held_cohorts_are_bounded_and_a_dropped_version_is_forgotten() -> None:
    cohorts = Cohorts()
    for minute in range(MAX_PENDING + 5):
        cohorts.add("v1", minute * COHORT_MS, 1, 1.0, 1.0, [minute, minute * COHORT_MS, ""])
    cohorts.add("v2", 0, 3, 1.0, 1.0, [0, 0, ""])
    assert cohorts.values == MAX_PENDING + 8
    cohorts.drop("v2")
    released = cohorts.release(None)  # no horizon known: only what is over the bound
    assert [start for start, _, _ in released] == [m * COHORT_MS for m in range(5)]
    assert cohorts.forced == 5 and len(cohorts.pending) == MAX_PENDING == cohorts.values
    restored = Cohorts()
    restored.restore(cohorts.state())
    assert restored.pending == cohorts.pending and restored.forced == 5
    assert restored.values == MAX_PENDING


@pytest.mark.parametrize("seed", [1, 2])
def test_a_held_cohort_keeps_its_parts_in_order_and_bounded(seed: int) -> None:
    """Sums of 1 to 40 values added to one minute: the parts add up to the cohort and
    keep the order of what was added (each part's last is the last added to it), every
    part but the last holds at least `PART_VALUES` values, and their number grows with
    the log of the values beyond the first thousands (not with the adds); the parts
    survive the state. Without ``parts`` none are kept."""
    rng = np.random.default_rng(seed)
    cohorts, plain = Cohorts(parts=True), Cohorts()
    sizes = rng.integers(1, 41, 20_000)
    for i, n in enumerate(sizes.tolist()):
        for held in (cohorts, plain):
            held.add("v1", 0, n, n / 4, n / 4, [i, 1_000 + i, f"o{i}"])
    cohort = cohorts.pending[("v1", 0)]
    assert sum(p[0] for p in cohort.parts) == cohort.n == sizes.sum()
    assert sum(p[1] for p in cohort.parts) == pytest.approx(cohort.total)
    assert all(p[0] >= PART_VALUES for p in cohort.parts[:-1])
    order = [p[2][0] for p in cohort.parts]
    assert order == sorted(order) and order[-1] == len(sizes) - 1
    assert len(cohort.parts) <= 32 * np.log(cohort.n) + cohort.n // PART_VALUES // 8
    assert len(cohort.parts) < len(sizes) // 50
    restored = Cohorts(parts=True)
    restored.restore(orjson.loads(orjson.dumps(cohorts.state())))  # as a checkpoint
    assert restored.pending == cohorts.pending
    assert plain.pending[("v1", 0)].parts == []


def test_counted_delays_of_labels_that_are_not_binary_have_no_classes() -> None:
    """Delays counted by the input stage for labels that are not 0 or 1 (`OTHER`) are
    learnt together, as `observe` learns a NaN class: the horizon is their quantile,
    and the maturity does not wait for two binary outcomes."""
    counted, observed = LabelMaturity(0.95, 30), LabelMaturity(0.95, 30)
    log_delays = np.log10(np.random.default_rng(3).uniform(5.0, 50.0, 500))
    observed.observe(np.full(500, np.nan), log_delays)
    bins = np.minimum(np.searchsorted(LOG_DELAY_BINS, log_delays, "right"), len(LOG_DELAY_BINS) - 1)
    values, counts = np.unique(bins, return_counts=True)
    rows = [[OTHER, int(b), int(c)] for b, c in zip(values, counts, strict=True)]
    counted.observe_counts(rows, 0, DAY_MS)  # watched far longer than twice the horizon
    assert not counted.binary and counted.horizon_ms() == observed.horizon_ms() > 0


def test_a_cohort_restored_from_before_extra_sums_keeps_none() -> None:
    """A held cohort from a checkpoint written before cohorts kept extra sums (rows of 7
    fields) takes more values without them, so a reader never sees sums that cover only
    part of its values; a new cohort keeps them. One from before parts has its values as
    one part."""
    old = Cohorts(parts=True)
    row = ["v1", 0, 4, 1.0, 1.0, [1, 10, "a"], [[4, 1.0, [1, 10, "a"]]]]  # parts, no extra
    old.restore({"watermark": 0, "forced": 0, "pending": [row]})
    old.add("v1", 0, 2, 1.0, 1.0, [2, 20, "b"], (2, 0.5, 0.2, 1.0, 0.6))
    old.add("v2", 0, 2, 0.0, 0.0, [3, 30, "c"], (2, 0.5, 0.2, 1.0, 0.6))
    assert old.pending[("v1", 0)].n == 6 and old.pending[("v1", 0)].extra == []
    assert old.pending[("v2", 0)].extra == [2, 0.5, 0.2, 1.0, 0.6]
    # From before parts too (rows of 6 fields): what it held is its first part, so its
    # parts still add up to it.
    older = Cohorts(parts=True)
    older.restore({"watermark": 0, "forced": 0, "pending": [row[:6]]})
    older.add("v1", 0, 2, 1.0, 1.0, [2, 20, "b"], (2, 0.5, 0.2, 1.0, 0.6))
    held = older.pending[("v1", 0)]
    assert sum(p[0] for p in held.parts) == held.n == 6
