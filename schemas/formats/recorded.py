"""Kafka records in a file, one JSON object a line: what ``driftline replay
--input-format kserve|seldon|mapped`` reads.

``{"topic": "...", "partition": 0, "offset": 7, "timestamp": 1700000000000,
"key": "..." | null, "headers": {"ce_id": "..."}, "value": "<UTF-8 text>"}`` or, for binary
values (Seldon's protobuf), ``"value_b64"`` instead of ``"value"``. ``partition`` and
``offset`` default to 0 and the line number; headers are UTF-8 text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats.parts import SourceRecord


def record_from_line(raw: bytes, line: int) -> SourceRecord:
    """One recorded record.

    >>> r = record_from_line(b'{"topic": "t", "timestamp": 1700000000000, "value": "{}"}', 3)
    >>> (r.topic, r.offset, r.value)
    ('t', 3, b'{}')
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", f"line {line + 1} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"line {line + 1}: a record must be a JSON object")
    topic, timestamp = obj.get("topic"), obj.get("timestamp")
    if not isinstance(topic, str) or not isinstance(timestamp, int):
        raise DecodeError(
            "schema_violation",
            f"line {line + 1}: a recorded record needs 'topic' (string) and 'timestamp' (ms)",
        )
    if isinstance(obj.get("value"), str):
        value = obj["value"].encode()
    elif isinstance(obj.get("value_b64"), str):
        try:
            value = base64.b64decode(obj["value_b64"], validate=True)
        except binascii.Error:
            raise DecodeError(
                "schema_violation", f"line {line + 1}: value_b64 is not base64"
            ) from None
    else:
        raise DecodeError(
            "schema_violation", f"line {line + 1}: 'value' or 'value_b64' is required"
        )
    headers = obj.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise DecodeError("schema_violation", f"line {line + 1}: headers must map names to text")
    key = obj.get("key")
    return SourceRecord(
        topic,
        int(obj.get("partition", 0)),
        int(obj.get("offset", line)),
        timestamp,
        value,
        key.encode() if isinstance(key, str) else None,
        {k.lower(): v.encode() for k, v in headers.items()},
    )


def record_to_line(record: SourceRecord) -> bytes:
    """The line `record_from_line` reads back."""
    body: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": record.key.decode() if record.key is not None else None,
        "headers": {k: v.decode() for k, v in record.headers.items()},
    }
    try:
        body["value"] = record.value.decode("utf-8")
    except UnicodeDecodeError:
        body["value_b64"] = base64.b64encode(record.value).decode()
    return orjson.dumps(body)
