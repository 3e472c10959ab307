"""Checkpoints of detector state, tagged with the input offsets they cover.

One checkpoint per shard, written to the state topic under the key ``<group>/<shard>``
(``<group>/3`` for input partition 3, ``<group>/m0`` for summaries partition 0). Large
states are compressed and split into chunks written under two alternating key sets
(double buffering), followed by a manifest: a crash while writing leaves the previous
checkpoint intact, because the manifest still points at it.
On Kafka the topic is compacted, so only the latest records per key are kept.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.exceptions import DriftlineError

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


async def write_checkpoint(
    producer: AIOKafkaProducer, topic: str, group: str, checkpoint: Checkpoint
) -> int:
    """Write chunks, then the manifest; returns the bytes written."""
    body = zlib.compress(
        orjson.dumps(
            {"offsets": checkpoint.offsets, "state": checkpoint.state},
            option=orjson.OPT_SERIALIZE_NUMPY,
        ),
        COMPRESSION_LEVEL,
    )
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


async def read_checkpoints(
    consumer: AIOKafkaConsumer, topic: str, group: str
) -> dict[str, Checkpoint]:
    """Latest complete checkpoint per shard of ``group``, read to the high watermark.

    The consumer must not be subscribed; the state topic partition is assigned to it
    directly. The end is taken from the fetch responses' high watermark, never from
    ``end_offsets()`` (which some Kafka-compatible brokers answer wrongly).
    """
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    latest: dict[bytes, tuple[bytes, dict[str, str]]] = {}
    while True:
        batch = await consumer.getmany(tp, timeout_ms=STATE_READ_TIMEOUT_MS)
        for record in batch.get(tp, []):
            if record.key is not None:
                headers = {k: v.decode() for k, v in (record.headers or ())}
                latest[record.key] = (record.value or b"", headers)
        highwater = consumer.highwater(tp)
        position = await consumer.position(tp)
        if highwater is not None and position >= highwater and not batch:
            break
    prefix = f"{group}/"
    out: dict[str, Checkpoint] = {}
    for raw_key, (value, _) in latest.items():
        key = raw_key.decode()
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        if rest is None or "/" in rest:
            continue
        manifest = orjson.loads(value)
        parts = []
        for i in range(manifest["chunks"]):
            chunk = latest.get(f"{key}/{manifest['slot']}/{i}".encode())
            if chunk is None or chunk[1].get("generation") != str(manifest["generation"]):
                raise StateError(
                    f"checkpoint {key} generation {manifest['generation']} is incomplete"
                )
            parts.append(chunk[0])
        body = b"".join(parts)
        if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
            raise StateError(f"checkpoint {key} generation {manifest['generation']} is corrupt")
        payload = orjson.loads(zlib.decompress(body))
        out[rest] = Checkpoint(rest, payload["offsets"], payload["state"], manifest["generation"])
    return out
