"""Checkpoints of detector state, tagged with the input offsets they cover.

One checkpoint per shard, under keys beginning ``<group>/<shard>`` (``<group>/3`` for
input partition 3, ``<group>/m0`` for summaries partition 0). The state is compressed and
split into chunks written under one of two key sets, alternating by generation (double
buffering), each followed by its own manifest (``<group>/<shard>/<slot>``) naming the
generation, the writer and the digest of the whole. A reader takes the newest slot whose
chunks are all there, from the writer and generation its manifest names, and match the
digest: a crash while writing leaves the other slot intact, and so do two workers that
both believe they own a shard (one cut off past its session, its write delivered late)
and write the same generation into the same slot at once, mixing their records.
Checkpoints of the first format (one manifest at ``<group>/<shard>``, chunks without a
writer) are still read.
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
from driftline.streams.kafka import read_to_highwater

CHUNK_BYTES = 512 * 1024
"""Chunk size: half of Kafka's default 1 MB message limit, leaving room for headers."""

STATE_READ_TIMEOUT_MS = 500
"""Fetch wait while reading the state topic back; it is read to its high watermark."""

COMPRESSION_LEVEL = 1
"""zlib level: detector state (JSON) shrinks about 5x even at the fastest level."""

MANIFEST_FORMAT = 2
"""A manifest per slot, naming its writer (format 1: one manifest per shard, no writer)."""


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
    writer: str = "",
) -> int:
    """Write chunks, then the slot's manifest; returns the bytes written. ``encoded`` is
    `encode_checkpoint` of the checkpoint when the caller took it already; ``writer``
    names the process (its chunks are told from another's in the same slot by it). The
    payload is compressed on a thread (zlib lets go of the interpreter while it works)."""
    raw = encode_checkpoint(checkpoint) if encoded is None else encoded
    body = await asyncio.to_thread(zlib.compress, raw, COMPRESSION_LEVEL)
    futures = [
        await producer.send(topic, value, key=key, headers=headers)
        for key, value, headers in checkpoint_records(group, checkpoint, body, writer)
    ]
    for future in futures:
        await future
    return len(body)


def checkpoint_records(
    group: str, checkpoint: Checkpoint, body: bytes, writer: str
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The records of one checkpoint, in the order they are written: the chunks of the
    compressed ``body``, then the slot's manifest (key, value, headers)."""
    key = _key(group, checkpoint.partition)
    slot = checkpoint.generation % 2
    headers = [
        ("generation", str(checkpoint.generation).encode()),
        ("writer", writer.encode()),
    ]
    chunks = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)] or [b""]
    manifest = {
        "format": MANIFEST_FORMAT,
        "generation": checkpoint.generation,
        "slot": slot,
        "chunks": len(chunks),
        "writer": writer,
        "sha256": hashlib.sha256(body).hexdigest(),
        "offsets": checkpoint.offsets,
    }
    records = [(f"{key}/{slot}/{i}".encode(), chunk, headers) for i, chunk in enumerate(chunks)]
    records.append((f"{key}/{slot}".encode(), orjson.dumps(manifest), []))
    return records


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
    directly (`streams.kafka.read_to_highwater`).
    """
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    latest: dict[bytes, StateRecord] = {}
    async for records in read_to_highwater(consumer, [tp], STATE_READ_TIMEOUT_MS):
        for record in records:
            if record.key is not None:
                headers = {k: v.decode() for k, v in (record.headers or ())}
                latest[record.key] = StateRecord(record.value or b"", headers, record.offset)
    return latest


async def read_checkpoints(
    consumer: AIOKafkaConsumer, topic: str, group: str
) -> dict[str, Checkpoint]:
    """Latest intact checkpoint per shard of ``group`` (see `read_state_log`). A shard
    whose manifests all point at missing, foreign or corrupt chunks is an error: its
    state cannot be recovered."""
    latest = await read_state_log(consumer, topic)
    prefix = f"{group}/".encode()
    out: dict[str, Checkpoint] = {}
    for shard_key, manifests in _manifests(latest).items():
        if not shard_key.startswith(prefix):
            continue
        name = shard_key[len(prefix) :].decode()
        if "/" in name:  # another group's, whose name begins with this one's and a slash
            continue
        found = None
        for manifest in manifests:
            chunks = _chunks(latest, shard_key, manifest)
            if chunks is None:
                continue
            body = b"".join(chunk.value for chunk in chunks)
            if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
                continue
            payload = orjson.loads(zlib.decompress(body))
            found = Checkpoint(name, payload["offsets"], payload["state"], manifest["generation"])
            break
        if found is None:
            generations = sorted(m["generation"] for m in manifests)
            raise StateError(
                f"checkpoint {shard_key.decode()} (generations {generations}) is incomplete or "
                "corrupt in every slot"
            )
        out[name] = found
    return out


def _manifests(latest: dict[bytes, StateRecord]) -> dict[bytes, list[dict[str, Any]]]:
    """Every manifest in the log by shard key (``<group>/<shard>``), newest generation
    first: the two slots' and a first-format one. Manifests are the records without a
    ``generation`` header; chunks carry one."""
    out: dict[bytes, list[dict[str, Any]]] = {}
    for key, record in latest.items():
        if "generation" in record.headers:
            continue
        manifest = orjson.loads(record.value)
        shard_key = key.rsplit(b"/", 1)[0] if manifest.get("format") == MANIFEST_FORMAT else key
        manifest["offset"] = record.offset
        out.setdefault(shard_key, []).append(manifest)
    for manifests in out.values():
        manifests.sort(key=lambda m: -int(m["generation"]))
    return out


def _chunks(
    latest: dict[bytes, StateRecord], shard_key: bytes, manifest: dict[str, Any]
) -> list[StateRecord] | None:
    """The chunk records a manifest points at, or None where one is missing or was
    written by another generation or writer (a first-format manifest names no writer)."""
    generation = str(manifest["generation"])
    writer = manifest.get("writer")
    out = []
    for i in range(manifest["chunks"]):
        chunk = latest.get(shard_key + f"/{manifest['slot']}/{i}".encode())
        if (
            chunk is None
            or chunk.headers.get("generation") != generation
            or (writer is not None and chunk.headers.get("writer") != writer)
        ):
            return None
        out.append(chunk)
    return out


def trim_point(latest: dict[bytes, StateRecord]) -> int | None:
    """The lowest offset any group's checkpoints still read: the manifests and chunks of
    every slot whose chunks are all there (the newest may turn out corrupt: the other is
    then read), so every record below it is superseded and a broker that does not compact
    may delete it. None when there is nothing to keep or a shard has no complete slot
    (then nothing is deleted: its earlier records may be all that is left).

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
    for shard_key, manifests in _manifests(latest).items():
        complete = [
            (manifest, chunks)
            for manifest in manifests
            if (chunks := _chunks(latest, shard_key, manifest)) is not None
        ]
        if not complete:
            return None
        for manifest, chunks in complete:
            offsets = [manifest["offset"], *(chunk.offset for chunk in chunks)]
            lowest = min(offsets) if lowest is None else min(lowest, *offsets)
    return lowest
