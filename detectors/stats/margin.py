"""How far a test's null should stand from an estimated reference, and what threshold that
null needs: the reference's own sampling error spent inside the false-alarm budget.

A sequential test against a reference estimated from ``n`` events does not know the true
reference: the true rate is ``estimate + delta`` with ``delta`` of about one standard error.
Testing from the estimate itself is fast but, when the true value lies towards the change,
the test's null drift shrinks and its false alarms multiply (a CUSUM's run length falls from
``exp(h)`` to about ``exp(theta h)``, ``theta < 1``). Testing from a fixed edge of the
confidence band (``estimate + z se``) is safe but costs every change the band's width: on a
rise of 6.6 points from a 0.28 error rate (River's SEA, labels 500-5,000 events late), a
2-se margin of 0.45 points made the delay 19 % longer than the margins chosen here (8,464
predictions against 7,114), while holding false alarms at a fifth of the budget.

Here each test column gets the margin and threshold that keep its *expected* false-alarm
rate, averaged over the reference's sampling error (``delta ~ N(0, se^2)``), at the rate the
calibration promises for an exactly known reference, and among those the pair that detects
the column's design change soonest. A large design tolerates a reference that is a little
off (its null drift hardly changes) and takes no margin and a slightly higher threshold; a
design close to the reference's own noise takes a margin. Run lengths come from Siegmund's
Brownian approximation of a CUSUM, used only for *ratios* to the exactly-known case, so the
thresholds stay anchored to the calibration that `benchmarks/calibration.py` measures.
"""

from __future__ import annotations

import numpy as np

from driftline.detectors.stats.cusum import gaussian_threshold
from driftline.detectors.stats.latch import BERNOULLI, GAUSS_MEAN, kl_divergence, llr_terms

Z_GRID = np.arange(0.0, 3.01, 0.25)
"""Margins tried, in standard errors of the reference."""

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(41)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
_EDGE = 1e-6


