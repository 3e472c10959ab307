"""Reference profiles: building from files, loading, and the online/offline comparison."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.detectors.drift.reference import (
    ReferenceProfile,
    brier,
    estimated_error,
    infer_task,
    label_values,
    prediction_error,
    prediction_errors,
)
from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import encode
from driftline.schemas.exceptions import ConfigError
from driftline.streams.config import load_config, load_profile
from driftline.streams.reference_build import build_profile
from tests.conftest import run_engine


def write_jsonl(path: Path, events) -> Path:
    path.write_bytes(b"".join(encode(e) + b"\n" for e in events))
    return path


def test_profile_from_jsonl_events_has_features_and_offline_accuracy(make_stream, tmp_path) -> None:
    """Predictions joined with outcomes give feature summaries and an offline error rate."""
    events = make_stream(scenario="stationary", n_predictions=20_000, change_at=20_000, seed=8)
    profile = build_profile(write_jsonl(tmp_path / "train.jsonl", events), model_id="credit-risk")
    assert sorted(profile.numeric) == [f"x{i}" for i in range(10)]
    assert sorted(profile.categorical) == ["device", "region"]
    assert profile.prediction_numeric is not None
    assert profile.performance is not None
    assert profile.performance.task == "binary"
    assert 0.2 < profile.performance.error_rate < 0.4


def test_profile_round_trips_through_its_file_format(make_stream, tmp_path) -> None:
    """to_dict/from_dict are inverse, through JSON."""
    events = make_stream(scenario="stationary", n_predictions=5_000, change_at=5_000, seed=8)
    profile = build_profile(write_jsonl(tmp_path / "t.jsonl", events), model_id="m", name="train")
    path = tmp_path / "profile.json"
    path.write_bytes(orjson.dumps(profile.to_dict()))
    assert load_profile(path) == profile


def test_profile_from_csv(tmp_path) -> None:
    """CSV columns become features; label and prediction columns are recognised."""
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["age", "city", "prediction", "label"])
        for i in range(500):
            writer.writerow([20 + i % 50, ["oslo", "rome"][i % 2], "yes" if i % 3 else "no", "yes"])
    profile = build_profile(path, model_id="m")
    assert list(profile.numeric) == ["age"]
    assert list(profile.categorical) == ["city"]
    assert profile.performance is not None
    assert profile.performance.task == "multiclass"
    assert abs(profile.performance.error_rate - 1 / 3) < 0.01


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json\n", "train.jsonl:1: not valid JSON"),
        (b'{"type": "prediction", "event_id": "e"}\n', "train.jsonl:1: request_id is required"),
        (b'{"x": 1}\n', "expected a prediction, an outcome, or an object with 'features'"),
        (b"", "holds no rows"),
    ],
)
def test_bad_training_files_name_the_line(tmp_path, content, message) -> None:
    """Errors in a training file say which line and what is wrong."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        build_profile(path, model_id="m")
    assert message in str(info.value)


