"""Onset scans: false alarms within their budget on stationary series, and changes found
at the time scale they move at."""

from __future__ import annotations

import numpy as np

from driftline.detectors.stats.onset import (
    dispersion,
    log_level_rise,
    pooled_log_split,
    proportion_rise,
    scales,
    simpson,
    threshold,
)


def overdispersed(rng: np.random.Generator, buckets: int, n: int, p: float) -> np.ndarray:
    """Counts whose proportion wanders from bucket to bucket (beta-binomial, about four
    times the binomial variance at these sizes)."""
    shares = rng.beta(p * 300, (1 - p) * 300, buckets)
    return rng.binomial(n, shares)


def test_proportion_scan_false_alarms_within_its_budget_on_wandering_shares() -> None:
    """On 2,000 stationary series of 200 buckets whose shares wander beyond binomial
    noise, the scan over every scale exceeds the threshold of a 1 % budget in at most
    about 1 % of the series (the dispersion estimate absorbs the extra noise)."""
    rng = np.random.default_rng(7)
    lengths = scales(200)
    z = threshold(0.01, len(lengths))
    n = np.full(200, 400)
    alarms = 0
    for _ in range(2_000):
        x = overdispersed(rng, 200, 400, 0.25)
        found = proportion_rise(x, n, lengths)
        alarms += max(s.z for s in found if s is not None) >= z
    assert alarms <= 2_000 * 0.015, alarms


def test_binomial_variance_alone_would_false_alarm_on_the_same_series() -> None:
    """The same wandering series tested as if binomial (the dispersion taken out of z)
    exceed the threshold far more often: the dispersion term is what keeps the budget."""
    rng = np.random.default_rng(7)
    lengths = scales(200)
    z = threshold(0.01, len(lengths))
    n = np.full(200, 400)
    alarms = 0
    for _ in range(500):
        x = overdispersed(rng, 200, 400, 0.25)
        phi = dispersion(x, n)
        found = proportion_rise(x, n, lengths)
        alarms += max(s.z * np.sqrt(phi) for s in found if s is not None) >= z
    assert alarms > 500 * 0.05, alarms


def test_a_daily_staircase_is_found_at_hourly_buckets() -> None:
    """A share that steps up 2 points once a day (a daily retrain) and is flat within the
    day: at hourly buckets the scan finds it within three days of the first step, never
    before it, and never on the same series without the steps."""
    rng = np.random.default_rng(3)
    hours = 24 * 8
    n = np.full(hours, 250)
    day = np.arange(hours) // 24
    for start in (0, 1, 2):
        p = 0.3 + 0.02 * np.maximum(day - 2, 0)
        x = rng.binomial(n, p)
        flat = rng.binomial(n, np.full(hours, 0.3))
        first = None
        for t in range(10, hours):
            lengths = scales(t)
            z = threshold(1e-4, 10 * len(lengths))
            found = [s for s in proportion_rise(x[:t], n[:t], lengths) if s is not None]
            best = max(found, key=lambda s: s.z)
            if best.z >= z and first is None:
                first = t
            quiet = [s for s in proportion_rise(flat[:t], n[:t], lengths) if s is not None]
            assert max(s.z for s in quiet) < z, (start, t)
        assert first is not None and 24 * 3 < first <= 24 * 6, (start, first)


def test_simpson_is_unbiased_on_a_few_draws() -> None:
    """Thirty draws over 60 items: the mean estimate is the true concentration within
    2 %, and the stated variance matches the spread of the estimates within 15 %."""
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.full(60, 3.0))
    true = float((p**2).sum())
    found = [simpson(rng.multinomial(30, p).astype(float)) for _ in range(20_000)]
    estimates = np.array([d for d, _ in found])
    stated = float(np.mean([v for _, v in found]))
    assert abs(estimates.mean() / true - 1) < 0.02
    assert abs(stated / estimates.var() - 1) < 0.15


def test_pooled_concentration_change_is_standard_normal_without_a_change() -> None:
    """Before and after windows from the same distribution: z has mean ~0 and sd ~1."""
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.full(200, 2.0))
    zs = np.array(
        [
            pooled_log_split(
                rng.multinomial(2_000, p).astype(float), rng.multinomial(300, p).astype(float)
            ).z  # type: ignore[union-attr]
            for _ in range(3_000)
        ]
    )
    assert abs(zs.mean()) < 0.1
    assert 0.85 < zs.std() < 1.15


def test_a_concentration_rise_is_found_and_a_flat_one_is_not() -> None:
    """Per-bucket concentration rising 4 % an hour is found within a few hours of its
    start; the same noise without the rise stays below the threshold."""
    rng = np.random.default_rng(2)
    base = np.full(48, 0.02)
    rising = base * np.where(np.arange(48) < 24, 1.0, 1.04 ** (np.arange(48) - 23))
    noise = rng.normal(0, 0.0008, 48)
    variances = np.full(48, 0.0008**2)
    lengths = scales(30)
    z = threshold(1e-4, len(lengths))
    assert max(s.z for s in log_level_rise((rising + noise)[:30], variances[:30], lengths)) >= z
    lengths = scales(48)
    assert max(s.z for s in log_level_rise(base + noise, variances, lengths)) < z
