"""Anytime-valid comparisons between model versions.

Both tests may be looked at after every event without inflating false decisions:

* `RateComparison` — a candidate's error rate against a baseline's on *different* requests
  (canary vs stable). A normal-mixture confidence sequence for the difference of the two
  rates (the mixture SPRT of Johari et al., "Always valid inference", with plug-in
  variances) gives, at every moment, an interval that holds for all times at once with
  probability 1 - alpha.
* `PairedComparison` — two versions scoring the *same* requests (champion vs challenger or
  shadow). Only discordant pairs carry information; under equal accuracy each is a fair
  coin. A Beta-binomial mixture likelihood ratio is a nonnegative martingale under that
  null (an e-process), so by Ville's inequality it exceeds 1/alpha with probability at most
  alpha, however long it is watched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaln


def mixture_half_width(v: np.ndarray, tau: float, alpha: float) -> np.ndarray:
    """Half-width of the normal-mixture confidence sequence for an estimate of variance ``v``.

    ``tau`` is the mixing scale (the size of difference the test is tuned for). The
    interval ``estimate +- half_width`` covers the truth at all times simultaneously with
    probability at least ``1 - alpha`` (for Gaussian estimates).

    >>> round(float(mixture_half_width(np.array([1e-4]), 0.05, 0.001)[0]), 4)
    0.0421
    """
    t2 = tau * tau
    return np.sqrt(2.0 * v * (v + t2) / t2 * (math.log(1.0 / alpha) + 0.5 * np.log((v + t2) / v)))


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """A candidate's error rate is significantly above (or below) the baseline's."""

    index: int
    """Position in the batch of the labelled event at which the verdict was reached."""
    difference: float
    """Candidate error rate minus baseline error rate."""
    lower: float
    """Lower end of the anytime-valid interval for the difference."""
    upper: float
    """Upper end of the interval."""
    candidate_n: int
    baseline_n: int
    candidate_rate: float
    baseline_rate: float


class RateComparison:
    """Candidate vs baseline error rates on separate traffic, updated in batches.

    Parameters
    ----------
    tau
        Mixing scale: the error-rate difference the test is most sensitive to.
    alpha
        Probability of ever declaring a difference when there is none.
    margin
        A verdict needs the interval to clear this margin (regressions smaller than it
        are not worth a rollback).
    min_each
        Labelled events needed on each side before any verdict (the plug-in variance is
        unreliable below it).
    worse_only
        Only a candidate worse than the baseline is a verdict (rollback decisions); a better
        one is not reported.
    """

    def __init__(
        self, tau: float, alpha: float, margin: float, min_each: int, worse_only: bool = False
    ) -> None:
        self.worse_only = worse_only
        self.tau = tau
        self.alpha = alpha
        self.margin = margin
        self.min_each = min_each
        self.n = np.zeros(2, dtype=np.int64)
        """Labelled events of [candidate, baseline]."""
        self.errors = np.zeros(2, dtype=np.int64)

    def update(self, is_candidate: np.ndarray, error: np.ndarray) -> RateVerdict | None:
        """Feed labelled events (which side, 0/1 error) in order; the first verdict, if any.

        After a verdict the counts are those at the verdict (the caller decides what
        happens next, usually a rollback and a reset).
        """
        cand = is_candidate.astype(np.int64)
        base = 1 - cand
        err = error.astype(np.int64)
        n_c = self.n[0] + np.cumsum(cand)
        n_b = self.n[1] + np.cumsum(base)
        x_c = self.errors[0] + np.cumsum(cand * err)
        x_b = self.errors[1] + np.cumsum(base * err)
        # Half a pseudo-error and half a pseudo-success per side keep the variance positive.
        p_c = (x_c + 0.5) / (n_c + 1.0)
        p_b = (x_b + 0.5) / (n_b + 1.0)
        v = p_c * (1 - p_c) / np.maximum(n_c, 1) + p_b * (1 - p_b) / np.maximum(n_b, 1)
        diff = p_c - p_b
        half = mixture_half_width(v, self.tau, self.alpha)
        ready = (n_c >= self.min_each) & (n_b >= self.min_each)
        worse = diff - half > self.margin
        crossed = ready & (worse if self.worse_only else worse | (diff + half < -self.margin))
        hits = np.flatnonzero(crossed)
        end = int(hits[0]) if len(hits) else len(cand) - 1
        if len(cand):
            self.n = np.array([n_c[end], n_b[end]])
            self.errors = np.array([x_c[end], x_b[end]])
        if not len(hits):
            return None
        i = end
        return RateVerdict(
            index=i,
            difference=float(diff[i]),
            lower=float(diff[i] - half[i]),
            upper=float(diff[i] + half[i]),
            candidate_n=int(n_c[i]),
            baseline_n=int(n_b[i]),
            candidate_rate=float(x_c[i] / n_c[i]),
            baseline_rate=float(x_b[i] / n_b[i]),
        )

    def state(self) -> dict[str, Any]:
        return {"n": self.n.tolist(), "errors": self.errors.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.n = np.asarray(state["n"], dtype=np.int64)
        self.errors = np.asarray(state["errors"], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class PairedVerdict:
    """One version is significantly more accurate than the other on the same requests."""

    index: int
    """Position in the batch of the pair at which the verdict was reached."""
    candidate_better: bool
    """True when the candidate is right where the baseline is wrong more often."""
    e_value: float
    """The mixture likelihood ratio against equal accuracy (reject above 1/alpha)."""
    candidate_only: int
    """Pairs where only the candidate was right."""
    baseline_only: int
    """Pairs where only the baseline was right."""
    pairs: int
    """All labelled pairs seen (agreements included)."""
    disagreement_rate: float
    """Share of labelled pairs on which the two versions' correctness differed."""


