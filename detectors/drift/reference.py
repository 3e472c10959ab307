"""Reference profiles: what a model's inputs, outputs and accuracy looked like offline.

A profile is built from training/validation events (``driftline reference build``) or,
without one, from the first events of a live version (warm-up). It holds bounded
summaries only: quantile knots and bin probabilities per numeric feature, top-k
frequencies per categorical feature, invalid-value rates, and offline error rates.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from scipy.special import ndtri

from driftline.detectors.settings import DetectorSettings
from driftline.schemas.exceptions import ConfigError

FORMAT = "driftline.reference/1"
"""Format tag written into every profile file."""

OTHER = "__other__"
"""Bucket shared by categories outside a feature's top-k, and by unseen ones."""

Z_CLIP = 6.0
"""Normal scores are clipped here: one wild value must not dominate a sequential test."""


@dataclass(frozen=True, slots=True)
class NumericSummary:
    """Reference distribution of one numeric feature."""

    knots: tuple[float, ...]
    """Distinct reference quantile values, increasing."""
    knot_probs: tuple[float, ...]
    """Cumulative probability at each knot (mid-rank for tied values)."""
    z_mean: float
    """Mean of the reference sample's normal scores (recentres the transform)."""
    z_sd: float
    """Standard deviation of the reference sample's normal scores."""
    bin_probs: tuple[float, ...]
    """Reference share of each equal-probability histogram bin."""
    sd: float
    """Reference standard deviation in feature units (tail extrapolation, evidence)."""
    mean: float
    """Reference mean in feature units (evidence)."""
    bad_rate: float
    """Share of missing, wrongly typed or out-of-range values in the reference."""
    count: int
    """Reference values the summary was built from."""

    @property
    def low(self) -> float:
        return self.knots[0]

    @property
    def high(self) -> float:
        return self.knots[-1]


@dataclass(frozen=True, slots=True)
class CategoricalSummary:
    """Reference frequencies of one categorical feature (top-k plus ``__other__``)."""

    categories: tuple[str, ...]
    """The top-k categories; the bucket after them is ``__other__``."""
    probs: tuple[float, ...]
    """Smoothed share of each category and, last, of ``__other__``."""
    bad_rate: float
    """Share of missing values in the reference."""
    count: int
    """Reference values the summary was built from."""


@dataclass(frozen=True, slots=True)
class PerformanceSummary:
    """Offline (or warm-up) performance of the model."""

    task: str
    """``binary``, ``multiclass``, ``ranking`` or ``regression``."""
    error_rate: float
    """Share of wrong predictions (for regression: residuals above ``residual_tolerance``)."""
    count: int
    """Labelled events behind the estimate."""
    residual_tolerance: float | None = None
    """Regression only: the absolute residual counted as an error (offline 90th percentile)."""


