"""Margins against an estimated reference: the budget holds on average over the reference's
own sampling error, and a rise is found sooner than from a fixed 2-se edge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.detectors.stats.cusum import CusumBank, bernoulli_kl, gaussian_threshold
from driftline.detectors.stats.latch import BERNOULLI, GAUSS_MEAN, llr_terms
from driftline.detectors.stats.margin import calibrated_nulls

P = 0.28
STEPS = 0.07 * 2.0 ** (2 - np.arange(5))
"""The concept bank's rises at a 0.28 error rate."""
FAMILY = np.full(len(STEPS), BERNOULLI)


def fixed(estimate: float, se: float, z: float, arl: float) -> tuple[np.ndarray, ...]:
    null = np.full(len(STEPS), estimate + z * se)
    design = np.minimum(null + STEPS, 0.999)
    h = np.array([gaussian_threshold(arl, k) for k in bernoulli_kl(design, null)])
    return null, design, h


def alarms(x: np.ndarray, null: np.ndarray, design: np.ndarray, h: np.ndarray) -> np.ndarray:
    a, b = llr_terms(FAMILY, design, null)
    return np.bincount(
        [alarm.column for alarm in CusumBank(h).update(x[:, None] * a + b)], minlength=len(h)
    )


def realised_over_nominal(rule: str, n_ref: int, arl: float, seed: int) -> np.ndarray:
    """Per test, alarms per event on in-control streams over many references drawn from
    ``n_ref`` events each, as a multiple of the nominal ``1 / arl``."""
    rng = np.random.default_rng(seed)
    count, events = np.zeros(len(STEPS)), 0
    for _ in range(40):
        estimate = rng.binomial(n_ref, P) / n_ref
        se = math.sqrt(estimate * (1 - estimate) / n_ref)
        if rule == "calibrated":
            null, design, h = calibrated_nulls(
                FAMILY, np.full(5, estimate), np.full(5, se), STEPS, arl
            )
        else:
            null, design, h = fixed(estimate, se, {"z0": 0.0, "z2": 2.0}[rule], arl)
        x = (rng.random(100_000) < P).astype(np.float64)
        count += alarms(x, null, design, h)
        events += len(x)
    return count / events * arl


def test_the_calibrated_margin_keeps_the_budget_where_no_margin_breaks_it() -> None:
    """A reference of 5,000 labels: testing from the estimate itself false-alarms well
    above the budget (the tests whose rise is near the estimate's noise most); the
    calibrated margins keep the average at the budget, a fixed 2-se edge far below it."""
    arl = 2e4
    calibrated = realised_over_nominal("calibrated", 5_000, arl, seed=3)
    bare = realised_over_nominal("z0", 5_000, arl, seed=3)
    wide = realised_over_nominal("z2", 5_000, arl, seed=3)
    print("calibrated", calibrated, "bare", bare, "wide", wide)
    assert calibrated.mean() <= 1.0
    assert bare.mean() > 1.1 * calibrated.mean()
    assert bare[-1] > 1.3  # the smallest rise, nearest the estimate's noise
    assert wide.mean() < 0.5 * calibrated.mean()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_rise_is_found_sooner_than_from_a_two_se_edge(seed: int) -> None:
    """A rise of 6.6 points against a reference of 45,000 labels at the default budget."""
    rng = np.random.default_rng(seed)
    n_ref, arl = 45_000, 1e9
    estimate = rng.binomial(n_ref, P) / n_ref
    se = math.sqrt(estimate * (1 - estimate) / n_ref)
    x = (rng.random(30_000) < P + 0.066).astype(np.float64)

    def first(null: np.ndarray, design: np.ndarray, h: np.ndarray) -> int:
        a, b = llr_terms(FAMILY, design, null)
        found = CusumBank(h).update(x[:, None] * a + b)
        assert found, "the rise was not detected"
        return found[0].row

    calibrated = first(*calibrated_nulls(FAMILY, np.full(5, estimate), np.full(5, se), STEPS, arl))
    wide = first(*fixed(estimate, se, 2.0, arl))
    assert calibrated < wide


def test_an_exact_reference_gets_no_margin_and_the_usual_threshold() -> None:
    null, design, h = calibrated_nulls(FAMILY, np.full(5, P), np.zeros(5), STEPS, 1e9)
    assert np.allclose(null, P)
    assert np.allclose(design, np.minimum(P + STEPS, 0.999))
    assert np.allclose(h, fixed(P, 0.0, 0.0, 1e9)[2])


def test_a_mean_design_far_above_the_reference_noise_takes_little_margin() -> None:
    """A 0.3 sd design against 10,000 reference events (se 0.01 sd): half a standard
    error at most, and the usual threshold."""
    null, design, h = calibrated_nulls(
        np.array([GAUSS_MEAN, GAUSS_MEAN]),
        np.zeros(2),
        np.array([0.01, 0.01]),
        np.array([0.3, -0.3]),
        1e9,
    )
    assert np.all(np.abs(null) <= 0.005 + 1e-12)
    assert np.allclose(design - null, [0.3, -0.3])
    assert np.allclose(h, gaussian_threshold(1e9, 0.045), atol=0.05)


@pytest.mark.parametrize("estimate", [0.0, 0.5, 0.995, 1.0])
def test_rates_at_the_edges_get_a_design_above_the_null_and_a_finite_threshold(
    estimate: float,
) -> None:
    """A reference with no errors, or with nothing but errors, still gives tests whose
    design lies above their null (so an llr exists) and finite thresholds."""
    se = math.sqrt(max(estimate * (1 - estimate), 1 / 5_000) / 5_000)
    null, design, h = calibrated_nulls(FAMILY, np.full(5, estimate), np.full(5, se), STEPS, 1e9)
    assert np.all(design > null)
    assert np.all((null > 0) & (design < 1))
    assert np.all(np.isfinite(h) & (h >= 1.0))
