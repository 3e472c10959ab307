"""Onset scans: has a level moved since some bucket, at any of several time scales?

A feedback loop moves slowly and at an unknown cadence: a share that creeps up every hour,
or a staircase that steps once a day when the model is retrained. Neither a fixed window
nor a fixed bucket size suits both, so every test here compares the last ``L`` buckets
(the *after* window) with all the buckets before them, for each ``L`` on a geometric
ladder (`scales`): a loop that moves hourly is seen at small ``L``, a daily staircase at
``L`` of a day or more, and the evidence of every bucket since the onset accumulates in
the after window instead of being thrown away by a floor on the effect.

Two shapes of series are tested:

* **proportions** from counts (a segment's share of the model's actions, the agreement
  rate of predictions with labels): pooled counts on each side, compared on the logit
  scale, with the binomial variance inflated by the series' own overdispersion
  (`dispersion`: shares wander more than binomial counts would);
* **levels** with a per-bucket sampling variance (how concentrated what the model shows
  is, `simpson`): the means on each side as a log ratio, with the noise variance the
  larger of the sampling variance and the series' own successive-difference variance
  (robust to slow trends); two such changes compare by `difference`.

Each returns one z per scale; callers combine them with other evidence at the same scale
and compare the best with a threshold from their false-alarm budget (`threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

MIN_BEFORE = 3
"""Buckets the before window needs at least: fewer give no level to compare with."""

LADDER_RATIO = 1.5
"""Growth of the after window from one scale to the next: fine enough that a change is
seen near its best window (a loss of at most ~10 % of z), coarse enough that a two-week
history holds only a dozen scales to correct for."""


@dataclass(frozen=True, slots=True)
class Scan:
    """One scale of an onset scan."""

    after: int
    """Buckets in the after window (the last ones)."""
    z: float
    """Standardised change from the before window to the after window (positive: in the
    direction tested)."""
    before: float
    """The level before (a proportion, or the mean of the levels)."""
    now: float
    """The level in the after window."""
    change: float = 0.0
    """The change on the scale tested (log odds, log ratio, level)."""
    variance: float = 0.0
    """Its variance (so changes of two series can be compared: `difference`)."""


def scales(buckets: int, min_before: int = MIN_BEFORE) -> list[int]:
    """After-window lengths tested on a history of ``buckets``: 1, 2, 3, 5, 8, 11, ... up to
    ``buckets - min_before``.

    >>> scales(20)
    [1, 2, 3, 5, 8, 11, 17]
    >>> scales(3)
    []
    """
    out: list[int] = []
    length = 1.0
    while round(length) <= buckets - min_before:
        if not out or round(length) > out[-1]:
            out.append(round(length))
        length *= LADDER_RATIO
    return out


def threshold(alpha: float, tests: int) -> float:
    """One-sided z a test must exceed so that ``tests`` of them together false-alarm with
    probability at most ``alpha`` (Bonferroni: the scales overlap, so this is
    conservative).

    >>> round(threshold(0.01, 1), 3)
    2.326
    """
    return float(ndtri(1.0 - alpha / max(tests, 1)))


def logit(x: float, n: float) -> tuple[float, float]:
    """Log-odds of ``x`` successes in ``n`` and its variance (with half a count on each
    side, so 0 and n are finite)."""
    p = (x + 0.5) / (n + 1.0)
    return math.log(p / (1.0 - p)), 1.0 / ((n + 1.0) * p * (1.0 - p))


def dispersion(x: np.ndarray, n: np.ndarray) -> float:
    """How much more a proportion wanders from bucket to bucket than binomial counts
    would (1 = binomial), from successive differences, so a slow trend does not count as
    noise.

    >>> rng = np.random.default_rng(0)
    >>> n = np.full(200, 400)
    >>> 0.9 < dispersion(rng.binomial(n, 0.3), n) < 1.2
    True
    >>> round(dispersion(rng.binomial(n, rng.uniform(0.2, 0.4, 200)), n), 1)
    7.4
    """
    keep = n > 0
    x, n = x[keep], n[keep]
    if len(n) < 3:
        return 1.0
    p_all = x.sum() / n.sum()
    if p_all <= 0.0 or p_all >= 1.0:
        return 1.0
    p = x / n
    v = p_all * (1.0 - p_all) / n
    ratio = float(np.mean(np.diff(p) ** 2 / (v[1:] + v[:-1])))
    return max(1.0, ratio)


def proportion_rise(
    x: np.ndarray, n: np.ndarray, lengths: Sequence[int], min_events: int = 1
) -> list[Scan | None]:
    """Has the proportion ``x / n`` risen into the last ``L`` buckets, for each ``L``?
    (None at a scale with fewer than ``min_events`` on a side.)

    >>> n = np.full(12, 500)
    >>> x = np.array([100] * 8 + [150] * 4)
    >>> [round(s.z, 1) for s in proportion_rise(x, n, [4, 6])]
    [7.6, 5.4]
    """
    phi = dispersion(x, n)
    cx, cn = np.cumsum(x[::-1]), np.cumsum(n[::-1])
    tx, tn = float(cx[-1]), float(cn[-1])
    out: list[Scan | None] = []
    for length in lengths:
        ax, an = float(cx[length - 1]), float(cn[length - 1])
        bx, bn = tx - ax, tn - an
        if an < min_events or bn < min_events:
            out.append(None)
            continue
        la, va = logit(ax, an)
        lb, vb = logit(bx, bn)
        var = phi * (va + vb)
        out.append(Scan(length, (la - lb) / math.sqrt(var), bx / bn, ax / an, la - lb, var))
    return out


def contrast_rise(
    x: np.ndarray,
    n: np.ndarray,
    base_x: np.ndarray,
    base_n: np.ndarray,
    lengths: Sequence[int],
    min_events: int = 1,
) -> list[Scan | None]:
    """Has the log-odds of ``x / n`` risen relative to that of ``base_x / base_n`` (a
    difference in differences: a segment's share of actions against its share of
    requests, so a change in who comes is not taken for a change in whom the model
    favours)? ``before`` and ``now`` are the log odds ratios."""
    phi = max(dispersion(x, n), dispersion(base_x, base_n))
    sums = [np.cumsum(a[::-1]) for a in (x, n, base_x, base_n)]
    totals = [float(s[-1]) for s in sums]
    out: list[Scan | None] = []
    for length in lengths:
        after = [float(s[length - 1]) for s in sums]
        before = [t - a for t, a in zip(totals, after, strict=True)]
        if min(after[1], before[1]) < min_events:
            out.append(None)
            continue
        (la, va), (lb, vb) = logit(after[0], after[1]), logit(before[0], before[1])
        (ra, wa), (rb, wb) = logit(after[2], after[3]), logit(before[2], before[3])
        now, then = la - ra, lb - rb
        var = phi * (va + vb + wa + wb)
        out.append(Scan(length, (now - then) / math.sqrt(var), then, now, now - then, var))
    return out


def log_level_rise(
    values: np.ndarray, variances: np.ndarray, lengths: Sequence[int]
) -> list[Scan | None]:
    """Has the mean of a positive level (a concentration index) risen into the last ``L``
    buckets, for each ``L``, as a log ratio? The noise of one bucket is the larger of its
    sampling variance and the series' successive-difference variance.

    >>> v = np.array([0.02] * 10 + [0.03] * 4)
    >>> [round(s.z, 1) for s in log_level_rise(v, np.full(14, 1e-5), [2, 4])]
    [3.8, 5.6]
    """
    return [log_level_split(values, variances, len(values) - length) for length in lengths]


def log_level_split(values: np.ndarray, variances: np.ndarray, cut: int) -> Scan | None:
    """The log ratio of the mean level from ``values[cut:]`` over ``values[:cut]`` (None
    when a side has fewer than two values or a mean is not positive)."""
    nb, na = cut, len(values) - cut
    if nb < 2 or na < 1:
        return None
    noise = max(float(np.mean(np.diff(values) ** 2)) / 2.0, float(np.mean(variances)), 1e-18)
    before, after = float(values[:cut].mean()), float(values[cut:].mean())
    if after <= 0.0 or before <= 0.0:
        return None
    change = math.log(after / before)
    var = noise / na / after**2 + noise / nb / before**2
    return Scan(na, change / math.sqrt(var), before, after, change, var)


def pooled_log_split(before: np.ndarray, after: np.ndarray) -> Scan | None:
    """The log ratio of the concentration (`simpson`) of pooled counts after over before
    (arrays over the same items; None when a side has fewer than two draws). Pooling
    keeps the pairs across buckets that a mean of per-bucket indices throws away: on a
    few dozen draws a bucket, it is several times more precise.

    >>> s = pooled_log_split(np.array([50, 50, 50, 50]), np.array([100, 20, 20, 20]))
    >>> round(s.change, 2), round(s.z, 1)
    (0.57, 6.4)
    """
    (db, vb), (da, va) = simpson(before), simpson(after)
    if db <= 0.0 or da <= 0.0:
        return None
    change = math.log(da / db)
    var = max(va, 1e-18) / da**2 + max(vb, 1e-18) / db**2
    return Scan(0, change / math.sqrt(var), db, da, change, var)


def difference(first: Scan, second: Scan) -> float:
    """z of ``first``'s change beyond ``second``'s (independent series, same scale)."""
    return (first.change - second.change) / math.sqrt(first.variance + second.variance)


def simpson(counts: np.ndarray) -> tuple[float, float]:
    """Unbiased estimate of the chance that two draws hit the same item (Simpson's
    concentration index, 1/items when even, 1 when all on one item) from ``counts``,
    with its variance. Unbiased at any sample size, unlike entropy, so a few dozen clicks
    on exploration traffic compare fairly with thousands on the model's own.

    >>> round(simpson(np.array([5, 5]))[0], 4)
    0.4444
    """
    n = float(counts.sum())
    if n < 2:
        return 0.0, 0.0
    d = float((counts * (counts - 1.0)).sum()) / (n * (n - 1.0))
    # Unbiased for the sum of cubed shares too: plug-in shares overstate it badly on a
    # few draws over many items (every item seen once looks like a share of 1/n).
    cube = (
        float((counts * (counts - 1.0) * (counts - 2.0)).sum()) / (n * (n - 1.0) * (n - 2.0))
        if n > 2
        else d * d
    )
    var = 4.0 * (n - 2.0) / (n * (n - 1.0)) * max(cube - d * d, 0.0) + 2.0 / (n * (n - 1.0)) * max(
        d - d * d, 0.0
    )
    return d, var


def proportion_gap(ax: float, an: float, rx: float, rn: float, phi: float = 1.0) -> float:
    """z of one proportion (``ax / an``, the model's) above another (``rx / rn``, a
    reference it cannot steer), on the logit scale.

    >>> round(proportion_gap(400, 1000, 25, 100), 2)
    2.86
    """
    la, va = logit(ax, an)
    lr, vr = logit(rx, rn)
    return (la - lr) / math.sqrt(phi * va + vr)