def fingerprint(profile: ReferenceProfile) -> str:
    """A short digest of everything a profile says: the input stage sums a slice against
    a profile, and the model stage tests the sums only against the same one."""
    encoded = orjson.dumps(profile.to_dict(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """Everything the detectors compare live traffic with."""

    name: str
    """Where it came from: ``profile:<name>`` for files, ``warmup`` for live warm-up."""
    numeric: Mapping[str, NumericSummary] = field(default_factory=dict)
    categorical: Mapping[str, CategoricalSummary] = field(default_factory=dict)
    prediction_numeric: NumericSummary | None = None
    prediction_categorical: CategoricalSummary | None = None
    performance: PerformanceSummary | None = None
    model_id: str | None = None
    model_version: str | None = None
    count: int = 0

    @property
    def offline(self) -> bool:
        """True when built from offline data rather than live warm-up."""
        return not self.name.startswith("warmup")

    def to_dict(self) -> dict[str, Any]:
        def numeric(s: NumericSummary) -> dict[str, Any]:
            return {
                "knots": list(s.knots),
                "knot_probs": list(s.knot_probs),
                "z_mean": s.z_mean,
                "z_sd": s.z_sd,
                "bin_probs": list(s.bin_probs),
                "sd": s.sd,
                "mean": s.mean,
                "bad_rate": s.bad_rate,
                "count": s.count,
            }

        def categorical(s: CategoricalSummary) -> dict[str, Any]:
            return {
                "categories": list(s.categories),
                "probs": list(s.probs),
                "bad_rate": s.bad_rate,
                "count": s.count,
            }

        out: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "count": self.count,
            "numeric": {k: numeric(v) for k, v in self.numeric.items()},
            "categorical": {k: categorical(v) for k, v in self.categorical.items()},
            "prediction": None,
            "performance": None,
        }
        if self.prediction_numeric is not None:
            out["prediction"] = {"numeric": numeric(self.prediction_numeric)}
        elif self.prediction_categorical is not None:
            out["prediction"] = {"categorical": categorical(self.prediction_categorical)}
        if self.performance is not None:
            p = self.performance
            out["performance"] = {
                "task": p.task,
                "error_rate": p.error_rate,
                "count": p.count,
                "residual_tolerance": p.residual_tolerance,
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Load a profile, with errors naming what is wrong."""
        if data.get("format") != FORMAT:
            raise ConfigError(
                f"not a driftline reference profile (format {data.get('format')!r}, "
                f"expected {FORMAT!r}); build one with 'driftline reference build'"
            )
        try:
            numeric = {
                k: NumericSummary(
                    knots=tuple(v["knots"]),
                    knot_probs=tuple(v["knot_probs"]),
                    z_mean=v["z_mean"],
                    z_sd=v["z_sd"],
                    bin_probs=tuple(v["bin_probs"]),
                    sd=v["sd"],
                    mean=v["mean"],
                    bad_rate=v["bad_rate"],
                    count=v["count"],
                )
                for k, v in data.get("numeric", {}).items()
            }
            categorical = {k: _categorical_from(v) for k, v in data.get("categorical", {}).items()}
            prediction = data.get("prediction") or {}
            pred_num = prediction.get("numeric")
            pred_cat = prediction.get("categorical")
            perf = data.get("performance")
            return cls(
                name=data["name"],
                numeric=numeric,
                categorical=categorical,
                prediction_numeric=NumericSummary(
                    **{
                        **pred_num,
                        "knots": tuple(pred_num["knots"]),
                        "knot_probs": tuple(pred_num["knot_probs"]),
                        "bin_probs": tuple(pred_num["bin_probs"]),
                    }
                )
                if pred_num
                else None,
                prediction_categorical=_categorical_from(pred_cat) if pred_cat else None,
                performance=PerformanceSummary(**perf) if perf else None,
                model_id=data.get("model_id"),
                model_version=data.get("model_version"),
                count=data.get("count", 0),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"reference profile {data.get('name')!r} is malformed: {exc}"
            ) from None


def _categorical_from(v: Mapping[str, Any]) -> CategoricalSummary:
    return CategoricalSummary(
        categories=tuple(v["categories"]),
        probs=tuple(v["probs"]),
        bad_rate=v["bad_rate"],
        count=v["count"],
    )


def category_key(value: object) -> str | None:
    """The string a categorical value is counted under; None for missing.

    >>> category_key(True), category_key(3), category_key(2.0), category_key(None)
    ('true', '3', '2', None)
    """
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float and value.is_integer():
        return str(int(value))
    return str(value)


def reference_cdf(summary: NumericSummary, x: np.ndarray) -> np.ndarray:
    """The reference's empirical CDF at each value (interpolated between knots; NaN stays
    NaN): what `normal_scores` and `bin_index` start from."""
    return np.interp(x, np.asarray(summary.knots), np.asarray(summary.knot_probs))


def normal_scores(
    summary: NumericSummary, x: np.ndarray, u: np.ndarray | None = None
) -> np.ndarray:
    """Map values to standard-normal scores through the reference CDF.

    Inside the reference range the empirical CDF (interpolated between knots) is sent
    through the normal quantile function; outside it the score continues linearly in
    reference standard deviations, then is clipped at +-`Z_CLIP`. Missing values stay NaN.
    The result is recentred and rescaled by the reference sample's own score moments, so
    under the reference it has mean 0 and variance 1 whatever the feature's distribution.
    ``u``: `reference_cdf` of ``x``, when the caller has it already.
    """
    knots = np.asarray(summary.knots)
    probs = np.asarray(summary.knot_probs)
    eps = 0.5 / max(summary.count, 1)
    if u is None:
        u = np.interp(x, knots, probs)
    z = ndtri(np.clip(u, eps, 1.0 - eps))
    if len(knots) > 1:
        scale = summary.sd if summary.sd > 0 else 1.0
        z_low = float(ndtri(max(probs[0], eps)))
        z_high = float(ndtri(min(probs[-1], 1.0 - eps)))
        z = np.where(x > knots[-1], z_high + (x - knots[-1]) / scale, z)
        z = np.where(x < knots[0], z_low - (knots[0] - x) / scale, z)
    z = np.clip(z, -Z_CLIP, Z_CLIP)
    return (z - summary.z_mean) / summary.z_sd


def bin_index(
    summary: NumericSummary, x: np.ndarray, bins: int, u: np.ndarray | None = None
) -> np.ndarray:
    """Equal-probability bin of each value (by reference CDF); NaN values give -1.
    ``u``: `reference_cdf` of ``x``, when the caller has it already."""
    if u is None:
        u = reference_cdf(summary, x)
    missing = np.isnan(u)
    idx = np.minimum((np.where(missing, 0.0, u) * bins).astype(np.int64), bins - 1)
    return np.where(missing, -1, idx)


def summarise_numeric(values: np.ndarray, bad: int, settings: DetectorSettings) -> NumericSummary:
    """Summary of a reference sample (NaN-free) of one numeric feature."""
    n = len(values)
    if n == 0:
        raise ConfigError("cannot summarise a numeric feature with no valid values")
    qs = np.quantile(values, np.linspace(0.0, 1.0, settings.quantile_knots))
    # Knots must increase strictly for interpolation; a tied quantile gets the mid-rank
    # cumulative probability of its value in the sample. The extreme knots too: a bounded
    # feature whose minimum holds 3 % of the values (the first year of a range, age 18)
    # must score like any other tied level, not like a one-in-n tail value, or the
    # variance tests see a point mass at |z| = 3.9 where the reference has none.
    knots = np.unique(qs)
    sorted_vals = np.sort(values)
    lo = np.searchsorted(sorted_vals, knots, side="left")
    hi = np.searchsorted(sorted_vals, knots, side="right")
    knot_probs = (lo + hi) / (2.0 * n)
    sd = float(values.std())
    provisional = NumericSummary(
        knots=tuple(float(k) for k in knots),
        knot_probs=tuple(float(p) for p in knot_probs),
        z_mean=0.0,
        z_sd=1.0,
        bin_probs=(),
        sd=sd,
        mean=float(values.mean()),
        bad_rate=0.0,
        count=n,
    )
    u = reference_cdf(provisional, values)
    z = normal_scores(provisional, values, u)
    z_sd = float(z.std())
    bins = bin_index(provisional, values, settings.histogram_bins, u)
    counts = np.bincount(bins, minlength=settings.histogram_bins).astype(np.float64)
    bin_probs = (counts + 0.5) / (n + 0.5 * settings.histogram_bins)
    return NumericSummary(
        knots=provisional.knots,
        knot_probs=provisional.knot_probs,
        z_mean=float(z.mean()),
        z_sd=z_sd if z_sd > 0 else 1.0,
        bin_probs=tuple(float(p) for p in bin_probs),
        sd=sd,
        mean=provisional.mean,
        bad_rate=(bad + 0.5) / (n + bad + 1.0),
        count=n,
    )


def summarise_categorical(
    counts: Counter[str], missing: int, settings: DetectorSettings
) -> CategoricalSummary:
    """Top-k summary of a categorical feature's reference counts."""
    n = sum(counts.values())
    top = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    top = top[: settings.top_k_categories]
    other = n - sum(counts[c] for c in top)
    raw = [counts[c] for c in top] + [other]
    k = len(raw)
    probs = [(c + 0.5) / (n + 0.5 * k) for c in raw]
    return CategoricalSummary(
        categories=tuple(top),
        probs=tuple(probs),
        bad_rate=(missing + 0.5) / (n + missing + 1.0),
        count=n,
    )


class ReferenceBuilder:
    """Accumulates raw reference events and turns them into a `ReferenceProfile`.

    Memory is bounded by ``max_events`` rows; later events are ignored.
    """

    def __init__(self, settings: DetectorSettings, max_events: int) -> None:
        self.settings = settings
        self.max_events = max_events
        self.features: list[Mapping[str, Any]] = []
        self.predictions: list[Any] = []
        self.labels: list[Any] = []

    @property
    def count(self) -> int:
        return len(self.features)

    @property
    def full(self) -> bool:
        return len(self.features) >= self.max_events

    def add(self, features: Mapping[str, Any], prediction: Any, label: Any = None) -> None:
        if self.full:
            return
        self.features.append(features)
        self.predictions.append(prediction)
        self.labels.append(label)

    def extend(self, rows: Iterable[tuple[Mapping[str, Any], Any, Any]]) -> None:
        for features, prediction, label in rows:
            self.add(features, prediction, label)

    def build(
        self, name: str, model_id: str | None = None, model_version: str | None = None
    ) -> ReferenceProfile:
        if not self.features:
            raise ConfigError(f"reference {name!r} has no events to summarise")
        names = _most_frequent_names(self.features, self.settings.max_monitored_features)
        numeric: dict[str, NumericSummary] = {}
        categorical: dict[str, CategoricalSummary] = {}
        for feature in names:
            column = [f.get(feature) for f in self.features]
            kind, summary = _summarise_column(column, self.settings)
            if kind == "numeric":
                numeric[feature] = summary  # type: ignore[assignment]
            elif kind == "categorical":
                categorical[feature] = summary  # type: ignore[assignment]
        pred_kind, pred_summary = _summarise_column(
            [p if not isinstance(p, tuple) else (p[0] if p else None) for p in self.predictions],
            self.settings,
        )
        return ReferenceProfile(
            name=name,
            numeric=numeric,
            categorical=categorical,
            prediction_numeric=pred_summary if pred_kind == "numeric" else None,  # type: ignore[arg-type]
            prediction_categorical=pred_summary if pred_kind == "categorical" else None,  # type: ignore[arg-type]
            performance=performance_summary(self.predictions, self.labels, self.settings),
            model_id=model_id,
            model_version=model_version,
            count=len(self.features),
        )


def _most_frequent_names(features: list[Mapping[str, Any]], limit: int) -> list[str]:
    """Feature names seen in the warm-up, sorted; at most ``limit``, the most frequent
    first when there are more (ties by name)."""
    seen: Counter[str] = Counter()
    for f in features:
        seen.update(f.keys())
    if len(seen) <= limit:
        return sorted(seen)
    kept = sorted(seen.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return sorted(name for name, _ in kept)


def _is_number(v: object) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _summarise_column(
    column: list[Any], settings: DetectorSettings
) -> tuple[str, NumericSummary | CategoricalSummary | None]:
    present = [v for v in column if v is not None]
    if not present:
        return "empty", None
    numbers = [v for v in present if _is_number(v)]
    if len(numbers) == len(present) and len(set(numbers)) > settings.low_cardinality_max:
        values = np.asarray(numbers, dtype=np.float64)
        return "numeric", summarise_numeric(values, len(column) - len(numbers), settings)
    counts = Counter(k for k in map(category_key, present) if k is not None)
    return "categorical", summarise_categorical(counts, len(column) - len(present), settings)


def infer_task(predictions: list[Any], labels: list[Any]) -> str | None:
    """``binary``, ``multiclass``, ``ranking`` or ``regression`` from labelled pairs."""
    pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if y is not None]
    if not pairs:
        return None
    p0 = pairs[0][0]
    if isinstance(p0, tuple):
        return "ranking"
    if isinstance(p0, str):
        return "multiclass"
    if all(y in (0, 1) or isinstance(y, bool) for _, y in pairs):
        return "binary"
    return "regression"


def prediction_error(
    task: str, prediction: Any, label: Any, threshold: float, tolerance: float | None
) -> int | None:
    """1 for a wrong prediction, 0 for a right one, None when it cannot be judged."""
    if label is None:
        return None
    if task == "binary":
        if isinstance(prediction, (int, float)):
            return int((prediction >= threshold) != bool(label))
        return int(category_key(prediction) != category_key(label))
    if task == "multiclass":
        return int(category_key(prediction) != category_key(label))
    if task == "ranking":
        return int(category_key(label) not in prediction) if isinstance(prediction, tuple) else None
    if task == "regression" and isinstance(prediction, (int, float)) and _is_number(label):
        if tolerance is None:
            return None
        return int(abs(prediction - label) > tolerance)
    return None


def _probability(task: str | None, prediction: Any) -> float | None:
    """The prediction as a probability of the positive class, when it is one: a float in
    [0, 1] of a binary model (or of a model whose task is not known yet). Integers are
    hard labels, not probabilities."""
    if type(prediction) is not float or task not in (None, "", "binary"):
        return None
    return prediction if 0.0 <= prediction <= 1.0 else None


def estimated_error(
    task: str | None, prediction: Any, scores: Mapping[str, float] | None, threshold: float
) -> float:
    """Label-free expected error of one prediction from the model's own confidence (as in
    confidence-based performance estimation): right only if the scores are calibrated.
    NaN when the prediction carries no probability.

    >>> estimated_error("binary", 0.9, None, 0.5), estimated_error("binary", 0.2, None, 0.5)
    (0.09999999999999998, 0.2)
    >>> estimated_error("multiclass", "b", {"a": 0.3, "b": 0.7}, 0.5)
    0.30000000000000004
    """
    if scores:
        total = sum(scores.values())
        if total <= 0:
            return math.nan
        chosen = scores.get(prediction) if isinstance(prediction, str) else None
        return 1.0 - (max(scores.values()) if chosen is None else chosen) / total
    p = _probability(task, prediction)
    if p is None:
        return math.nan
    return 1.0 - p if p >= threshold else p


def brier(task: str | None, prediction: Any, label: Any) -> float:
    """Squared error of a probability against a 0/1 label; NaN when either is not one."""
    p = _probability(task, prediction)
    if p is None or label not in (0, 1):
        return math.nan
    return (p - float(label)) ** 2


def positive(task: str | None, prediction: Any, threshold: float) -> float:
    """1.0 for a positive prediction, 0.0 for a negative one, NaN for other outputs."""
    if type(prediction) is bool or (type(prediction) is int and prediction in (0, 1)):
        return float(prediction)
    p = _probability(task, prediction)
    return math.nan if p is None else float(p >= threshold)


_BINARY_LABEL_TYPES = frozenset({bool, int, float})
_first, _second = itemgetter(0), itemgetter(1)


def split_pairs(pairs: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """(prediction, label) pairs as a list of predictions and a list of labels.

    >>> split_pairs([(0.9, 1), (0.2, 0)])
    ([0.9, 0.2], [1, 0])
    """
    return list(map(_first, pairs)), list(map(_second, pairs))


def _binary_probabilities(
    task: str | None, predictions: list[Any], labels: list[Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """A binary model's float predictions and its 0/1 labels as arrays, or None when the
    batch has anything else (then the pair-by-pair functions judge it)."""
    if (
        task != "binary"
        or not predictions
        or set(map(type, predictions)) != {float}
        or not set(map(type, labels)) <= _BINARY_LABEL_TYPES
    ):
        return None
    y = np.array(labels, dtype=np.float64)
    if not ((y == 0.0) | (y == 1.0)).all():
        return None
    return np.array(predictions, dtype=np.float64), y


def _binary_errors(p: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """1.0 where the thresholded probability disagrees with the 0/1 label, else 0.0."""
    return ((p >= threshold) != (y == 1.0)).astype(np.float64)


def prediction_errors(
    task: str,
    predictions: list[Any],
    labels: list[Any],
    threshold: float,
    tolerance: float | None,
) -> np.ndarray:
    """`prediction_error` of every pair as floats (NaN where it cannot be judged); a
    binary model's probabilities in one vectorised step."""
    binary = _binary_probabilities(task, predictions, labels)
    if binary is not None:
        return _binary_errors(*binary, threshold)
    return np.array(
        [
            math.nan if (e := prediction_error(task, p, y, threshold, tolerance)) is None else e
            for p, y in zip(predictions, labels, strict=True)
        ],
        dtype=np.float64,
    )


def label_values(
    task: str | None,
    predictions: list[Any],
    labels: list[Any],
    threshold: float,
    scored: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (prediction, label) pair: the error (1 or 0; NaN when it cannot be judged),
    the Brier score and the label-free estimated error (NaN unless ``scored``: the
    predictions are probabilities), and the outcome class (0 or 1 for a binary model's
    label, whose delays are learnt apart; NaN for any other). Without a ``task``, each pair's
    own is inferred. A binary model's probabilities take a vectorised path that gives
    the same values as `prediction_error`, `brier` and `estimated_error`.

    >>> [v.tolist() for v in label_values("binary", [0.9, 0.2], [0, False], 0.5, True)]
    [[1.0, 0.0], [0.81, 0.04000000000000001], [0.09999999999999998, 0.2], [0.0, 0.0]]
    """
    n = len(predictions)
    # Without a task, a pair of a float prediction and a 0/1 label is a binary model's
    # (`infer_task`): a batch of nothing else takes the vectorised path as well.
    if (task or "binary") == "binary":
        found = binary_label_values(predictions, labels, threshold, scored)
        if found is not None:
            return found
    error, scores, estimate, classes = (np.empty(n) for _ in range(4))
    for i, (prediction, label) in enumerate(zip(predictions, labels, strict=True)):
        task_here = task or infer_task([prediction], [label]) or ""
        e = prediction_error(task_here, prediction, label, threshold, None)
        error[i] = math.nan if e is None else e
        if scored:
            scores[i] = brier(task_here, prediction, label)
            estimate[i] = estimated_error(task_here, prediction, None, threshold)
        else:
            scores[i] = estimate[i] = math.nan
        # A class of its own only for a binary model's label: a regression's label of
        # exactly 0 or 1 is one value among many (`LabelMaturity` learns its delays with
        # the others').
        zero_one = label is True or label is False or label in (0, 1)
        classes[i] = float(label) if zero_one and task_here == "binary" else math.nan
    return error, scores, estimate, classes


def binary_label_values(
    predictions: list[Any], labels: list[Any], threshold: float, scored: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """`label_values` of a binary model's float predictions and 0/1 labels in one
    vectorised step, or None when the pairs hold anything else."""
    binary = _binary_probabilities("binary", predictions, labels)
    if binary is None:
        return None
    p, y = binary
    error = _binary_errors(p, y, threshold)
    if not scored:
        nothing = np.full(len(p), math.nan)
        return error, nothing, nothing.copy(), y
    probability = (p >= 0.0) & (p <= 1.0)
    scores = np.where(probability, (p - y) ** 2, math.nan)
    estimate = np.where(probability, np.where(p >= threshold, 1.0 - p, p), math.nan)
    return error, scores, estimate, y


def missing_share(features: Mapping[str, Any]) -> float:
    """Share of the inputs that are missing (None); NaN without inputs."""
    if not features:
        return math.nan
    return sum(v is None for v in features.values()) / len(features)


def performance_summary(
    predictions: list[Any], labels: list[Any], settings: DetectorSettings
) -> PerformanceSummary | None:
    """Offline error rate of labelled (prediction, label) pairs, or None without labels."""
    task = infer_task(predictions, labels)
    if task is None:
        return None
    tolerance = None
    if task == "regression":
        residuals = [
            abs(p - y)
            for p, y in zip(predictions, labels, strict=True)
            if _is_number(y) and isinstance(p, (int, float))
        ]
        if not residuals:
            return None
        tolerance = float(np.quantile(residuals, 0.9))
    errors = [
        e
        for p, y in zip(predictions, labels, strict=True)
        if (e := prediction_error(task, p, y, settings.classification_threshold, tolerance))
        is not None
    ]
    if not errors:
        return None
    return PerformanceSummary(
        task=task,
        error_rate=(sum(errors) + 0.5) / (len(errors) + 1.0),
        count=len(errors),
        residual_tolerance=tolerance,
    )


def to_wire(value: Any) -> Any:
    """A prediction value in JSON-compatible form (ranked item tuples become tagged lists)."""
    return {"items": list(value)} if isinstance(value, tuple) else value


def from_wire(value: Any) -> Any:
    """Inverse of `to_wire`."""
    return tuple(value["items"]) if isinstance(value, dict) else value
