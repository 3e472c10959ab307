"""Anytime-valid comparisons between model versions.

Both tests may be looked at after every event without inflating false decisions:

* `MeanComparison` — a candidate's mean (error rate, Brier score, estimated error,
  outcome latency) against a baseline's on *different* requests (canary vs stable). A
  normal-mixture confidence sequence for the difference of the two means (the mixture
  SPRT of Johari et al., "Always valid inference", with plug-in variances) gives, at every
  moment, an interval that holds for all times at once with probability 1 - alpha.
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


def mixture_half_width(v: Any, tau: float, alpha: float) -> Any:
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
class MeanVerdict:
    """A candidate's mean (error rate, Brier score, latency...) is significantly above (or
    below) the baseline's."""

    index: int
    """Position in the batch of the event at which the verdict was reached."""
    difference: float
    """Candidate mean minus baseline mean (the candidate's mean in one-sample mode)."""
    lower: float
    """Lower end of the anytime-valid interval for the difference."""
    upper: float
    """Upper end of the interval."""
    candidate_n: int
    baseline_n: int
    candidate_mean: float
    baseline_mean: float


class MeanComparison:
    """Candidate vs baseline means on separate traffic, updated in batches.

    Each side keeps its count, sum and sum of squares, so the state is small and batches
    of any size give the same verdict at the same event. The variance of each side's mean
    is its sample variance with one pseudo-observation of variance ``prior_var`` (which
    keeps it positive on short or constant runs) over its count.

    Parameters
    ----------
    tau
        Mixing scale: the difference the test is most sensitive to.
    alpha
        Probability of ever declaring a difference when there is none.
    margin
        A verdict needs the interval to clear this margin (differences smaller than it
        are not worth acting on).
    min_each
        Events needed on each side before any verdict (the plug-in variance is
        unreliable below it).
    worse_only
        Only a candidate mean above the baseline's is a verdict (error rates, losses);
        a lower one is not reported.
    prior_var
        Variance of the pseudo-observation; 0.25 (the largest a 0/1 variable can have)
        for rates.
    one_sample
        Only the candidate side is fed and its mean is compared with zero (for paired
        differences such as realised minus estimated error on the same events).
    """

    def __init__(
        self,
        tau: float,
        alpha: float,
        margin: float,
        min_each: int,
        worse_only: bool = False,
        prior_var: float = 0.25,
        one_sample: bool = False,
    ) -> None:
        self.tau = tau
        self.alpha = alpha
        self.margin = margin
        self.min_each = min_each
        self.worse_only = worse_only
        self.prior_var = prior_var
        self.one_sample = one_sample
        self.n = np.zeros(2, dtype=np.int64)
        """Events of [candidate, baseline]."""
        self.sums = np.zeros(2)
        self.sumsq = np.zeros(2)

    def config(self) -> dict[str, Any]:
        """The configuration this comparison runs with (what a decision reports)."""
        return {
            "alpha": self.alpha,
            "tau": self.tau,
            "margin": self.margin,
            "min_each": self.min_each,
        }

    def preload_baseline(self, n: int, total: float, total_sq: float) -> None:
        """Start the baseline side from earlier statistics (a version that no longer
        serves, compared with the one that replaced it)."""
        self.n[1] += n
        self.sums[1] += total
        self.sumsq[1] += total_sq

    def update(
        self, is_candidate: np.ndarray, values: np.ndarray, check: bool = False
    ) -> MeanVerdict | None:
        """Feed events (which side, value) in order; the first verdict, if any.

        After a verdict the counts are those at the verdict (the caller decides what
        happens next, usually a decision and no further updates). With no events and
        ``check``, the counts as they stand are tested.
        """
        if not len(values):
            return self._verdict_now() if check else None
        cand = is_candidate.astype(np.float64)
        base = 1.0 - cand
        x = values.astype(np.float64)
        n_c = self.n[0] + np.cumsum(cand)
        n_b = self.n[1] + np.cumsum(base)
        s_c = self.sums[0] + np.cumsum(cand * x)
        s_b = self.sums[1] + np.cumsum(base * x)
        q_c = self.sumsq[0] + np.cumsum(cand * x * x)
        q_b = self.sumsq[1] + np.cumsum(base * x * x)
        m_c = s_c / np.maximum(n_c, 1)
        m_b = s_b / np.maximum(n_b, 1)
        v = self._mean_variance(n_c, s_c, q_c)
        if self.one_sample:
            diff = m_c
            ready = n_c >= self.min_each
        else:
            v = v + self._mean_variance(n_b, s_b, q_b)
            diff = m_c - m_b
            ready = (n_c >= self.min_each) & (n_b >= self.min_each)
        half = mixture_half_width(v, self.tau, self.alpha)
        worse = diff - half > self.margin
        crossed = ready & (worse if self.worse_only else worse | (diff + half < -self.margin))
        hits = np.flatnonzero(crossed)
        end = int(hits[0]) if len(hits) else len(x) - 1
        self.n = np.array([round(n_c[end]), round(n_b[end])], dtype=np.int64)
        self.sums = np.array([s_c[end], s_b[end]])
        self.sumsq = np.array([q_c[end], q_b[end]])
        if not len(hits):
            return None
        i = end
        return MeanVerdict(
            index=i,
            difference=float(diff[i]),
            lower=float(diff[i] - half[i]),
            upper=float(diff[i] + half[i]),
            candidate_n=round(n_c[i]),
            baseline_n=round(n_b[i]),
            candidate_mean=float(m_c[i]),
            baseline_mean=float(m_b[i]),
        )

    def update_summary(
        self, n: int, total: float, total_sq: float, candidate: bool = True
    ) -> MeanVerdict | None:
        """Feed ``n`` events of one side (the candidate's unless ``candidate`` is False)
        at once by their sum and sum of squares (a cohort released together); the
        verdict, if the test crosses at the end of them (index 0). Checking only at such
        points keeps the test's guarantee: it holds at any stopping time."""
        side = 0 if candidate else 1
        self.n[side] += n
        self.sums[side] += total
        self.sumsq[side] += total_sq
        return self._verdict_now()

    def _verdict_now(self) -> MeanVerdict | None:
        """The test on the counts as they stand, in scalars (a cohort at a time: the
        array path costs 20 times as much for one row)."""
        n_c, n_b = int(self.n[0]), int(self.n[1])
        s_c, s_b = float(self.sums[0]), float(self.sums[1])
        m_c, m_b = s_c / max(n_c, 1), s_b / max(n_b, 1)
        v = float(self._mean_variance(n_c, s_c, float(self.sumsq[0])))
        if self.one_sample:
            diff = m_c
            ready = n_c >= self.min_each
        else:
            v += float(self._mean_variance(n_b, s_b, float(self.sumsq[1])))
            diff = m_c - m_b
            ready = n_c >= self.min_each and n_b >= self.min_each
        half = float(mixture_half_width(v, self.tau, self.alpha))
        worse = diff - half > self.margin
        if not (ready and (worse or (not self.worse_only and diff + half < -self.margin))):
            return None
        return MeanVerdict(0, diff, diff - half, diff + half, n_c, n_b, m_c, m_b)

    def interval(self) -> tuple[float, float, float, int, int] | None:
        """The current difference (candidate minus baseline, or the candidate mean when
        one-sample) with its anytime-valid interval and the counts: (difference, lower,
        upper, candidate n, baseline n); None before any event on a needed side."""
        n = self.n.astype(np.float64)
        if n[0] == 0 or (not self.one_sample and n[1] == 0):
            return None
        v = self._mean_variance(n[:1], self.sums[:1], self.sumsq[:1])
        diff = self.sums[0] / n[0]
        if not self.one_sample:
            v = v + self._mean_variance(n[1:], self.sums[1:], self.sumsq[1:])
            diff -= self.sums[1] / n[1]
        half = float(mixture_half_width(v, self.tau, self.alpha)[0])
        return float(diff), float(diff) - half, float(diff) + half, int(n[0]), int(n[1])

    def _mean_variance(self, n: Any, s: Any, q: Any) -> Any:
        """Variance of one side's mean: (sample variance + prior) over the count."""
        safe = np.maximum(n, 1)
        spread = np.maximum(q - s * s / safe, 0.0)
        return (spread + self.prior_var) / (safe + 1.0) / safe

    @property
    def means(self) -> tuple[float, float]:
        """Current [candidate, baseline] means (NaN for an empty side)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.sums / self.n
        return float(m[0]), float(m[1])

    def state(self) -> dict[str, Any]:
        return {"n": self.n.tolist(), "sums": self.sums.tolist(), "sumsq": self.sumsq.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.n = np.asarray(state["n"], dtype=np.int64)
        self.sums = np.asarray(state["sums"], dtype=np.float64)
        self.sumsq = np.asarray(state["sumsq"], dtype=np.float64)


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

    def config(self) -> dict[str, Any]:
        """The configuration this comparison runs with (what a decision reports)."""
        return {"alpha": self.alpha, "prior": self.prior, "min_discordant": self.min_discordant}

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

    def update_counts(
        self, pairs: int, candidate_only: int, baseline_only: int
    ) -> PairedVerdict | None:
        """Feed ``pairs`` labelled pairs at once by their discordant counts (a cohort
        summed by the input stage); the verdict, if the e-process crosses at the end of
        them (index 0). Checking only at such points keeps its guarantee (Ville's
        inequality holds at any stopping time)."""
        self.candidate_only += candidate_only
        self.baseline_only += baseline_only
        self.pairs += pairs
        b, c = self.candidate_only, self.baseline_only
        a = self.prior
        log_e = float(betaln(b + a, c + a) - betaln(a, a)) + (b + c) * math.log(2.0)
        if log_e < math.log(1.0 / self.alpha) or b + c < self.min_discordant:
            return None
        return PairedVerdict(
            index=0,
            candidate_better=b > c,
            e_value=math.exp(min(log_e, 700.0)),
            candidate_only=b,
            baseline_only=c,
            pairs=self.pairs,
            disagreement_rate=(b + c) / self.pairs,
        )

    def state(self) -> dict[str, Any]:
        return {"b": self.candidate_only, "c": self.baseline_only, "pairs": self.pairs}

    def restore(self, state: dict[str, Any]) -> None:
        self.candidate_only, self.baseline_only = state["b"], state["c"]
        self.pairs = state["pairs"]
