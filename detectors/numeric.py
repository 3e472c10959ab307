"""Drift and quality tests for numeric features (and numeric predictions)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.channel import Channel, TestSpec, bernoulli_llr_terms, bernoulli_rate, rate_band
from detectors.cusum import bernoulli_kl, gaussian_threshold
from detectors.latch import BERNOULLI, GAUSS_MEAN, GAUSS_VAR
from detectors.reference import NumericSummary, bin_index, normal_scores
from detectors.settings import DetectorSettings

_MEAN_UP, _MEAN_DOWN, _VAR_UP, _VAR_DOWN = range(4)
_DRIFT_TESTS = ("cusum_mean_up", "cusum_mean_down", "cusum_variance_up", "cusum_variance_down")


@dataclass(frozen=True, slots=True)
class NumericData:
    """A batch of numeric values with what every test needs computed once."""

    z: np.ndarray
    """Normal scores against the reference, NaN where missing (n_events, n_features)."""
    bins: np.ndarray
    """Equal-probability bin per value, -1 where missing."""
    bad: np.ndarray
    """True where the value is missing, of the wrong type, or out of the reference range."""


class NumericChannel(Channel):
    """Per feature: CUSUMs for a mean shift (up, down) and a variance change (up, down) on
    normal scores, a CUSUM on the invalid-value rate, and a window histogram test.

    Working on normal scores through the reference CDF makes the tests' false-alarm rate
    independent of each feature's distribution (skewed, heavy-tailed, bounded).
    """

    def __init__(
        self, kind: str, summaries: Mapping[str, NumericSummary], settings: DetectorSettings
    ) -> None:
        self.names = list(summaries)
        self.summaries = [summaries[n] for n in self.names]
        delta = settings.mean_shift_sd
        ratio = settings.variance_ratio
        self._delta = delta
        self._ratio = ratio
        self._kl = np.array(
            [
                delta * delta / 2,
                delta * delta / 2,
                0.5 * (ratio - 1 - math.log(ratio)),
                0.5 * (1 / ratio - 1 + math.log(ratio)),
            ]
        )
        counts = np.array([max(s.count, 1) for s in self.summaries], dtype=np.float64)
        p0 = rate_band(
            np.array([s.bad_rate for s in self.summaries]),
            counts,
            settings.reference_uncertainty_z,
        )[0]
        p1 = np.minimum(np.maximum(2 * p0, p0 + settings.quality_min_change), 0.99)
        self._quality_p = (p0, p1)
        self._q_one, self._q_zero = bernoulli_llr_terms(p0, p1)
        # The reference's own sampling error in the variance of its scores (about
        # sqrt(2 / n) for normal scores): the variance tests take the edge of its confidence
        # band as their null, so a reference that happened to come out 3 % wide does not
        # make ordinary traffic look like a variance drop.
        self._var_margin = np.minimum(settings.reference_uncertainty_z * np.sqrt(2.0 / counts), 0.5)
        lows = np.array([s.low for s in self.summaries])
        highs = np.array([s.high for s in self.summaries])
        margin = settings.out_of_range_margin * (highs - lows)
        self._range = (lows - margin, highs + margin)
        super().__init__(kind, settings)

    @property
    def feature_names(self) -> list[str]:
        return self.names

    def _specs(self) -> list[TestSpec]:
        specs = []
        for t, detector in enumerate(_DRIFT_TESTS):
            design: dict[str, Any] = (
                {"design_shift_sd": self._delta}
                if t in (_MEAN_UP, _MEAN_DOWN)
                else {"design_variance_ratio": self._ratio if t == _VAR_UP else 1 / self._ratio}
            )
            specs += [TestSpec(self.kind, name, detector, design) for name in self.names]
        p0, p1 = self._quality_p
        specs += [
            TestSpec(
                "data_quality",
                name,
                "cusum_invalid_rate",
                {"reference_rate": round(float(p0[f]), 6), "design_rate": round(float(p1[f]), 6)},
            )
            for f, name in enumerate(self.names)
        ]
        return specs

    def _thresholds(self, arl: float) -> np.ndarray:
        n = len(self.names)
        drift = np.repeat([gaussian_threshold(arl, kl) for kl in self._kl], n)
        p0, p1 = self._quality_p
        quality = [gaussian_threshold(arl, k) for k in bernoulli_kl(p1, p0)]
        return np.concatenate([drift, quality])

    def prepare(self, x: np.ndarray) -> NumericData:
        """Normal scores, bins and validity of a (n_events, n_features) value matrix."""
        z = np.empty_like(x)
        bins = np.empty(x.shape, dtype=np.int64)
        for f, summary in enumerate(self.summaries):
            column = x[:, f]
            z[:, f] = normal_scores(summary, column)
            bins[:, f] = bin_index(summary, column, self.settings.histogram_bins)
        low, high = self._range
        with np.errstate(invalid="ignore"):
            bad = np.isnan(x) | (x < low) | (x > high)
        return NumericData(z, bins, bad)

    def _slice(self, data: NumericData, start: int, stop: int) -> NumericData:
        return NumericData(data.z[start:stop], data.bins[start:stop], data.bad[start:stop])

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.names)
        d, r = self._delta, self._ratio
        family = np.repeat([GAUSS_MEAN, GAUSS_MEAN, GAUSS_VAR, GAUSS_VAR, BERNOULLI], n)
        null = np.concatenate([np.zeros(2 * n), np.ones(2 * n), self._quality_p[0]])
        design = np.concatenate(
            [np.full(2 * n, d), np.full(n, r), np.full(n, 1 / r), self._quality_p[1]]
        )
        return family, null, design

    def _stats(self, data: NumericData) -> tuple[np.ndarray, np.ndarray]:
        valid = ~np.isnan(data.z)
        z = np.where(valid, data.z, 0.0)
        z2 = z * z
        m = self._var_margin
        t = np.concatenate([z, -z, z2 / (1 + m), z2 / (1 - m), data.bad.astype(np.float64)], axis=1)
        ok = np.concatenate([valid, valid, valid, valid, np.ones_like(valid)], axis=1)
        return t, ok

    def _empty_counts(self) -> np.ndarray:  # type: ignore[override]
        return np.zeros((len(self.names), self.settings.histogram_bins))

    def _add_counts(self, data: NumericData) -> None:
        bins = self.settings.histogram_bins
        valid = data.bins >= 0
        flat = (data.bins + np.arange(len(self.names)) * bins)[valid]
        self.window_counts += np.bincount(flat, minlength=len(self.names) * bins).reshape(
            len(self.names), bins
        )

    def _bad(self, data: NumericData) -> np.ndarray:
        return data.bad

    def _ref_probs(self, feature: int) -> np.ndarray:
        return np.asarray(self.summaries[feature].bin_probs)

    def _effect(self, spec: TestSpec, mean_llr: float) -> tuple[float, str, dict[str, Any]]:
        f = self.names.index(spec.feature)
        summary = self.summaries[f]
        d, r = self._delta, self._ratio
        if spec.detector == "cusum_mean_up":
            shift = (mean_llr + d * d / 2) / d
            return shift, "sd", {"reference_mean": summary.mean, "reference_sd": summary.sd}
        if spec.detector == "cusum_mean_down":
            shift = -(mean_llr + d * d / 2) / d
            return shift, "sd", {"reference_mean": summary.mean, "reference_sd": summary.sd}
        m = float(self._var_margin[f])
        if spec.detector == "cusum_variance_up":
            ratio = (1 + m) * (mean_llr + 0.5 * math.log(r)) / (0.5 * (1 - 1 / r))
            return ratio, "variance_ratio", {"reference_sd": summary.sd}
        if spec.detector == "cusum_variance_down":
            ratio = (1 - m) * (mean_llr - 0.5 * math.log(r)) / (0.5 * (1 - r))
            return ratio, "variance_ratio", {"reference_sd": summary.sd}
        rate = bernoulli_rate(mean_llr, float(self._q_one[f]), float(self._q_zero[f]))
        return rate, "invalid_rate", {"reference_rate": round(float(self._quality_p[0][f]), 6)}