class PairedComparison:
    """Two versions on the same requests: a Beta-binomial e-process on discordant pairs.

    The e-value after ``b`` candidate-only and ``c`` baseline-only wins is
    ``B(b + a, c + a) / B(a, a) / 0.5 ** (b + c)`` with prior strength ``a``; it is a
    martingale when each discordant pair is a fair coin (equal accuracy).
    """

    def __init__(self, alpha: float, prior: float, min_discordant: int) -> None:
        self.alpha = alpha
        self.prior = prior
        self.min_discordant = min_discordant
        self.candidate_only = 0
        self.baseline_only = 0
        self.pairs = 0

    def update(
        self, candidate_right: np.ndarray, baseline_right: np.ndarray
    ) -> PairedVerdict | None:
        """Feed labelled pairs in order; the first verdict, if any."""
        cand = candidate_right.astype(bool)
        base = baseline_right.astype(bool)
        b = self.candidate_only + np.cumsum(cand & ~base)
        c = self.baseline_only + np.cumsum(base & ~cand)
        pairs = self.pairs + np.arange(1, len(cand) + 1)
        a = self.prior
        log_e = betaln(b + a, c + a) - betaln(a, a) + (b + c) * math.log(2.0)
        crossed = (log_e >= math.log(1.0 / self.alpha)) & (b + c >= self.min_discordant)
        hits = np.flatnonzero(crossed)
        end = int(hits[0]) if len(hits) else len(cand) - 1
        if len(cand):
            self.candidate_only, self.baseline_only = int(b[end]), int(c[end])
            self.pairs = int(pairs[end])
        if not len(hits):
            return None
        i = end
        return PairedVerdict(
            index=i,
            candidate_better=bool(b[i] > c[i]),
            e_value=float(np.exp(min(log_e[i], 700.0))),
            candidate_only=int(b[i]),
            baseline_only=int(c[i]),
            pairs=int(pairs[i]),
            disagreement_rate=float((b[i] + c[i]) / pairs[i]),
        )

    def state(self) -> dict[str, Any]:
        return {"b": self.candidate_only, "c": self.baseline_only, "pairs": self.pairs}

    def restore(self, state: dict[str, Any]) -> None:
        self.candidate_only, self.baseline_only = state["b"], state["c"]
        self.pairs = state["pairs"]
