"""driftline's wire format: JSON Schema documents and the typed records decoded from them."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.decode import REASONS, decode, encode, parse_ts
from driftline.schemas.exceptions import ConfigError, DecodeError, DriftlineError
from driftline.schemas.records import ROLES, Event, Outcome, Prediction

SCHEMA_NAMES = ("prediction", "outcome", "decision", "deadletter", "reference_profile")
"""Names of the JSON Schema documents shipped with the package."""


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema document ``<name>.schema.json`` shipped with this package."""
    if name not in SCHEMA_NAMES:
        raise ConfigError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_bytes()
    schema: dict[str, Any] = orjson.loads(text)
    return schema


__all__ = [
    "REASONS",
    "ROLES",
    "SCHEMA_NAMES",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "DriftlineError",
    "Event",
    "Outcome",
    "Prediction",
    "decode",
    "encode",
    "load_schema",
    "parse_ts",
]
