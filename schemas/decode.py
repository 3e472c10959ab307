"""Bytes on the wire -> typed records, validated once at the edge.

The checks here mirror the JSON Schema documents in this folder (a test holds the two
together). Most messages are read by msgspec's typed decoders in one pass; the rest by
checks written by hand, which name the offending field (a generic JSON Schema validator
costs more per event than all of the detectors together).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec
import orjson

from driftline.schemas.exceptions import DecodeError
from driftline.schemas.records import (
    MAX_FEATURES,
    MAX_TS_MS,
    MIN_TS_MS,
    ROLES,
    ActionValue,
    Event,
    Outcome,
    Prediction,
)

INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
SCHEMA_VIOLATION: Final = "schema_violation"
NON_FINITE: Final = "non_finite_number"
BAD_TIMESTAMP: Final = "bad_timestamp"
TOO_LARGE: Final = "too_large"
UNKNOWN_TYPE: Final = "unknown_type"
WRONG_TOPIC: Final = "wrong_topic"
FUTURE_TIMESTAMP: Final = "future_timestamp"
"""Valid, but dated further ahead of its partition's recent traffic than
``max_future_skew_ms`` allows (see `detectors.intake.clock.EventClock`)."""

FOREIGN_REASONS: Final = (
    "missing_correlation_id",
    "tensor_mismatch",
    "unknown_datatype",
    "invalid_protobuf",
    "response_without_request",
)
"""Reasons of the foreign input formats (`schemas.formats`): no ``ce_id`` /
``x-request-id`` / mapped request id; tensor data that does not match its shape or
datatype; a datatype the Open Inference Protocol does not define; a value that is not
the protobuf message its topic carries; a response whose request never arrived."""

INVALID_SUMMARY: Final = "invalid_summary"
"""A summaries-topic message the model stage cannot read (another program wrote there)."""

REASONS: Final = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    SCHEMA_VIOLATION,
    NON_FINITE,
    BAD_TIMESTAMP,
    TOO_LARGE,
    UNKNOWN_TYPE,
    WRONG_TOPIC,
    FUTURE_TIMESTAMP,
    *FOREIGN_REASONS,
    INVALID_SUMMARY,
)
"""Every machine-readable reason a message can be rejected with."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_576
"""1 MiB, Kafka's default ``message.max.bytes``: a larger event is an upstream bug."""


def _fail(reason: str, message: str) -> DecodeError:
    return DecodeError(reason, message)


