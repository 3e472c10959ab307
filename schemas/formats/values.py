"""Checks shared by the foreign formats: JSON bodies and feature rows."""

from __future__ import annotations

import math
from typing import Any

import orjson

from driftline.schemas.decode import MAX_FEATURES
from driftline.schemas.exceptions import DecodeError


def json_body(raw: bytes, what: str) -> Any:
    """Parse JSON, naming ``what`` was not JSON (truncated messages land here)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "non_finite_number" if "infinity" in str(exc).lower() else "invalid_json"
        raise DecodeError(reason, f"{what} is not valid JSON: {exc}") from None


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def feature_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of inputs, checked as the contract's ``features`` are."""
    if len(row) > MAX_FEATURES:
        raise DecodeError("too_large", f"a row has {len(row)} inputs, more than {MAX_FEATURES}")
    kinds = set(map(type, row.values()))
    if kinds <= _PLAIN and (float not in kinds or all(map(_finite, row.values()))):
        return row  # the common case, without a Python loop
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise DecodeError("non_finite_number", f"input {name} is {value}")
        if value is not None and not isinstance(value, int | float | str | bool):
            raise DecodeError(
                "schema_violation", f"input {name} must be a number, string, bool or null"
            )
    return row