def _moments(family: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the sufficient statistic under parameter ``theta``."""
    rate = family == BERNOULLI
    mean = theta.copy()
    var = np.where(rate, theta * (1 - theta), np.where(family == GAUSS_MEAN, 1.0, 2 * theta**2))
    return mean, var


def alarm_rate(
    family: np.ndarray,
    null: np.ndarray,
    design: np.ndarray,
    theta: np.ndarray,
    h: np.ndarray,
) -> np.ndarray:
    """Alarms per event of a CUSUM (``null`` vs ``design``, threshold ``h``) when the true
    parameter is ``theta``: the inverse of Siegmund's Brownian run length
    ``ARL = v / (2 m^2) (exp(-2 m h / v) - 1 + 2 m h / v)`` for an increment of mean ``m``
    and variance ``v`` (``h / m`` above the break-even point, ``exp(theta h)`` below it).

    >>> fam = np.array([GAUSS_MEAN])
    >>> r0 = alarm_rate(fam, np.array([0.0]), np.array([0.3]), np.array([0.0]), np.array([15.0]))
    >>> r1 = alarm_rate(fam, np.array([0.0]), np.array([0.3]), np.array([0.3]), np.array([15.0]))
    >>> bool(r0[0] < 1e-7), round(1 / float(r1[0]))
    (True, 311)
    """
    a, b = llr_terms(family, design, null)
    mean, var = _moments(family, theta)
    m = a * mean + b
    v = np.maximum(a * a * var, 1e-300)
    k = 2.0 * m * h / v
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        small = np.abs(k) < 1e-6
        body = np.expm1(np.minimum(-k, 700.0)) + k
        arl = np.where(small, h * h / v, v / (2.0 * m * m) * body)
    return 1.0 / np.maximum(arl, 1.0)


def calibrated_nulls(
    family: np.ndarray,
    estimate: np.ndarray,
    se: np.ndarray,
    step: np.ndarray,
    arl: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: ``(null, design, threshold)`` with the null ``z`` standard errors from
    ``estimate`` towards the change (``step``, signed, added to the null to give the
    design; a variance family's step is a ratio) and the threshold that keeps the expected
    false-alarm rate over ``delta ~ N(0, se^2)`` at the calibrated rate of an exact
    reference; ``z`` (on `Z_GRID`) is the one that detects a change of ``step`` from the
    estimate soonest.

    An exact reference (``se = 0``) gets no margin and the usual threshold; one estimated
    from 45,000 labels (``se`` 0.21 points at a 0.28 error rate) a margin of about one
    standard error for a rise of 1.75 points, and none for one of 28:

    >>> fam = np.full(3, BERNOULLI)
    >>> null, design, h = calibrated_nulls(
    ...     fam, np.full(3, 0.28), np.array([0.0, 0.0021, 0.0021]),
    ...     np.array([0.0175, 0.0175, 0.28]), 1e9)
    >>> [round(float(z), 2) for z in (null - 0.28) / 0.0021]
    [0.0, 1.25, 0.0]
    """
    family = np.asarray(family, dtype=np.int64)
    estimate = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    step = np.asarray(step, dtype=np.float64)
    grid = Z_GRID
    c, g, q = len(family), len(grid), len(_NODES)
    var_family = ~((family == BERNOULLI) | (family == GAUSS_MEAN))
    up = np.where(var_family, step >= 1.0, step >= 0.0)
    sign = np.where(up, 1.0, -1.0)
    # (g, c): null and design for every margin on the grid
    rate = family == BERNOULLI
    null = estimate[None, :] + sign[None, :] * grid[:, None] * se[None, :]
    # A rate's null stays at or below 0.99 and its design at or below 0.999, so a design
    # rise always has room (a model that is wrong nearly always has nothing to detect).
    null = np.where(rate, np.minimum(_clip(family, null), 0.99), null)
    design = np.where(var_family, null * step, null + step)
    design = np.where(rate, np.minimum(_clip(family, design), 0.999), _clip(family, design))
    fam = np.broadcast_to(family, (g, c))
    kl = np.maximum(kl_divergence(fam.ravel(), design.ravel(), null.ravel()), 1e-12)
    kl = kl.reshape(g, c)
    h_nominal = np.array([gaussian_threshold(arl, k) for k in kl.ravel()]).reshape(g, c)
    target = alarm_rate(fam.ravel(), null.ravel(), design.ravel(), null.ravel(), h_nominal.ravel())
    # Expected rate over the reference's error, by quadrature; solve for h by bisection.
    theta = _clip(family, estimate[None, :] + _NODES[:, None] * se[None, :])  # (q, c)
    big = (g, q, c)
    fam3 = np.broadcast_to(family, big).ravel()
    null3 = np.broadcast_to(null[:, None, :], big).ravel()
    design3 = np.broadcast_to(design[:, None, :], big).ravel()
    theta3 = np.broadcast_to(theta[None, :, :], big).ravel()
    # Never below the threshold of an exact reference: a margin buys safety, and the
    # Brownian model is trusted for how much a reference error costs, not for how much a
    # margin would allow a threshold to be lowered.
    low = h_nominal.copy()
    high = h_nominal + 40.0
    for _ in range(40):
        mid = (low + high) / 2
        h3 = np.broadcast_to(mid[:, None, :], big).ravel()
        rates = alarm_rate(fam3, null3, design3, theta3, h3).reshape(big)
        too_many = (rates * _WEIGHTS[None, :, None]).sum(axis=1) > target.reshape(g, c)
        low = np.where(too_many, mid, low)
        high = np.where(too_many, high, mid)
    h = high
    # The change each column is for, measured from the estimate: its detection time.
    alt = _clip(family, np.where(var_family, estimate * step, estimate + step))
    delay = 1.0 / alarm_rate(
        fam.ravel(), null.ravel(), design.ravel(), np.broadcast_to(alt, (g, c)).ravel(), h.ravel()
    ).reshape(g, c)
    best = np.argmin(delay, axis=0)
    cols = np.arange(c)
    return null[best, cols], design[best, cols], h[best, cols]


def _clip(family: np.ndarray, theta: np.ndarray) -> np.ndarray:
    rate = np.broadcast_to(family == BERNOULLI, theta.shape)
    var = np.broadcast_to(~((family == BERNOULLI) | (family == GAUSS_MEAN)), theta.shape)
    out = np.where(rate, np.clip(theta, _EDGE, 1 - _EDGE), theta)
    return np.where(var, np.maximum(out, _EDGE), out)


__all__ = ["Z_GRID", "alarm_rate", "calibrated_nulls"]
