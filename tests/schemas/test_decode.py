"""Every way an input message can be rejected, and what is accepted."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.schemas import DecodeError, Outcome, Prediction, decode, encode, parse_ts
from driftline.schemas.decode import (
    _FAST,
    MAX_FEATURES,
    MAX_TS_MS,
    MIN_TS_MS,
    _decode_checked,
)

VALID = {
    "type": "prediction",
    "event_id": "e1",
    "request_id": "r1",
    "model_id": "m",
    "model_version": "v1",
    "ts": 1_700_000_000_000,
    "features": {"age": 42, "income": 1.5, "city": "Oslo", "vip": True, "note": None},
    "prediction": 0.7,
}


def reject(obj: object, expect: str | None = None, raw: bytes | None = None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(raw if raw is not None else orjson.dumps(obj), expect)
    return info.value


def with_(**changes: object) -> dict[str, object]:
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def test_valid_prediction_decodes_to_typed_record() -> None:
    """A valid prediction becomes a Prediction with defaults filled in."""
    event = decode(orjson.dumps(VALID))
    assert isinstance(event, Prediction)
    assert (event.model_id, event.role, event.ts, event.prediction) == (
        "m",
        "champion",
        1_700_000_000_000,
        0.7,
    )


def test_round_trip_through_encode() -> None:
    """encode() gives bytes that decode to an equal record."""
    event = decode(orjson.dumps(with_(prediction=["a", "b"], role="canary", segment={"r": "x"})))
    assert decode(encode(event)) == event


def test_type_optional_on_its_topic_but_must_agree() -> None:
    """On the predictions topic 'type' may be absent; an outcome there is wrong_topic."""
    body = with_(type=...)
    assert isinstance(decode(orjson.dumps(body), "prediction"), Prediction)
    assert reject(with_(type="outcome"), "prediction").reason == "wrong_topic"
    assert reject(body).reason == "schema_violation"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'{"x": 1e999}', "non_finite_number"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
    ],
)
def test_unparseable_messages(raw: bytes, reason: str) -> None:
    """Bytes that are not a JSON object are rejected with the right reason."""
    assert reject(None, raw=raw).reason == reason


def test_too_large_is_checked_before_parsing() -> None:
    """A message over the byte limit is too_large, whatever it holds."""
    with pytest.raises(DecodeError) as info:
        decode(b" " * 100, max_bytes=50)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("changes", "reason", "names"),
    [
        ({"event_id": ...}, "schema_violation", "event_id is required"),
        ({"event_id": ""}, "schema_violation", "event_id must be a non-empty string"),
        ({"request_id": 5}, "schema_violation", "request_id"),
        ({"model_id": None}, "schema_violation", "model_id"),
        ({"model_version": ...}, "schema_violation", "model_version"),
        ({"features": [1, 2]}, "schema_violation", "features must be an object"),
        (
            {"features": {"age": {"x": 1}}},
            "schema_violation",
            "features.age must be number|string|bool|null, got object",
        ),
        (
            {"features": {"tags": ["a"]}},
            "schema_violation",
            "features.tags must be number|string|bool|null, got array",
        ),
        ({"prediction": ...}, "schema_violation", "prediction is required"),
        (
            {"prediction": True},
            "schema_violation",
            "prediction must be number|string|array of strings, got bool",
        ),
        ({"prediction": ["a", 1]}, "schema_violation", "array must hold only strings"),
        ({"scores": {"a": 1.5}}, "schema_violation", "scores.a is 1.5, outside [0, 1]"),
        ({"scores": {"a": "x"}}, "schema_violation", "scores.a must be a number"),
        ({"scores": [0.5]}, "schema_violation", "scores must be an object"),
        ({"role": "boss"}, "schema_violation", "role must be one of"),
        ({"segment": {"region": 3}}, "schema_violation", "segment.region must be a string"),
        ({"action": {"a": 1}}, "schema_violation", "action must be"),
        ({"exploration": "yes"}, "schema_violation", "exploration must be true or false"),
        ({"type": "click"}, "unknown_type", "type must be 'prediction' or 'outcome'"),
    ],
)
def test_prediction_schema_violations_name_the_field(
    changes: dict[str, object], reason: str, names: str
) -> None:
    """Each violation carries a machine reason and a message naming the field."""
    error = reject(with_(**changes))
    assert (error.reason, names in error.message) == (reason, True), error.message


@pytest.mark.parametrize(
    ("ts", "fragment"),
    [
        (1_700_000_000, "looks like epoch seconds"),
        (1_700_000_000_000_000, "after 2100"),
        ("yesterday", "not an RFC 3339 timestamp"),
        ("2023-11-14T22:13:20", "has no UTC offset"),
        (1.7e12, "must be integer epoch milliseconds"),
        (True, "must be integer epoch milliseconds"),
    ],
)
def test_bad_timestamps(ts: object, fragment: str) -> None:
    """Timestamps in the wrong unit or format are bad_timestamp with a hint."""
    error = reject(with_(ts=ts))
    assert (error.reason, fragment in error.message) == ("bad_timestamp", True), error.message


def test_missing_timestamp_is_a_schema_violation() -> None:
    """No ts at all is a schema violation naming ts."""
    error = reject(with_(ts=...))
    assert (error.reason, "ts is required" in error.message) == ("schema_violation", True)


def test_rfc3339_and_epoch_agree() -> None:
    """The same instant as RFC 3339 (any offset) and epoch ms gives the same ts."""
    assert parse_ts("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_ts("2023-11-14T23:13:20.000+01:00") == 1_700_000_000_000


def test_outcomes() -> None:
    """Outcomes decode, null labels are allowed, bad labels are rejected."""
    base = {
        "type": "outcome",
        "event_id": "o",
        "request_id": "r",
        "model_id": "m",
        "ts": "2023-11-14T22:13:20Z",
        "label": None,
    }
    event = decode(orjson.dumps(base))
    assert isinstance(event, Outcome)
    assert (event.label, event.ts) == (None, 1_700_000_000_000)
    missing = {k: v for k, v in base.items() if k != "label"}
    assert reject(missing).message.startswith("label is required")
    assert reject({**base, "label": [1]}).reason == "schema_violation"
    assert reject({**base, "request_id": ""}).reason == "schema_violation"


# -- the typed path and the checked path agree ------------------------------------------

_FIELDS = (
    *("type", "event_id", "request_id", "model_id", "model_version", "ts", "features"),
    *("prediction", "label", "scores", "role", "segment", "action", "exploration"),
    "independent",
)
_OUTCOME = {
    "type": "outcome",
    "event_id": "o1",
    "request_id": "r1",
    "model_id": "m",
    "ts": 1_700_000_000_000,
    "label": 1,
}
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-1, 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(-0.5, 1.5)
    | st.sampled_from(["", "x", "prediction", "outcome", "canary", "2023-11-14T22:13:20Z"])
    | st.sampled_from([MIN_TS_MS - 1, MIN_TS_MS, MAX_TS_MS, MAX_TS_MS + 1, 1_700_000_000]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
_objects = st.dictionaries(st.text(max_size=3), _json, min_size=1, max_size=3)
"""Objects of any values: what features, scores and segment are made of."""


def _answer(raw: bytes, expect: str | None, decoder: object) -> str:
    try:
        return repr(decoder(raw, expect))  # type: ignore[operator]
    except DecodeError as exc:
        return f"{exc.reason}: {exc.message}"


@settings(max_examples=1_500, deadline=None, derandomize=True)
@given(
    st.sampled_from([VALID, _OUTCOME]),
    st.dictionaries(st.sampled_from(_FIELDS), _json | _objects | st.just(...), max_size=4),
    st.sampled_from([None, "prediction", "outcome"]),
)
def test_the_typed_and_the_checked_decoders_give_the_same_answer(
    base: dict[str, object], changes: dict[str, object], expect: str | None
) -> None:
    """`decode` takes most messages through msgspec's typed decoders and the rest through
    the field-by-field checks: on valid events with any field replaced, removed (...) or
    added, both give the same record (types included: an int stays an int) or the same
    reason and message."""
    obj = {k: v for k, v in {**base, **changes}.items() if v is not ...}
    raw = json.dumps(obj).encode()
    assert _answer(raw, expect, decode) == _answer(raw, expect, _decode_checked)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(
    st.sampled_from(["features", "scores", "segment"]),
    _objects,
    st.sampled_from([None, "prediction"]),
)
def test_the_two_decoders_agree_on_what_objects_hold(
    field: str, entries: dict[str, object], expect: str | None
) -> None:
    """The same, for any values inside features, scores and segment."""
    obj = {**VALID, field: {**VALID.get(field, {}), **entries}}  # type: ignore[dict-item]
    raw = json.dumps(obj).encode()
    assert _answer(raw, expect, decode) == _answer(raw, expect, _decode_checked)


def test_the_typed_path_takes_the_common_messages() -> None:
    """Guards the speed-up: valid messages, with and without their type, on either topic
    or from a file, are read by the typed decoders (the checked path is never called)."""
    typed = [
        (VALID, "prediction"),
        (with_(type=...), "prediction"),
        (VALID, None),
        (with_(scores={"a": 0.2, "b": 1}, segment={"r": "n"}, action=["a", "b"]), None),
        (_OUTCOME, "outcome"),
        (_OUTCOME, None),
        ({**_OUTCOME, "label": None, "independent": True, "segment": {"r": "n"}}, "outcome"),
    ]
    for obj, expect in typed:
        assert decode(orjson.dumps(obj), expect) == _FAST[expect](orjson.dumps(obj))


def test_feature_count_limit_on_both_paths() -> None:
    """MAX_FEATURES features decode; one more is too_large, on either topic or from a file."""
    features = {f"f{i}": i for i in range(MAX_FEATURES)}
    assert len(decode(orjson.dumps(with_(features=features)), "prediction").features) == (
        MAX_FEATURES
    )
    features["one_more"] = 0
    for expect in ("prediction", None):
        assert reject(with_(features=features), expect).reason == "too_large"
