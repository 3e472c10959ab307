"""Drift and quality tests for numeric features (and numeric predictions)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.detectors.drift.channel import (
    Channel,
    TestSpec,
    bernoulli_llr_terms,
    bernoulli_rate,
    rate_band,
)
from driftline.detectors.drift.reference import (
    NumericSummary,
    bin_index,
    normal_scores,
    reference_cdf,
)
from driftline.detectors.drift.river_bridge import RiverChannel
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta, Signal
from driftline.detectors.stats.cusum import Alarm, bernoulli_kl, gaussian_threshold
from driftline.detectors.stats.latch import BERNOULLI, GAUSS_MEAN, GAUSS_VAR, kl_divergence


@dataclass(frozen=True, slots=True)
class _Block:
    """One drift test per feature: its detector name, family, design and statistic."""

    detector: str
    family: int
    null: float
    """Reference value (for mean blocks the per-feature band edge is used instead)."""
    design: float
    statistic: str
    """``z``, ``-z``, ``z2_up`` or ``z2_down`` (squared scores over the variance band)."""


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
    """Per feature: CUSUMs for a mean shift (up, down; at ``mean_shift_designs`` designs),
    a variance change (up, down) on normal scores, a CUSUM on the invalid-value rate, and
    a window histogram test.

    Working on normal scores through the reference CDF makes the tests' false-alarm rate
    independent of each feature's distribution (skewed, heavy-tailed, bounded).
    """

    def __init__(
        self, kind: str, summaries: Mapping[str, NumericSummary], settings: DetectorSettings
    ) -> None:
        self.names = list(summaries)
        self.summaries = [summaries[n] for n in self.names]
        detector = {
            "data_drift": settings.data_detector,
            "prediction_drift": settings.prediction_detector,
        }.get(kind, "cusum")
        self.river: RiverChannel | None = None
        """River's detector per feature in place of the mean and variance CUSUMs, when
        ``data_detector`` / ``prediction_detector`` names one."""
        delta = settings.mean_shift_sd
        ratio = settings.variance_ratio
        self._ratio = ratio
        self._blocks = [
            _Block(name, GAUSS_MEAN, 0.0, delta / 2**k, stat)
            for k in range(settings.mean_shift_designs)
            for name, stat in (("cusum_mean_up", "z"), ("cusum_mean_down", "-z"))
        ] + [
            _Block("cusum_variance_up", GAUSS_VAR, 1.0, ratio, "z2_up"),
            _Block("cusum_variance_down", GAUSS_VAR, 1.0, 1 / ratio, "z2_down"),
        ]
        if detector != "cusum":
            self._blocks = []
            # Its columns follow the bank's: the quality test of every feature.
            self.river = RiverChannel(detector, len(self.names), len(self.names))
        self._kl = kl_divergence(
            np.array([b.family for b in self._blocks]),
            np.array([b.design for b in self._blocks]),
            np.array([b.null for b in self._blocks]),
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
        # Likewise the mean of the scores is known to 1 / sqrt(n). A test's null drift is
        # -d^2 / 2, so an error e in the reference mean weighs 2 e / d: 13 % at the 0.3 sd
        # design and a 10,000-event reference (the thresholds' slack absorbs that, and a
        # margin would cost every abrupt shift as much), but twice that at 0.15 sd, and far
        # more for a 2,000-event reference. The smaller designs start from the edge of
        # the band.
        self._mean_margin = np.minimum(settings.reference_uncertainty_z / np.sqrt(counts), 0.5)
        lows = np.array([s.low for s in self.summaries])
        highs = np.array([s.high for s in self.summaries])
        margin = settings.out_of_range_margin * (highs - lows)
        self._range = (lows - margin, highs + margin)
        if kind == "prediction_drift":
            # Scores outside the range they had in the reference have moved: that is
            # prediction drift (the mean and variance tests see it), not bad data. Only a
            # missing or non-numeric prediction is a quality problem. (Measured on an
            # allocation model whose estimates move hourly: the same moving scores were
            # reported twice, as prediction drift and as data quality.)
            self._range = (np.full_like(lows, -np.inf), np.full_like(highs, np.inf))
        super().__init__(kind, settings)

    @property
    def feature_names(self) -> list[str]:
        return self.names

    def _specs(self) -> list[TestSpec]:
        specs = []
        for block in self._blocks:
            design: dict[str, Any] = (
                {"design_shift_sd": block.design}
                if block.family == GAUSS_MEAN
                else {"design_variance_ratio": block.design}
            )
            specs += [TestSpec(self.kind, name, block.detector, design) for name in self.names]
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
        if self.river is not None:
            specs += [
                TestSpec(self.kind, name, f"river_{self.river.name}", {}) for name in self.names
            ]
        return specs

    def calibrate(self, arl_per_test: float) -> None:
        super().calibrate(arl_per_test)
        if self.river is not None:
            self.river.calibrate(arl_per_test)

    def _other_alarms(self, data: NumericData) -> list[Alarm]:
        if self.river is None:
            return []
        valid = ~np.isnan(data.z)
        return self.river.update(np.where(valid, data.z, 0.0), valid)

    def _other_signal(self, alarm: Alarm, meta: BatchMeta) -> Signal:
        """A River detection: its value is the mean score after the change (the shift in
        reference sd), its threshold the detector's false-alarm parameter."""
        assert self.river is not None
        spec = self.specs[alarm.column]
        f = self.names.index(spec.feature)
        summary = self.summaries[f]
        params = self.river.params
        threshold = params.get("delta", params.get("alpha", params.get("drift_confidence", 0.0)))
        start_row = max(alarm.row - alarm.run_length + 1, 0)
        return Signal(
            seq=int(meta.seq[alarm.row]),
            kind=spec.kind,
            feature=spec.feature,
            detector=spec.detector,
            statistic=f"{spec.detector}_mean_score_after_change",
            value=round(alarm.statistic, 6),
            threshold=float(threshold),
            p_value=None,
            effect=round(alarm.statistic, 6),
            effect_unit="sd",
            strength=round(abs(alarm.statistic), 6),
            ts=int(meta.ts[alarm.row]),
            event_id=meta.event_ids[alarm.row],
            first_ts=int(meta.ts[start_row]),
            count=alarm.run_length,
            config={**params, "false_alarm_arl": round(self.bank.arl)},
            extra={"reference_mean": summary.mean, "reference_sd": summary.sd},
            test=self.test_ids[alarm.column],
        )

    def state(self) -> dict[str, Any]:
        out = super().state()
        if self.river is not None:
            out["river"] = self.river.state()
        return out

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if self.river is not None and "river" in state:
            self.river.restore(state["river"])

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
            u = reference_cdf(summary, column)
            z[:, f] = normal_scores(summary, column, u)
            bins[:, f] = bin_index(summary, column, self.settings.histogram_bins, u)
        low, high = self._range
        with np.errstate(invalid="ignore"):
            bad = np.isnan(x) | (x < low) | (x > high)
        return NumericData(z, bins, bad)

    def _slice(self, data: NumericData, start: int, stop: int) -> NumericData:
        return NumericData(data.z[start:stop], data.bins[start:stop], data.bad[start:stop])

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.names)
        blocks = self._blocks
        family = np.concatenate([np.repeat([b.family for b in blocks], n), np.full(n, BERNOULLI)])
        nulls, designs = [], []
        for b in blocks:
            small = b.family == GAUSS_MEAN and b.design < self.settings.mean_shift_sd
            base = self._mean_margin if small else np.full(n, b.null)
            nulls.append(base)
            designs.append(base + b.design if small else np.full(n, b.design))
        null = np.concatenate([*nulls, self._quality_p[0]])
        design = np.concatenate([*designs, self._quality_p[1]])
        return family, null, design

    def _stats(self, data: NumericData) -> tuple[np.ndarray, np.ndarray]:
        valid = ~np.isnan(data.z)
        z = np.where(valid, data.z, 0.0)
        z2 = z * z
        m = self._var_margin
        by_name = {"z": z, "-z": -z, "z2_up": z2 / (1 + m), "z2_down": z2 / (1 - m)}
        t = np.concatenate(
            [by_name[b.statistic] for b in self._blocks] + [data.bad.astype(np.float64)], axis=1
        )
        ok = np.concatenate([valid] * len(self._blocks) + [np.ones_like(valid)], axis=1)
        return t, ok

    def _empty_counts(self) -> np.ndarray:  # type: ignore[override]
        return np.zeros((len(self.names), self.settings.histogram_bins))

    @property
    def summable(self) -> bool:
        return self.river is None

    def _add_counts(self, data: NumericData, into: np.ndarray | None = None) -> None:
        bins = self.settings.histogram_bins
        valid = data.bins >= 0
        flat = (data.bins + np.arange(len(self.names)) * bins)[valid]
        counts = self.window_counts if into is None else into
        counts += np.bincount(flat, minlength=len(self.names) * bins).reshape(len(self.names), bins)

    def _bad(self, data: NumericData) -> np.ndarray:
        return data.bad

    def _ref_probs(self, feature: int) -> np.ndarray:
        return np.asarray(self.summaries[feature].bin_probs)

    def _effect(self, spec: TestSpec, mean_llr: float) -> tuple[float, str, dict[str, Any]]:
        f = self.names.index(spec.feature)
        summary = self.summaries[f]
        r = self._ratio
        d = float(spec.design.get("design_shift_sd", 0.0))
        m = float(self._mean_margin[f]) if d < self.settings.mean_shift_sd else 0.0
        if spec.detector == "cusum_mean_up":
            shift = (mean_llr + d * d / 2) / d + m
            return shift, "sd", {"reference_mean": summary.mean, "reference_sd": summary.sd}
        if spec.detector == "cusum_mean_down":
            shift = -((mean_llr + d * d / 2) / d + m)
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
