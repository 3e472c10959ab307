"""Dead letters always fit below the producer's limit and still identify the original."""

from __future__ import annotations

import base64
import hashlib

import jsonschema
import orjson
import pytest

from driftline.schemas import load_schema
from driftline.schemas.deadletter import MAX_HEADER_BYTES, DeadLetter

LIMIT = 1_048_576 - 512


def oversized_prediction() -> bytes:
    """A valid prediction with one 1 MiB string feature (over the decoder's limit)."""
    event = {
        "type": "prediction",
        "event_id": "e-big",
        "request_id": "r-big",
        "model_id": "credit-risk",
        "model_version": "v1",
        "ts": 1_700_000_000_000,
        "features": {"notes": "x" * (1 << 20)},
        "prediction": 0.4,
    }
    return orjson.dumps(event)


@pytest.mark.parametrize("size", [10, 700_000, 1 << 20, 5 << 20])
def test_dead_letter_fits_the_limit_and_keeps_provenance(size: int) -> None:
    """Whatever the original's size, the dead letter is at most the bound, validates
    against its schema, and carries the original's size, hash, key and headers."""
    original = (b"{" + b"a" * size)[:size]
    letter = DeadLetter(
        "too_large", "over 1 MiB", "preds", 3, 17, original, b"r-1", (("trace", b"abc"),)
    )
    wire = letter.to_json(1_700_000_000_000, LIMIT)
    body = orjson.loads(wire)
    jsonschema.validate(body, load_schema("deadletter"))
    assert len(wire) <= LIMIT
    assert body["original_bytes"] == size
    assert body["original_sha256"] == hashlib.sha256(original).hexdigest()
    kept = base64.b64decode(body["original_b64"])
    assert original.startswith(kept)
    assert body["truncated"] == (len(kept) < size)
    assert (body["source"], base64.b64decode(body["key_b64"])) == (
        {"topic": "preds", "partition": 3, "offset": 17},
        b"r-1",
    )
    assert body["headers"] == [{"key": "trace", "value_b64": base64.b64encode(b"abc").decode()}]


def test_the_oversized_prediction_dead_letter_keeps_as_much_payload_as_fits() -> None:
    """The 1 MiB prediction's dead letter is cut close to the limit, not to nothing."""
    original = oversized_prediction()
    wire = DeadLetter("too_large", "big", "p", 0, 5, original).to_json(1, LIMIT)
    body = orjson.loads(wire)
    assert body["truncated"] is True
    assert LIMIT - 1_000 < len(wire) <= LIMIT


def test_huge_headers_and_keys_cannot_crowd_out_the_envelope() -> None:
    """Headers beyond their share and an over-long key are cut and flagged."""
    headers = tuple((f"h{i}", b"v" * 4_000) for i in range(10))
    letter = DeadLetter("invalid_json", "bad", "p", 0, 1, b"{", b"k" * 5_000, headers)
    body = orjson.loads(letter.to_json(None, 100_000))
    assert body["headers_truncated"] is True and body["key_truncated"] is True
    assert sum(len(h["key"]) + len(base64.b64decode(h["value_b64"])) for h in body["headers"]) <= (
        MAX_HEADER_BYTES
    )
    assert base64.b64decode(body["original_b64"]) == b"{"


def test_without_a_bound_the_original_is_kept_whole() -> None:
    """Replay's dead-letter file has no producer limit: nothing is cut."""
    original = oversized_prediction()
    body = orjson.loads(DeadLetter("too_large", "big", "f.jsonl", 0, 9, original).to_json())
    assert base64.b64decode(body["original_b64"]) == original
    assert body["truncated"] is False
