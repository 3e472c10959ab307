"""Any JSON prediction log, read through JSON pointers (``[input.mapping]``).

A team's own log (one message per prediction, inputs and output together) needs no
translator: each field of the contract is a JSON pointer (RFC 6901) into the message.
``event_id`` defaults to the request id, ``ts`` to the record timestamp, ``model_id`` and
``model_version`` to ``[input] model_id`` / ``model_version``.
"""

from __future__ import annotations

from typing import Any

from driftline.schemas.decode import prediction_from_dict
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats.parts import SourceRecord
from driftline.schemas.formats.settings import InputSettings
from driftline.schemas.formats.values import json_body
from driftline.schemas.records import Prediction

_MISSING = object()


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer, or a sentinel when there is none.

    >>> resolve_pointer({"a": {"b/c": [10, 20]}}, "/a/b~1c/1")
    20
    >>> resolve_pointer({"a": 1}, "") == {"a": 1}
    True
    """
    if pointer == "":
        return document
    value = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(token, _MISSING)
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def request_id_of(document: Any, settings: InputSettings) -> str:
    """The mapped request id (also what the message is re-keyed by)."""
    value = resolve_pointer(document, settings.mapping["request_id"])
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise DecodeError(
            "missing_correlation_id",
            f"no request id at {settings.mapping['request_id']!r} ([input.mapping] request_id)",
        )
    return value


def read_mapped(record: SourceRecord, settings: InputSettings) -> Prediction:
    """One prediction from one message, validated like a driftline prediction."""
    document = json_body(record.value, "mapped message")
    request_id = request_id_of(document, settings)
    obj: dict[str, Any] = {"request_id": request_id}
    for name, pointer in settings.mapping.items():
        if name == "request_id":
            continue
        value = resolve_pointer(document, pointer)
        if value is _MISSING:
            if name in ("features", "prediction"):
                raise DecodeError(
                    "schema_violation",
                    f"no {name} at {pointer!r} ([input.mapping] {name})",
                )
            continue
        obj[name] = value
    obj.setdefault("event_id", request_id)
    if isinstance(obj["event_id"], int):
        obj["event_id"] = str(obj["event_id"])
    obj.setdefault("model_id", settings.model_id)
    obj.setdefault("model_version", settings.model_version)
    obj.setdefault("ts", record.timestamp)
    return prediction_from_dict(obj)
