"""The dead-letter record: what could not be decoded or admitted, from where, and why.

A dead letter must always be deliverable: a message rejected for being too large would
otherwise produce a dead letter larger still (the original, base64-encoded, plus the
reason) and the producer would refuse it. `DeadLetter.to_json` therefore takes a size
bound and keeps, in this order, everything but the payload (reason, source, key,
headers, original size and SHA-256), then as much of the payload as fits, marked
``truncated``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Final

import orjson

MAX_MESSAGE_CHARS: Final = 2_000
"""Longest reason text kept: messages name a field and what was expected, never more."""

MAX_KEY_BYTES: Final = 1_024
"""Longest source key copied into the dead letter (keys are request ids, a few dozen
bytes; a larger one is cut and flagged, never allowed to crowd out the rest)."""

MAX_HEADER_BYTES: Final = 16_384
"""Header bytes (names plus values) copied; beyond this the rest are left out and
``headers_truncated`` is set."""


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
    key: bytes | None = None
    """The source record's key, if any."""
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)
    """The source record's headers."""

    def to_json(self, dead_lettered_at: int | None = None, max_bytes: int | None = None) -> bytes:
        """The wire form described by ``deadletter.schema.json``, at most ``max_bytes``.

        >>> letter = DeadLetter("too_large", "too big", "p", 0, 7, b"x" * 10_000)
        >>> len(letter.to_json(max_bytes=2_000)) <= 2_000
        True
        >>> orjson.loads(letter.to_json(max_bytes=2_000))["truncated"]
        True
        """
        key = self.key or b""
        body: dict[str, object] = {
            "reason": self.reason,
            "message": self.message[:MAX_MESSAGE_CHARS],
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "original_bytes": len(self.original),
            "original_sha256": hashlib.sha256(self.original).hexdigest(),
            "truncated": False,
            "original_b64": "",
        }
        if self.key is not None:
            body["key_b64"] = base64.b64encode(key[:MAX_KEY_BYTES]).decode("ascii")
            if len(key) > MAX_KEY_BYTES:
                body["key_truncated"] = True
        if self.headers:
            kept, used = [], 0
            for name, value in self.headers:
                used += len(name) + len(value or b"")
                if used > MAX_HEADER_BYTES:
                    body["headers_truncated"] = True
                    break
                kept.append({"key": name, "value_b64": base64.b64encode(value or b"").decode()})
            body["headers"] = kept
        if dead_lettered_at is not None:
            body["dead_lettered_at"] = dead_lettered_at
        payload = self.original
        if max_bytes is not None:
            envelope = len(orjson.dumps(body)) + len('"truncated":true')
            room = max(0, (max_bytes - envelope) // 4 * 3)
            if len(payload) > room:
                payload = payload[:room]
                body["truncated"] = True
        body["original_b64"] = base64.b64encode(payload).decode("ascii")
        return orjson.dumps(body)
