"""The state topic stays bounded on brokers that never compact it: superseded checkpoints
are found by reading the topic, and deleting below that point keeps every group's
latest checkpoint readable."""

from __future__ import annotations

import logging
import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.streams.checkpointing.store import (
    CHUNK_BYTES,
    Checkpoint,
    read_checkpoints,
    read_state_log,
    trim_point,
    write_checkpoint,
)
from driftline.streams.checkpointing.trim import StateTrimmer
from driftline.streams.kafka import KafkaSettings
from driftline.streams.metrics import Metrics
from tests.kafka_helpers import topics_for


async def new_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def read_log(bootstrap: str, topic: str):
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        return await read_state_log(reader, topic)
    finally:
        await reader.stop()


async def read_all_checkpoints(bootstrap: str, topic: str, group: str):
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        return await read_checkpoints(reader, topic, group)
    finally:
        await reader.stop()


async def copy_from(bootstrap: str, source: str, target: str, first: int) -> int:
    """Copy the records of ``source`` from offset ``first`` on into ``target``: what a
    broker that deleted the records below ``first`` keeps. Returns the records copied."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    await reader.start()
    await producer.start()
    copied = 0
    try:
        tp = TopicPartition(source, 0)
        reader.assign([tp])
        reader.seek(tp, first)
        while True:
            batch = await reader.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                await producer.send(
                    target, record.value, key=record.key, headers=list(record.headers)
                )
                copied += 1
            if not batch and await reader.position(tp) >= (reader.highwater(tp) or 0):
                break
        await producer.flush()
    finally:
        await producer.stop()
        await reader.stop()
    return copied


async def test_deleting_below_the_trim_point_keeps_every_groups_latest_checkpoint(
    broker,
) -> None:
    """Two groups write checkpoints of several generations, one of them in several
    chunks, interleaved; a shard of one group stops early (its only checkpoint is old).
    What lies at or above the trim point restores exactly what the whole topic restores,
    for both groups, and the trim point does drop the superseded records."""
    topic = topics_for("trim").state
    await new_topic(broker, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker, max_request_size=4 << 20)
    await producer.start()
    try:
        big = {"blob": os.urandom(CHUNK_BYTES * 2).hex()}  # incompressible: 4+ chunks
        await write_checkpoint(producer, topic, "a", Checkpoint("m0", {"t": 1}, {"x": 1}, 1))
        for generation in range(1, 6):
            for group, shard in (("a", "0"), ("a", "1"), ("b", "0")):
                state = big if (group, shard) == ("b", "0") else {"n": generation}
                offsets = {"t": generation * 10}
                await write_checkpoint(
                    producer, topic, group, Checkpoint(shard, offsets, state, generation)
                )
    finally:
        await producer.stop()
    everything = await read_log(broker, topic)
    point = trim_point(everything)
    assert point is not None
    # The early shard "a/m0" pins the point at its own first records.
    assert point == min(r.offset for k, r in everything.items() if k.startswith(b"a/m0"))
    kept = f"{topic}.kept"
    await new_topic(broker, kept)
    copied = await copy_from(broker, topic, kept, point)
    last = max(r.offset for r in everything.values())
    assert copied == last + 1 - point
    for group in ("a", "b"):
        assert await read_all_checkpoints(broker, kept, group) == await read_all_checkpoints(
            broker, topic, group
        )
    # Without the pinned shard, most of the topic is superseded.
    unpinned = {k: r for k, r in everything.items() if not k.startswith(b"a/m0")}
    assert trim_point(unpinned) > last // 2


async def test_an_incomplete_checkpoint_deletes_nothing(broker) -> None:
    """A manifest whose chunks are not all there (a broken or foreign write) stops the
    trim: its earlier records may be all that is left of that shard."""
    topic = topics_for("trim-broken").state
    await new_topic(broker, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        await write_checkpoint(producer, topic, "a", Checkpoint("0", {"t": 1}, {"n": 1}, 1))
        await producer.send_and_wait(
            topic,
            b'{"generation": 9, "slot": 1, "chunks": 2, "sha256": "", "offsets": {}}',
            key=b"a/1",
        )
    finally:
        await producer.stop()
    assert trim_point(await read_log(broker, topic)) is None


async def test_a_broker_that_refuses_deletes_is_logged_once_and_counted(broker, caplog) -> None:
    """The embedded broker does not implement DeleteRecords (it closes the connection):
    the trimmer says so once, counts every refusal and deletes nothing."""
    topic = topics_for("trim-refused").state
    await new_topic(broker, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for generation in range(1, 4):
            await write_checkpoint(
                producer, topic, "a", Checkpoint("0", {"t": generation}, {}, generation)
            )
    finally:
        await producer.stop()
    metrics = Metrics()
    trimmer = StateTrimmer(
        KafkaSettings(bootstrap_servers=broker, enable_idempotence=False), topic, metrics
    )
    caplog.set_level(logging.INFO, logger="driftline.state")
    assert await trimmer.trim() == 0
    assert await trimmer.trim() == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and topic in warnings[0].getMessage(), warnings
    refused = metrics.registry.get_sample_value(
        "driftline_state_trims_total", {"result": "refused"}
    )
    assert refused == 2
    await new_topic(broker, f"{topic}.copy")
    assert await copy_from(broker, topic, f"{topic}.copy", 0) == 6  # every record still there