def test_bad_profiles_are_rejected_clearly(tmp_path) -> None:
    """A file that is not a profile, or a profile without a model, is refused by name."""
    path = tmp_path / "p.json"
    path.write_bytes(b'{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a driftline reference profile"):
        load_profile(path)
    anonymous = ReferenceProfile(name="x", count=1).to_dict()
    path.write_bytes(orjson.dumps(anonymous))
    with pytest.raises(ConfigError, match="names no model_id"):
        load_config(references=[str(path)])


def test_offline_profile_reveals_an_online_offline_gap(make_stream, tmp_path) -> None:
    """With an offline profile, live accuracy below the offline figure is reported as
    online_offline_gap, and training-serving skew as data drift against the profile."""
    train = make_stream(scenario="stationary", n_predictions=20_000, change_at=20_000, seed=9)
    profile = build_profile(write_jsonl(tmp_path / "train.jsonl", train), model_id="credit-risk")
    live = make_stream(scenario="concept", n_predictions=30_000, change_at=0, seed=10)
    engine = Engine(DetectorSettings(), {"credit-risk": profile})
    decisions = run_engine(live, engine=engine)
    kinds = {d.kind for d in decisions}
    assert "online_offline_gap" in kinds
    gap = next(d for d in decisions if d.kind == "online_offline_gap")
    assert gap.evidence["reference"] == "profile:train"
    signal = gap.evidence["signals"][0]
    assert signal["online_error_rate"] > signal["offline_error_rate"] + 0.02


def test_profile_without_change_is_quiet(make_stream, tmp_path) -> None:
    """Live traffic like the training data raises nothing against the offline profile."""
    train = make_stream(scenario="stationary", n_predictions=20_000, change_at=20_000, seed=12)
    profile = build_profile(write_jsonl(tmp_path / "train.jsonl", train), model_id="credit-risk")
    live = make_stream(scenario="stationary", n_predictions=60_000, change_at=60_000, seed=13)
    assert run_engine(live, engine=Engine(DetectorSettings(), {"credit-risk": profile})) == []


def test_inputs_unlike_training_from_go_live_are_training_serving_skew(
    make_stream, tmp_path
) -> None:
    """Inputs shifted from the first live event on are skew (online_offline_gap with the
    comparison named); the same shift arriving later in the version's life is data drift."""
    train = make_stream(scenario="stationary", n_predictions=20_000, change_at=20_000, seed=14)
    profile = build_profile(write_jsonl(tmp_path / "train.jsonl", train), model_id="credit-risk")
    from_start = make_stream(scenario="mean_shift", n_predictions=40_000, change_at=0, seed=15)
    decisions = run_engine(from_start, engine=Engine(DetectorSettings(), {"credit-risk": profile}))
    skew = [d for d in decisions if d.evidence.get("comparison") == "training_serving_skew"]
    assert [(d.type, d.kind, d.features[0]) for d in skew] == [
        ("alert", "online_offline_gap", "x0")
    ]
    assert "data_drift" not in {d.kind for d in decisions}  # the same shift, reported once
    later = make_stream(scenario="mean_shift", n_predictions=60_000, change_at=30_000, seed=15)
    decisions = run_engine(later, engine=Engine(DetectorSettings(), {"credit-risk": profile}))
    alerts = {d.kind for d in decisions if d.type == "alert"}
    assert "data_drift" in alerts
    assert "online_offline_gap" not in alerts


def _one_by_one(task, predictions, labels, threshold, scored):
    """What every labelled pair's values were, computed one pair at a time."""
    rows = []
    for p, y in zip(predictions, labels, strict=True):
        here = task or infer_task([p], [y]) or ""
        e = prediction_error(here, p, y, threshold, None)
        zero_one = y is True or y is False or y in (0, 1)
        rows.append(
            (
                math.nan if e is None else float(e),
                brier(here, p, y) if scored else math.nan,
                estimated_error(here, p, None, threshold) if scored else math.nan,
                float(y) if zero_one and here == "binary" else math.nan,
            )
        )
    return [list(column) for column in zip(*rows, strict=True)]


@pytest.mark.parametrize("scored", [True, False])
def test_label_values_of_a_batch_equal_those_of_each_pair(scored) -> None:
    """The vectorised path (a binary model's probabilities) and the general one give the
    values pair by pair, bit for bit: thresholds hit exactly, scores outside [0, 1],
    labels as bools, ints and floats; a batch the fast path cannot take (a string label,
    a hard 0/1 prediction, a missing label, another task) falls back, with a task or
    without one (each pair's own inferred). Only a binary model's labels have an outcome
    class: a regression's or multiclass model's label of 0 or 1 has none (one such label
    once made the label maturity wait for a second outcome forever)."""
    rng = np.random.default_rng(7)
    p = [float(x) for x in rng.uniform(-0.2, 1.2, 400)] + [0.5, 0.0, 1.0]
    y = [bool(v) if i % 3 == 0 else (float(v) if i % 3 == 1 else int(v))
         for i, v in enumerate(rng.integers(0, 2, len(p)))]  # fmt: skip
    batches = [
        ("binary", p, y),
        ("binary", [*p, 1], [*y, 1]),
        ("binary", [*p, 0.3], [*y, "1"]),
        (None, p, y),
        (None, [*p, 1], [*y, 1]),
        (None, [*p, 0.3], [*y, None]),
        ("multiclass", ["a", "b", "a"], ["a", "a", None]),
        ("multiclass", ["a", "b"], [0, True]),
        ("regression", [0.7, 2.0, 3.1], [1.0, 0, 2.5]),
    ]
    for task, predictions, labels in batches:
        got = [v.tolist() for v in label_values(task, predictions, labels, 0.5, scored)]
        want = _one_by_one(task, predictions, labels, 0.5, scored)
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True), task
        if task in ("multiclass", "regression"):
            assert np.isnan(got[3]).all()


def test_prediction_errors_of_a_batch_equal_those_of_each_pair() -> None:
    """What the concept monitors read: the vectorised binary path and the general one
    (regression with its tolerance, rankings, unjudgeable pairs as NaN)."""
    rng = np.random.default_rng(8)
    p = [float(x) for x in rng.uniform(0, 1, 300)] + [0.5]
    y = [int(v) for v in rng.integers(0, 2, len(p))]
    batches = [
        ("binary", p, y, None),
        ("binary", p, [*y[:-1], None], None),
        ("regression", [1.0, 2.0, 3.5, 4], [1.2, 5.0, None, 4.0], 0.5),
        ("ranking", [("a", "b"), ("c",), "x"], ["b", "a", "a"], None),
    ]
    for task, predictions, labels, tolerance in batches:
        got = prediction_errors(task, predictions, labels, 0.5, tolerance)
        want = [
            math.nan if (e := prediction_error(task, a, b, 0.5, tolerance)) is None else e
            for a, b in zip(predictions, labels, strict=True)
        ]
        assert np.array_equal(got, np.array(want, dtype=float), equal_nan=True), task
