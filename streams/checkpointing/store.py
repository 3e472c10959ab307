"""Checkpoints of detector state, tagged with the input offsets they cover.

One checkpoint per shard, written to the state topic under the key ``<group>/<shard>``
(``<group>/3`` for input partition 3, ``<group>/m0`` for summaries partition 0). Large
states are compressed and split into chunks written under two alternating key sets
(double buffering), followed by a manifest: a crash while writing leaves the previous
checkpoint intact, because the manifest still points at it.
On Kafka the topic is compacted, so only the latest records per key are kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.schemas.exceptions import DriftlineError

CHUNK_BYTES = 512 * 1024
"""Chunk size: half of Kafka's default 1 MB message limit, leaving room for headers."""

STATE_READ_TIMEOUT_MS = 500
"""Fetch wait while reading the state topic back; it is read to its high watermark."""

COMPRESSION_LEVEL = 1
"""zlib level: detector state (JSON) shrinks about 5x even at the fastest level."""


class StateError(DriftlineError):
    """A checkpoint could not be written or read back."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The state of one shard and the offsets it covers."""

    partition: str
    """The shard's name: ``3`` for input partition 3, ``m0`` for summaries partition 0."""
    offsets: dict[str, int]
    """Next offset to read per input topic: everything before it is in ``state``."""
    state: dict[str, Any]
    generation: int


def _key(group: str, partition: str) -> str:
    return f"{group}/{partition}"


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The checkpoint's payload as JSON, before compression: where the caller must take it
    at once (the state goes on changing), `write_checkpoint` takes these bytes."""
    return orjson.dumps(
        {"offsets": checkpoint.offsets, "state": checkpoint.state},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


async def write_checkpoint(
    producer: AIOKafkaProducer,
    topic: str,
    group: str,
    checkpoint: Checkpoint,
    encoded: bytes | None = None,
) -> int:
    """Write chunks, then the manifest; returns the bytes written. ``encoded`` is
    `encode_checkpoint` of the checkpoint when the caller took it already. The payload is
    compressed on a thread (zlib lets go of the interpreter while it works)."""
    raw = encode_checkpoint(checkpoint) if encoded is None else encoded
    body = await asyncio.to_thread(zlib.compress, raw, COMPRESSION_LEVEL)
    key = _key(group, checkpoint.partition)
    slot = checkpoint.generation % 2
    chunks = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)] or [b""]
    futures = [
        await producer.send(
            topic,
            chunk,
            key=f"{key}/{slot}/{i}".encode(),
            headers=[("generation", str(checkpoint.generation).encode())],
        )
        for i, chunk in enumerate(chunks)
    ]
    for future in futures:
        await future
    manifest = {
        "generation": checkpoint.generation,
        "slot": slot,
        "chunks": len(chunks),
        "sha256": hashlib.sha256(body).hexdigest(),
        "offsets": checkpoint.offsets,
    }
    await producer.send_and_wait(topic, orjson.dumps(manifest), key=key.encode())
    return len(body)


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The latest record of one key of the state topic."""

    value: bytes
    headers: dict[str, str]
    offset: int


async def read_state_log(consumer: AIOKafkaConsumer, topic: str) -> dict[bytes, StateRecord]:
    """The latest record of every key of the state topic (every group's), read to the high
    watermark.

    The consumer must not be subscribed; the state topic partition is assigned to it
    directly. The end is taken from the fetch responses' high watermark, never from
    ``end_offsets()`` (which some Kafka-compatible brokers answer wrongly).
    """
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    latest: dict[bytes, StateRecord] = {}
    while True:
        batch = await consumer.getmany(tp, timeout_ms=STATE_READ_TIMEOUT_MS)
        for record in batch.get(tp, []):
            if record.key is not None:
                headers = {k: v.decode() for k, v in (record.headers or ())}
                latest[record.key] = StateRecord(record.value or b"", headers, record.offset)
        highwater = consumer.highwater(tp)
        position = await consumer.position(tp)
        if highwater is not None and position >= highwater and not batch:
            break
    return latest


async def read_checkpoints(
    consumer: AIOKafkaConsumer, topic: str, group: str
) -> dict[str, Checkpoint]:
    """Latest complete checkpoint per shard of ``group`` (see `read_state_log`)."""
    latest = await read_state_log(consumer, topic)
    prefix = f"{group}/"
    out: dict[str, Checkpoint] = {}
    for raw_key, record in latest.items():
        key = raw_key.decode()
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        if rest is None or "/" in rest:
            continue
        manifest = orjson.loads(record.value)
        parts = []
        for chunk in _chunks(latest, raw_key, manifest):
            if chunk is None:
                raise StateError(
                    f"checkpoint {key} generation {manifest['generation']} is incomplete"
                )
            parts.append(chunk.value)
        body = b"".join(parts)
        if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
            raise StateError(f"checkpoint {key} generation {manifest['generation']} is corrupt")
        payload = orjson.loads(zlib.decompress(body))
        out[rest] = Checkpoint(rest, payload["offsets"], payload["state"], manifest["generation"])
    return out


def _chunks(
    latest: dict[bytes, StateRecord], key: bytes, manifest: dict[str, Any]
) -> list[StateRecord | None]:
    """The chunk records a manifest points at (None where one is missing or belongs to
    another generation)."""
    out: list[StateRecord | None] = []
    for i in range(manifest["chunks"]):
        chunk = latest.get(key + f"/{manifest['slot']}/{i}".encode())
        generation_matches = chunk is not None and chunk.headers.get("generation") == str(
            manifest["generation"]
        )
        out.append(chunk if generation_matches else None)
    return out


def trim_point(latest: dict[bytes, StateRecord]) -> int | None:
    """The lowest offset any group's latest checkpoint still reads (its manifest and the
    chunks it points at): every record below it is superseded, so a broker that does not
    compact may delete it. None when there is nothing to keep or a checkpoint is
    incomplete (then nothing is deleted: its previous records may be all that is left).

    Manifests are the records without a ``generation`` header; chunks carry one.

    >>> m = orjson.dumps({"generation": 2, "slot": 0, "chunks": 1})
    >>> log = {
    ...     b"g/0/0/0": StateRecord(b"", {"generation": "2"}, 7),
    ...     b"g/0/1/0": StateRecord(b"", {"generation": "1"}, 3),
    ...     b"g/0": StateRecord(m, {}, 8),
    ... }
    >>> trim_point(log)
    7
    """
    lowest: int | None = None
    for key, record in latest.items():
        if "generation" in record.headers:
            continue
        manifest = orjson.loads(record.value)
        chunks = _chunks(latest, key, manifest)
        if any(chunk is None for chunk in chunks):
            return None
        offsets = [record.offset, *(chunk.offset for chunk in chunks if chunk is not None)]
        lowest = min(offsets) if lowest is None else min(lowest, *offsets)
    return lowest
