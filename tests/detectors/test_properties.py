"""Property-based tests: no input can make the decoder or the engine raise anything but
a dead-letter reason, and what is encoded decodes to itself."""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import MAX_FEATURES, REASONS, decode, encode
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.records import Outcome, Prediction

T0 = 1_700_000_000_000
PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

names = st.text(min_size=1, max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
feature_values = st.one_of(
    finite, st.integers(-(2**53), 2**53), st.text(max_size=30), st.booleans(), st.none()
)
predictions = st.builds(
    Prediction,
    event_id=names,
    request_id=names,
    model_id=st.sampled_from(["m1", "m2"]),
    model_version=st.sampled_from(["v1", "v2"]),
    ts=st.integers(T0, T0 + 10**9),
    features=st.dictionaries(names, feature_values, max_size=12),
    prediction=st.one_of(
        st.floats(0, 1), st.sampled_from(["yes", "no"]), st.tuples(names, names).map(tuple)
    ),
    scores=st.none() | st.dictionaries(names, st.floats(0, 1), min_size=1, max_size=3),
    role=st.sampled_from(["champion", "challenger", "shadow", "canary"]),
    segment=st.none() | st.dictionaries(names, names, min_size=1, max_size=3),
    exploration=st.booleans(),
)
outcomes = st.builds(
    Outcome,
    event_id=names,
    request_id=names,
    model_id=st.sampled_from(["m1", "m2"]),
    ts=st.integers(T0, T0 + 10**9),
    label=st.one_of(st.integers(0, 1), st.booleans(), st.floats(-1e6, 1e6), st.none()),
)


def decodes_or_dead_letters(raw: bytes) -> None:
    try:
        decode(raw)
    except DecodeError as exc:
        assert exc.reason in REASONS


@PROPERTY
@given(st.binary(max_size=2_000))
def test_any_bytes_give_an_event_or_a_dead_letter_reason(raw: bytes) -> None:
    """Arbitrary bytes never raise anything but a DecodeError with a known reason."""
    decodes_or_dead_letters(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(
            [
                *("type", "event_id", "request_id", "model_id", "model_version", "ts"),
                *("features", "prediction", "label", "scores", "role", "segment", "action"),
                "exploration",
            ]
        ),
        json_values,
    )
)
def test_any_json_object_gives_an_event_or_a_dead_letter_reason(obj: dict) -> None:
    """Objects with the contract's field names holding any JSON values (integers beyond
    64 bits included: the standard library writes them, orjson would refuse)."""
    decodes_or_dead_letters(json.dumps(obj).encode())


@PROPERTY
@given(st.one_of(predictions, outcomes))
def test_decode_of_encode_is_the_identity(event) -> None:
    """Every record survives its wire form unchanged."""
    assert decode(encode(event)) == event


def test_extreme_but_valid_and_hostile_values() -> None:
    """1e308, 10,000 features, 1 MiB strings, deep nesting and lone surrogates: each is an
    event or a dead letter with a reason, never another exception."""
    base = {
        "type": "prediction",
        "event_id": "e",
        "request_id": "r",
        "model_id": "m",
        "model_version": "v",
        "ts": T0,
        "prediction": 0.5,
    }
    cases = [
        orjson.dumps({**base, "features": {"x": 1e308, "y": -1e308}}),
        orjson.dumps({**base, "features": {f"f{i}": i for i in range(MAX_FEATURES)}}),
        orjson.dumps({**base, "features": {f"f{i}": i for i in range(MAX_FEATURES + 1)}}),
        orjson.dumps({**base, "features": {"notes": "x" * (1 << 20)}}),
        orjson.dumps({**base, "features": {"notes": "x" * 900_000}}),
        b'{"features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        orjson.dumps({**base, "features": {"x": 1}})[:-1] + b', "nested": {"a": {"b": {}}}}',
        b'{"type": "prediction", "event_id": "\\ud800", "features": {}}',
        '{"type": "prediction", "event_id": "\udcff"}'.encode("utf-8", "surrogatepass"),
        b"\xef\xbb\xbf{}",
        b"1e999",
    ]
    for raw in cases:
        decodes_or_dead_letters(raw)
    assert decode(cases[0]).features["x"] == 1e308
    assert len(decode(cases[1]).features) == MAX_FEATURES


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(st.one_of(predictions, outcomes), min_size=1, max_size=300))
def test_the_engine_takes_any_valid_events(events) -> None:
    """Any sequence of valid events (mixed types, repeated ids, shuffled times, several
    models, versions and roles) is processed without an exception, and counted."""
    engine = Engine(DetectorSettings(warmup_events=100, window_events=50))
    half = len(events) // 2
    engine.process(events[:half])
    engine.process(events[half:])
    counts = engine.counts
    assert counts["events"] == len(events)
    assert counts["predictions"] + counts["outcomes"] + counts["duplicates"] == len(events)
