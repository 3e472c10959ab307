"""Seeded synthetic model traffic with injected changes, for tests, benchmarks and the demo.

Ten numeric features of assorted shapes (normal, lognormal, uniform, exponential,
Student-t, gamma, beta), two categorical ones, a label from a fixed logistic model, a
calibrated score as the prediction, and outcomes that arrive hundreds to thousands of
events after their prediction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from msgspec.structs import replace

from driftline.schemas.records import Event, Outcome, Prediction

SCENARIOS = ("stationary", "mean_shift", "variance", "categorical", "concept", "prediction_only")
"""What changes at the change point (nothing for ``stationary``)."""

NUMERIC = tuple(f"x{i}" for i in range(10))
REGIONS = ("north", "south", "east", "west", "central")
REGION_PROBS = (0.40, 0.25, 0.15, 0.12, 0.08)
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_PROBS = (0.6, 0.3, 0.1)

CHANGED_FEATURE = {
    "mean_shift": "x0",
    "variance": "x6",
    "categorical": "region",
    "concept": None,
    "prediction_only": "prediction",
}
"""The feature each scenario changes (what a detector should name first)."""

TS0_MS = 1_700_000_000_000
"""Event time of the first prediction."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A synthetic stream: what happens, when, and how labels arrive."""

    scenario: str = "stationary"
    n_predictions: int = 100_000
    change_at: int = 50_000
    seed: int = 0
    model_id: str = "credit-risk"
    model_version: str = "v1"
    label_rate: float = 0.5
    """Share of predictions whose outcome is ever observed."""
    label_delay: tuple[int, int] = (500, 5_000)
    """Outcome arrives this many events (uniform) after its prediction."""
    event_ms: int = 10
    """Event-time spacing of predictions."""
    mean_shift_sd: float = 0.3
    variance_ratio: float = 1.5


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "x0": rng.normal(0.0, 1.0, n),
        "x1": rng.lognormal(0.0, 0.5, n),
        "x2": rng.uniform(0.0, 1.0, n),
        "x3": rng.normal(5.0, 2.0, n),
        "x4": rng.exponential(1.0, n),
        "x5": rng.standard_t(5, n),
        "x6": rng.normal(0.0, 1.0, n),
        "x7": rng.gamma(2.0, 1.0, n),
        "x8": rng.normal(-3.0, 0.5, n),
        "x9": rng.beta(2.0, 5.0, n),
    }


def _logit(x: dict[str, np.ndarray], region: np.ndarray, device: np.ndarray) -> np.ndarray:
    x1_std = (np.log(x["x1"])) / 0.5
    return (
        0.8 * x["x0"]
        - 0.6 * x1_std
        + 0.5 * (x["x3"] - 5.0) / 2.0
        + 0.4 * (region == 1)
        - 0.3 * (device == 0)
        - 0.2
    )


def generate(spec: StreamSpec) -> list[Event]:
    """All events of the stream in arrival order (predictions and their outcomes)."""
    if spec.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {spec.scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(spec.seed)
    n = spec.n_predictions
    x = _draw(rng, n)
    after = np.arange(n) >= spec.change_at
    region_probs = np.array(REGION_PROBS)
    region = rng.choice(len(REGIONS), size=n, p=region_probs)
    device = rng.choice(len(DEVICES), size=n, p=np.array(DEVICE_PROBS))
    if spec.scenario == "mean_shift":
        x["x0"] = np.where(after, x["x0"] + spec.mean_shift_sd, x["x0"])
    elif spec.scenario == "variance":
        x["x6"] = np.where(after, x["x6"] * np.sqrt(spec.variance_ratio), x["x6"])
    elif spec.scenario == "categorical":
        changed = region_probs.copy()
        changed[2] *= 2.0
        others = np.arange(len(REGIONS)) != 2
        changed[others] *= (1.0 - changed[2]) / changed[others].sum()
        region = np.where(after, rng.choice(len(REGIONS), size=n, p=changed), region)
    logit = _logit(x, region, device)
    true_logit = logit.copy()
    if spec.scenario == "concept":
        true_logit = np.where(after, logit - 1.0 * (x["x3"] - 5.0) / 2.0 - 1.6 * x["x0"], logit)
    served = logit + (0.5 * after if spec.scenario == "prediction_only" else 0.0)
    score = 1.0 / (1.0 + np.exp(-served))
    label = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-true_logit))
    observed = rng.uniform(size=n) < spec.label_rate
    lo, hi = spec.label_delay
    delay = rng.integers(lo, hi + 1, size=n)
    return list(_merge(spec, x, region, device, score, label, observed, delay))


