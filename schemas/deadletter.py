"""The dead-letter record: what could not be decoded, from where, and why."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input message with its provenance."""

    reason: str
    """Machine-readable reason (see `schemas.decode.REASONS`)."""
    message: str
    """Human-readable explanation naming the field."""
    topic: str
    """Source topic, or the file path in replay."""
    partition: int
    """Source partition (0 in replay)."""
    offset: int
    """Source offset, or the 0-based line number in replay."""
    original: bytes
    """The message bytes exactly as received."""

    def to_json(self, dead_lettered_at: int | None = None) -> bytes:
        """The wire form described by ``deadletter.schema.json``."""
        body: dict[str, object] = {
            "reason": self.reason,
            "message": self.message,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "original_b64": base64.b64encode(self.original).decode("ascii"),
        }
        if dead_lettered_at is not None:
            body["dead_lettered_at"] = dead_lettered_at
        return orjson.dumps(body)