def _string(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if type(value) is not str or not value:
        if value is None and field not in obj:
            raise _fail(SCHEMA_VIOLATION, f"{field} is required (non-empty string)")
        raise _fail(SCHEMA_VIOLATION, f"{field} must be a non-empty string")
    return value


def parse_ts(value: object, field: str = "ts") -> int:
    """Epoch milliseconds from an integer or an RFC 3339 string.

    >>> parse_ts(1700000000000)
    1700000000000
    >>> parse_ts("2023-11-14T22:13:20Z")
    1700000000000
    """
    if type(value) is int:
        ms = value
    elif type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(BAD_TIMESTAMP, f"{field} {value!r} is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise _fail(BAD_TIMESTAMP, f"{field} {value!r} has no UTC offset; add 'Z' or '+00:00'")
        ms = round(parsed.timestamp() * 1000)
    elif value is None:
        raise _fail(SCHEMA_VIOLATION, f"{field} is required (epoch ms or RFC 3339 string)")
    else:
        raise _fail(
            BAD_TIMESTAMP,
            f"{field} must be integer epoch milliseconds or an RFC 3339 string, "
            f"got {type(value).__name__}",
        )
    if ms < MIN_TS_MS:
        hint = " (looks like epoch seconds: multiply by 1000)" if ms > MIN_TS_MS // 1000 else ""
        raise _fail(BAD_TIMESTAMP, f"{field} {value!r} is before 2000-01-01{hint}")
    if ms > MAX_TS_MS:
        raise _fail(
            BAD_TIMESTAMP,
            f"{field} {value!r} is after 2100-01-01 (microseconds or nanoseconds sent as ms?)",
        )
    return ms


_FEATURE_TYPES = frozenset({float, int, str, bool, type(None)})


def _features(value: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise _fail(SCHEMA_VIOLATION, "features must be an object of name -> value")
    if len(value) > MAX_FEATURES:
        raise _fail(TOO_LARGE, f"features has {len(value)} entries, more than {MAX_FEATURES}")
    # orjson rejects NaN and Infinity while parsing (reason non_finite_number), so parsed
    # floats are finite and a type check suffices on the hot path.
    if set(map(type, value.values())) <= _FEATURE_TYPES:
        return value
    for name, item in value.items():
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                raise _fail(NON_FINITE, f"features.{name} is {item}; send null for missing")
        elif kind is not int and kind is not str and kind is not bool and item is not None:
            raise _fail(
                SCHEMA_VIOLATION,
                f"features.{name} must be number|string|bool|null, got {_json_type(item)}",
            )
    return value


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _prediction_value(value: object) -> float | int | str | tuple[str, ...]:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise _fail(NON_FINITE, f"prediction is {value}")
        return value  # type: ignore[return-value]
    if kind is int or kind is str:
        return value  # type: ignore[return-value]
    if kind is list:
        items = value
        if not all(type(item) is str for item in items):  # type: ignore[attr-defined]
            raise _fail(SCHEMA_VIOLATION, "prediction as an array must hold only strings")
        return tuple(items)  # type: ignore[arg-type]
    if value is None:
        raise _fail(SCHEMA_VIOLATION, "prediction is required")
    raise _fail(
        SCHEMA_VIOLATION,
        f"prediction must be number|string|array of strings, got {_json_type(value)}",
    )


def _optional_scores(value: object) -> dict[str, float] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _fail(SCHEMA_VIOLATION, "scores must be an object of class -> probability")
    for name, prob in value.items():
        if type(prob) is not float and type(prob) is not int:
            raise _fail(SCHEMA_VIOLATION, f"scores.{name} must be a number")
        if not 0.0 <= prob <= 1.0:
            raise _fail(SCHEMA_VIOLATION, f"scores.{name} is {prob}, outside [0, 1]")
    return value


def _optional_segment(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _fail(SCHEMA_VIOLATION, "segment must be an object of name -> string")
    for name, item in value.items():
        if type(item) is not str:
            raise _fail(SCHEMA_VIOLATION, f"segment.{name} must be a string")
    return value


def _optional_action(value: object) -> ActionValue:
    if value is None or type(value) in (str, int, bool):
        return value  # type: ignore[return-value]
    if type(value) is float:
        if not math.isfinite(value):
            raise _fail(NON_FINITE, f"action is {value}")
        return value
    if type(value) is list and all(type(item) is str for item in value):
        return tuple(value)
    raise _fail(SCHEMA_VIOLATION, "action must be string|number|bool|array of strings")


_REQUIRED_PREDICTION_KEYS = 8
"""``type`` plus the seven required fields: an event with no more keys than this carries
no optional field, and their look-ups are skipped on the hot path."""


def prediction_from_dict(obj: dict[str, Any]) -> Prediction:
    """Validate a decoded JSON object as a prediction event."""
    if len(obj) > _REQUIRED_PREDICTION_KEYS - ("type" not in obj):
        role = obj.get("role", "champion")
        if role not in ROLES:
            raise _fail(SCHEMA_VIOLATION, f"role must be one of {', '.join(ROLES)}, got {role!r}")
        exploration = obj.get("exploration", False)
        if type(exploration) is not bool:
            raise _fail(SCHEMA_VIOLATION, "exploration must be true or false")
        scores = _optional_scores(obj.get("scores"))
        segment = _optional_segment(obj.get("segment"))
        action = _optional_action(obj.get("action"))
    else:
        role, exploration, scores, segment, action = "champion", False, None, None, None
    event_id = obj.get("event_id")
    request_id = obj.get("request_id")
    model_id = obj.get("model_id")
    model_version = obj.get("model_version")
    if not (
        type(event_id) is str
        and type(request_id) is str
        and type(model_id) is str
        and type(model_version) is str
        and event_id
        and request_id
        and model_id
        and model_version
    ):
        for field in ("event_id", "request_id", "model_id", "model_version"):
            _string(obj, field)
    ts = obj.get("ts")
    prediction = obj.get("prediction")
    return Prediction(
        event_id,  # type: ignore[arg-type]
        request_id,  # type: ignore[arg-type]
        model_id,  # type: ignore[arg-type]
        model_version,  # type: ignore[arg-type]
        ts if type(ts) is int and MIN_TS_MS <= ts <= MAX_TS_MS else parse_ts(ts),
        _features(obj.get("features")),
        prediction if type(prediction) is float else _prediction_value(prediction),
        scores,
        role,
        segment,
        action,
        exploration,
    )


def outcome_from_dict(obj: dict[str, Any]) -> Outcome:
    """Validate a decoded JSON object as an outcome event."""
    if "label" not in obj:
        raise _fail(SCHEMA_VIOLATION, "label is required (use null when nothing was observed)")
    label = obj["label"]
    kind = type(label)
    if kind is float:
        if not math.isfinite(label):
            raise _fail(NON_FINITE, f"label is {label}")
    elif label is not None and kind not in (int, str, bool):
        raise _fail(
            SCHEMA_VIOLATION, f"label must be number|string|bool|null, got {_json_type(label)}"
        )
    independent = obj.get("independent", False)
    if type(independent) is not bool:
        raise _fail(SCHEMA_VIOLATION, "independent must be true or false")
    return Outcome(
        _string(obj, "event_id"),
        _string(obj, "request_id"),
        _string(obj, "model_id"),
        parse_ts(obj.get("ts")),
        label,
        _optional_segment(obj.get("segment")),
        independent,
    )


def decode(
    raw: bytes,
    expect: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Event:
    """Decode and validate one message.

    Parameters
    ----------
    raw
        The message value as received.
    expect
        ``"prediction"`` or ``"outcome"`` when the source topic fixes the type (the
        ``type`` field is then optional but must agree); None for files, where every
        line carries its ``type``.
    max_bytes
        Larger messages are rejected with ``too_large`` before parsing.

    Raises
    ------
    DecodeError
        With a reason from `REASONS` and a message naming the offending field.
    """
    if len(raw) > max_bytes:
        raise _fail(TOO_LARGE, f"message is {len(raw)} bytes, limit is {max_bytes}")
    try:
        return _FAST[expect](raw)
    except _NOT_FAST:
        # Whatever the typed decoder refuses, the checks below refuse too, with the
        # reason and the field named; or accept (an RFC 3339 timestamp, say).
        return _decode_checked(raw, expect)


def _decode_checked(raw: bytes, expect: str | None) -> Event:
    """`decode` by parsing to Python objects and checking each field by hand: every
    message the typed decoders of `_FAST` do not take goes this way."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = NON_FINITE if "infinity" in str(exc) else INVALID_JSON
        raise _fail(reason, str(exc)) from None
    if type(obj) is not dict:
        raise _fail(NOT_AN_OBJECT, f"event must be a JSON object, got {_json_type(obj)}")
    kind = obj.get("type", expect)
    if kind is None:
        raise _fail(SCHEMA_VIOLATION, "type is required ('prediction' or 'outcome')")
    if expect is not None and kind != expect:
        raise _fail(WRONG_TOPIC, f"a {kind!r} event arrived where {expect!r} events are read")
    if kind == "prediction":
        return prediction_from_dict(obj)
    if kind == "outcome":
        return outcome_from_dict(obj)
    raise _fail(UNKNOWN_TYPE, f"type must be 'prediction' or 'outcome', got {kind!r}")


# -- the typed path ----------------------------------------------------------------------
# msgspec parses the common message straight into its record and checks it, in one pass
# in C (the records' field types carry the contract's constraints, `schemas.records`).
# Measured on simulator events: a prediction 5.8 us by the checks below, 2.2 this way; an
# outcome 3.1 and 0.7. The typed path's types are a subset of the contract: whatever
# lies outside them (an RFC 3339 timestamp, a type naming the other topic, a probability
# outside [0, 1], a feature holding an array...) raises, and `_decode_checked` answers
# instead. So a message's event, or its dead-letter reason and message, is the same
# whichever path took it (tests/schemas/test_decode.py runs both on generated messages
# and compares).

_FAST: Final[dict[str | None, Callable[[bytes], Event]]] = {
    "prediction": msgspec.json.Decoder(Prediction).decode,
    "outcome": msgspec.json.Decoder(Outcome).decode,
    None: msgspec.json.Decoder(Prediction | Outcome).decode,
}
"""The typed decoder for each ``expect``: the ``type`` field is the records' tag, optional
when one type is expected and required (as the contract says) when either may come."""

_NOT_FAST: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
"""What the typed decoders raise for a message outside their types."""


def encode(event: Event) -> bytes:
    """Serialise a record back to its wire form (``type`` included)."""
    if isinstance(event, Prediction):
        body: dict[str, Any] = {
            "type": "prediction",
            "event_id": event.event_id,
            "request_id": event.request_id,
            "model_id": event.model_id,
            "model_version": event.model_version,
            "ts": event.ts,
            "features": dict(event.features),
            "prediction": list(event.prediction)
            if isinstance(event.prediction, tuple)
            else event.prediction,
        }
        if event.scores is not None:
            body["scores"] = dict(event.scores)
        if event.role != "champion":
            body["role"] = event.role
        if event.segment is not None:
            body["segment"] = dict(event.segment)
        if event.action is not None:
            body["action"] = list(event.action) if isinstance(event.action, tuple) else event.action
        if event.exploration:
            body["exploration"] = True
        return orjson.dumps(body)
    outcome: dict[str, Any] = {
        "type": "outcome",
        "event_id": event.event_id,
        "request_id": event.request_id,
        "model_id": event.model_id,
        "ts": event.ts,
        "label": event.label,
    }
    if event.segment is not None:
        outcome["segment"] = dict(event.segment)
    if event.independent:
        outcome["independent"] = True
    return orjson.dumps(outcome)
