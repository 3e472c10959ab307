"""Checkpoints survive what can happen to their records: a crash mid-write, and two
workers that both believe they own a shard writing the same generation at once (one cut
off past its session, its write delivered late), their records interleaved."""

from __future__ import annotations

import hashlib
import itertools
import os
import zlib

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from driftline.streams.checkpointing.store import (
    CHUNK_BYTES,
    COMPRESSION_LEVEL,
    Checkpoint,
    StateError,
    checkpoint_records,
    encode_checkpoint,
    write_checkpoint,
)
from tests.kafka_helpers import topics_for
from tests.streams.checkpointing.test_trim import new_topic, read_all_checkpoints

_topics = itertools.count()


def records(checkpoint: Checkpoint, writer: str):
    body = zlib.compress(encode_checkpoint(checkpoint), COMPRESSION_LEVEL)
    return checkpoint_records("g", checkpoint, body, writer)


async def send(bootstrap: str, topic: str, items) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    await producer.start()
    try:
        for key, value, headers in items:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str) -> dict[str, Checkpoint]:
    return await read_all_checkpoints(bootstrap, topic, "g")


async def fresh(bootstrap: str) -> str:
    topic = topics_for(f"store{next(_topics)}").state
    await new_topic(bootstrap, topic)
    return topic


def at(generation: int, state=None, shard: str = "0") -> Checkpoint:
    return Checkpoint(shard, {"t": generation * 100}, state or {"n": generation}, generation)


@pytest.mark.parametrize("big", [False, True], ids=["one chunk", "two chunks"])
async def test_two_writers_of_one_generation_interleaved_leave_a_readable_checkpoint(
    broker, big
) -> None:
    """Writer a (cut off) and writer b (the new owner, restored from generation 4) both
    write generation 5 into the same slot. Whichever way their records interleave, the
    reader gets an intact checkpoint: the manifest written last if its chunks are its
    own, else generation 4 from the other slot. (The first format read a manifest with
    another writer's chunks as corrupt, and no worker could restore the shard again.)"""
    blob = {"blob": os.urandom(CHUNK_BYTES).hex()} if big else None  # 2 chunks compressed
    base = records(at(4, blob), "b")
    a = records(at(5, {**(blob or {}), "writer": "a"}), "a")
    b = records(at(5, {**(blob or {}), "writer": "b"}), "b")
    if big:
        assert len(a) == len(b) == 3
    *a_chunks, a_manifest = a
    *b_chunks, b_manifest = b
    orders = {
        # the late writer's manifest last, over the other's chunks: the other slot
        "a manifest last, b chunks last": ([*a_chunks, *b_chunks, b_manifest, a_manifest], 4),
        # b's records all after a's: b's generation 5
        "b entirely last": ([*a_chunks, a_manifest, *b_chunks, b_manifest], 5),
        # the first chunk b's, the last a's (a mixed body): neither generation 5 is whole
        "chunks mixed": (
            [*a_chunks[:1], *b_chunks, *a_chunks[1:], a_manifest, b_manifest],
            4 if big else 5,
        ),
    }
    for name, (order, generation) in orders.items():
        topic = await fresh(broker)
        await send(broker, topic, base + order)
        found = (await read(broker, topic))["0"]
        assert found.generation == generation, name
        assert found.offsets == {"t": generation * 100}, name
        if generation == 5:
            assert found.state["writer"] == "b", name


async def test_a_write_cut_short_leaves_the_other_slot(broker) -> None:
    """Generation 6 dies after its first chunk, overwriting the first chunk of generation
    4's slot: generation 5, in the other slot, is read. A shard none of whose slots is
    whole is an error naming it, not an empty state."""
    topic = await fresh(broker)
    blob = {"blob": os.urandom(CHUNK_BYTES).hex()}
    six = records(at(6, blob), "w")
    await send(broker, topic, records(at(4, blob), "w") + records(at(5), "w") + six[:1])
    found = (await read(broker, topic))["0"]
    assert (found.generation, found.state) == (5, {"n": 5})

    topic = await fresh(broker)
    await send(broker, topic, records(at(4, blob), "w")[1:])  # chunk 0 never arrived
    with pytest.raises(StateError, match=r"g/0 \(generations \[4\]\)"):
        await read(broker, topic)


async def test_the_first_format_is_still_read_and_superseded(broker) -> None:
    """A checkpoint written by an earlier release (one manifest per shard, chunks without
    a writer) restores; the next generation, written in this format, replaces it."""
    topic = await fresh(broker)
    old = at(7)
    body = zlib.compress(encode_checkpoint(old), COMPRESSION_LEVEL)
    manifest = {
        "generation": 7,
        "slot": 1,
        "chunks": 1,
        "sha256": hashlib.sha256(body).hexdigest(),
        "offsets": old.offsets,
    }
    await send(
        broker,
        topic,
        [
            (b"g/0/1/0", body, [("generation", b"7")]),
            (b"g/0", orjson.dumps(manifest), []),
        ],
    )
    assert (await read(broker, topic))["0"] == old
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        await write_checkpoint(producer, topic, "g", at(8), writer="w")
    finally:
        await producer.stop()
    assert (await read(broker, topic))["0"] == at(8)