def _merge(
    spec: StreamSpec,
    x: dict[str, np.ndarray],
    region: np.ndarray,
    device: np.ndarray,
    score: np.ndarray,
    label: np.ndarray,
    observed: np.ndarray,
    delay: np.ndarray,
) -> Iterator[Event]:
    n = spec.n_predictions
    idx = np.arange(n)
    outcome_pos = idx + delay + 0.5
    keep = observed & (outcome_pos < n)
    keys = np.concatenate([idx.astype(np.float64), outcome_pos[keep]])
    source = np.concatenate([idx, -1 - idx[keep]])
    order = np.argsort(keys, kind="stable")
    columns = [x[name].round(6).tolist() for name in NUMERIC]
    rows = list(zip(*columns, strict=True))
    regions = [REGIONS[r] for r in region]
    devices = [DEVICES[d] for d in device]
    scores = score.round(6).tolist()
    labels = label.astype(int).tolist()
    ts = (TS0_MS + idx * spec.event_ms).tolist()
    seed = spec.seed
    for s in source[order].tolist():
        if s >= 0:
            features: dict[str, float | int | str | bool | None] = dict(
                zip(NUMERIC, rows[s], strict=True)
            )
            features["region"] = regions[s]
            features["device"] = devices[s]
            yield Prediction(
                event_id=f"p-{seed}-{s}",
                request_id=f"r-{seed}-{s}",
                model_id=spec.model_id,
                model_version=spec.model_version,
                ts=ts[s],
                features=features,
                prediction=scores[s],
            )
        else:
            i = -1 - s
            yield Outcome(
                event_id=f"o-{seed}-{i}",
                request_id=f"r-{seed}-{i}",
                model_id=spec.model_id,
                ts=ts[i] + int(delay[i]) * spec.event_ms,
                label=labels[i],
            )


def with_canary(
    events: list[Event],
    share: float,
    flip: float,
    seed: int,
    version: str = "v2",
    *,
    shrink: float = 0.0,
    missing: float = 0.0,
    outcome_delay_ms: int = 0,
) -> list[Event]:
    """Route a ``share`` of predictions to a canary ``version``.

    The canary inverts a fraction ``flip`` of its scores (about 5 error-rate points at
    flip=0.12 on these streams), pulls its scores towards 0.5 by ``shrink`` (less
    confident, same decisions), loses each input with probability ``missing``, and its
    outcomes are observed ``outcome_delay_ms`` later.
    """
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    routed: set[str] = set()
    for event in events:
        if isinstance(event, Prediction) and rng.uniform() < share:
            score = event.prediction
            if isinstance(score, float):
                if rng.uniform() < flip:
                    score = 1.0 - score
                score = round(0.5 + (score - 0.5) * (1.0 - shrink), 6)
            features = event.features
            if missing:
                features = {k: None if rng.uniform() < missing else v for k, v in features.items()}
            routed.add(event.request_id)
            event = replace(  # noqa: PLW2901 (the event is replaced by its canary copy)
                event, model_version=version, features=features, prediction=score, role="canary"
            )
        elif isinstance(event, Outcome) and event.request_id in routed and outcome_delay_ms:
            event = replace(event, ts=event.ts + outcome_delay_ms)  # noqa: PLW2901
        out.append(event)
    return out


def with_promotion(
    events: list[Event], at: int, flip: float, seed: int, *, shadow_old: bool = False
) -> list[Event]:
    """From the ``at``-th prediction on, champion ``v2`` replaces ``v1`` and inverts a
    fraction ``flip`` of the scores; with ``shadow_old``, ``v1`` keeps scoring the same
    requests as a shadow."""
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    served = 0
    for event in events:
        if isinstance(event, Prediction):
            served += 1
            if served > at:
                score = event.prediction
                if isinstance(score, float) and rng.uniform() < flip:
                    score = 1.0 - score
                out.append(replace(event, model_version="v2", prediction=score))
                if shadow_old:
                    out.append(replace(event, event_id=f"{event.event_id}-s", role="shadow"))
                continue
        out.append(event)
    return out


REGRESSION_NOISE = 10.0
"""Spread of the noise `as_task` adds to a regression's labels (100 times the 0/1
label): the offline residuals' 90th percentile, the tolerance, is then about 70."""


def as_task(events: list[Event], task: str, seed: int) -> list[Event]:
    """The simulator's binary stream as another task's: ``multiclass`` (the class
    ``refer`` where the score is 0.5 or more, else ``approve``; the label ``refer`` for a
    1: the binary model's errors exactly) or ``regression`` (100 times the score,
    against 100 times the label plus normal noise, `REGRESSION_NOISE`); ``binary`` gives
    the stream back."""
    if task == "binary":
        return events
    if task not in ("multiclass", "regression"):
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    for e in events:
        if type(e) is Prediction:
            p = float(e.prediction)  # type: ignore[arg-type]  # the simulator's: a score
            value = ("refer" if p >= 0.5 else "approve") if task == "multiclass" else 100.0 * p
            out.append(replace(e, prediction=value))
        elif type(e) is Outcome and e.label is not None:
            if task == "multiclass":
                out.append(replace(e, label="refer" if e.label else "approve"))
            else:
                y = float(e.label)  # the simulator's: 0 or 1
                noisy = 100.0 * y + float(rng.normal(0.0, REGRESSION_NOISE))
                out.append(replace(e, label=round(noisy, 3)))
        else:
            out.append(e)
    return out


def hostile(n: int, *, one_model: bool = False, t0: int = TS0_MS) -> Iterator[Event]:
    """Predictions, each followed by its outcome, where every id and value is new: a new
    model id (or one model with ``one_model``), version, segment value, category and
    feature name per event (the unbounded-cardinality stream of the reliability tests and
    ``benchmarks/cardinality.py``)."""
    for i in range(n):
        model = "m" if one_model else f"m{i}"
        yield Prediction(
            event_id=f"p{i}",
            request_id=f"r{i}",
            model_id=model,
            model_version=f"v{i}",
            ts=t0 + i,
            features={"x": float(i % 97), f"f{i}": 1.0, "colour": f"c{i}"},
            prediction=0.3,
            segment={"user": f"u{i}"},
            action="act",
        )
        yield Outcome(f"o{i}", f"r{i}", model, t0 + i + 1, i % 2)
