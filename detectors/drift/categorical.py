"""Drift and quality tests for categorical features (and class-label predictions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftline.detectors.drift.channel import (
    Channel,
    TestSpec,
    bernoulli_llr_terms,
    bernoulli_rate,
    rate_band,
)
from driftline.detectors.drift.reference import OTHER, CategoricalSummary, category_key
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.stats.cusum import bernoulli_kl, gaussian_threshold
from driftline.detectors.stats.latch import BERNOULLI


class CategoricalChannel(Channel):
    """Per category bucket (top-k plus ``__other__``): Bernoulli CUSUMs for its frequency
    rising and falling; per feature: a CUSUM on the missing rate and a window test.

    A new category counts in ``__other__``, so categories never seen in the reference
    raise the ``__other__`` test once they take a real share of traffic.
    """

    def __init__(
        self, kind: str, summaries: Mapping[str, CategoricalSummary], settings: DetectorSettings
    ) -> None:
        self.names = list(summaries)
        self.summaries = [summaries[n] for n in self.names]
        self.lookup = [{c: i for i, c in enumerate(s.categories)} for s in self.summaries]
        sizes = [len(s.probs) for s in self.summaries]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.bucket_feature = np.repeat(np.arange(len(self.names)), sizes)
        self.bucket_label = [
            (*s.categories, OTHER)[b] for s in self.summaries for b in range(len(s.probs))
        ]
        p0 = np.concatenate([np.asarray(s.probs) for s in self.summaries]) if sizes else np.zeros(0)
        n_ref = np.array([float(s.count) for s in self.summaries])
        z = settings.reference_uncertainty_z
        # Each test's null is the edge of the reference share's confidence band on its own
        # side: a share estimated at 4.6 % from 10,000 warm-up events may really be 5 %,
        # and a rise test designed from 4.6 % would then see drift in ordinary traffic.
        hi, lo = rate_band(p0, n_ref[self.bucket_feature], z)
        ratio, floor = settings.category_ratio, settings.category_min_change
        up = np.minimum(np.maximum(hi * ratio, hi + floor), 0.999)
        down = np.minimum(lo / ratio, lo - floor)
        self.down_buckets = np.flatnonzero(down > 0)
        self._p0 = p0
        self._null_up, self._null_down = hi, lo[self.down_buckets]
        self._p_up, self._p_down = up, down
        self._up_terms = bernoulli_llr_terms(hi, up)
        self._down_terms = bernoulli_llr_terms(self._null_down, down[self.down_buckets])
        q0 = rate_band(np.array([s.bad_rate for s in self.summaries]), n_ref, z)[0]
        q1 = np.minimum(np.maximum(2 * q0, q0 + settings.quality_min_change), 0.99)
        self._quality_p = (q0, q1)
        self._q_terms = bernoulli_llr_terms(q0, q1)
        super().__init__(kind, settings)

    @property
    def feature_names(self) -> list[str]:
        return self.names

    def _specs(self) -> list[TestSpec]:
        def spec(b: int, detector: str, design: float) -> TestSpec:
            return TestSpec(
                self.kind,
                self.names[self.bucket_feature[b]],
                detector,
                {
                    "category": self.bucket_label[b],
                    "reference_share": round(float(self._p0[b]), 6),
                    "design_share": round(float(design), 6),
                },
            )

        specs = [spec(b, "cusum_share_up", self._p_up[b]) for b in range(len(self._p0))]
        specs += [spec(int(b), "cusum_share_down", self._p_down[b]) for b in self.down_buckets]
        q0, q1 = self._quality_p
        specs += [
            TestSpec(
                "data_quality",
                name,
                "cusum_missing_rate",
                {"reference_rate": round(float(q0[f]), 6), "design_rate": round(float(q1[f]), 6)},
            )
            for f, name in enumerate(self.names)
        ]
        return specs

    def _thresholds(self, arl: float) -> np.ndarray:
        kl = np.concatenate(
            [
                bernoulli_kl(self._p_up, self._null_up),
                bernoulli_kl(self._p_down[self.down_buckets], self._null_down),
                bernoulli_kl(self._quality_p[1], self._quality_p[0]),
            ]
        )
        return np.array([gaussian_threshold(arl, k) for k in kl])

    def prepare(self, columns: Sequence[Sequence[Any]]) -> np.ndarray:
        """Bucket codes (n_events, n_features) from raw value columns; -1 marks missing."""
        n = len(columns[0]) if columns else 0
        codes = np.empty((n, len(self.names)), dtype=np.int64)
        for f, column in enumerate(columns):
            mapping = self.lookup[f]
            other = len(mapping)
            codes[:, f] = [
                mapping.get(v, other)
                if type(v) is str
                else (-1 if v is None else mapping.get(category_key(v), other))  # type: ignore[arg-type]
                for v in column
            ]
        return codes

    def _slice(self, data: np.ndarray, start: int, stop: int) -> np.ndarray:
        return data[start:stop]

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        down = self.down_buckets
        q0, q1 = self._quality_p
        null = np.concatenate([self._null_up, self._null_down, q0])
        design = np.concatenate([self._p_up, self._p_down[down], q1])
        return np.full(len(null), BERNOULLI), null, design

    def _stats(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(codes)
        present = codes >= 0
        onehot = np.zeros((n, len(self._p0)))
        rows, feats = np.nonzero(present)
        onehot[rows, self.offsets[feats] + codes[rows, feats]] = 1.0
        bucket_present = present[:, self.bucket_feature]
        t = np.concatenate(
            [onehot, onehot[:, self.down_buckets], (~present).astype(np.float64)], axis=1
        )
        ok = np.concatenate(
            [bucket_present, bucket_present[:, self.down_buckets], np.ones_like(present)], axis=1
        )
        return t, ok

    def _empty_counts(self) -> list[np.ndarray]:
        return [np.zeros(len(s.probs)) for s in self.summaries]

    def _add_counts(self, codes: np.ndarray, into: list[np.ndarray] | None = None) -> None:
        counts = self.window_counts if into is None else into
        for f, summary in enumerate(self.summaries):
            column = codes[:, f]
            counts[f] += np.bincount(column[column >= 0], minlength=len(summary.probs))

    def _bad(self, codes: np.ndarray) -> np.ndarray:
        return codes < 0

    def _ref_probs(self, feature: int) -> np.ndarray:
        return np.asarray(self.summaries[feature].probs)

    def _effect(self, spec: TestSpec, mean_llr: float) -> tuple[float, str, dict[str, Any]]:
        f = self.names.index(spec.feature)
        if spec.detector == "cusum_missing_rate":
            one, zero = self._q_terms
            rate = bernoulli_rate(mean_llr, float(one[f]), float(zero[f]))
            return rate, "missing_rate", {"reference_rate": spec.design["reference_rate"]}
        category = spec.design["category"]
        b = int(self.offsets[f]) + (
            self.lookup[f][category] if category != OTHER else len(self.lookup[f])
        )
        if spec.detector == "cusum_share_up":
            terms, k = self._up_terms, b
        else:
            terms, k = self._down_terms, int(np.flatnonzero(self.down_buckets == b)[0])
        share = bernoulli_rate(mean_llr, float(terms[0][k]), float(terms[1][k]))
        p0 = float(self._p0[b])
        return (
            share / p0,
            "frequency_ratio",
            {
                "category": category,
                "reference_share": round(p0, 6),
                "observed_share": round(share, 6),
            },
        )
