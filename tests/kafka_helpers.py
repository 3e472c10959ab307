"""Helpers for tests against the embedded broker: produce streams, read topics, run workers."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.schemas.decode import encode
from driftline.schemas.records import Event, Prediction
from driftline.streams.checkpointing.store import read_checkpoints
from driftline.streams.config import Config, Topics
from driftline.streams.kafka import KafkaSettings, create_topics
from driftline.streams.worker import Worker

TEST_WORKER = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 500,
    "checkpoint_interval_s": 0.5,
}
"""Group timeouts tuned for the embedded broker: joins wait half the session (3 s)."""


_fresh = itertools.count()


def fresh(name: str) -> str:
    """``name`` with a number of its own in this process, for what a module-scoped
    fixture creates on the broker: pytest tears a module's fixtures down when its process
    runs another module's test in between (pytest-xdist's worksteal does), and sets them
    up again for the module's next test; a second set-up must not produce into the
    topics, or join the group, of the first (the records would be there twice)."""
    return f"{name}-{next(_fresh)}"


def topics_for(prefix: str) -> Topics:
    return Topics.prefixed(prefix)


async def checkpoints(bootstrap: str, state_topic: str, group: str, stage: int = 1) -> dict:
    """The latest checkpoint of each input partition of ``group`` (stage 1), or of each
    summaries partition (stage 2), by partition number."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        found = await read_checkpoints(reader, state_topic, group)
    finally:
        await reader.stop()
    if stage == 1:
        return {int(k): c for k, c in found.items() if not k.startswith("m")}
    return {int(k[1:]): c for k, c in found.items() if k.startswith("m")}


def kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)


_last_produced = [0]
"""The produce time `produce` gave its last record (one list per test process)."""


async def produce(
    bootstrap: str,
    topics: Topics,
    events: list[Event],
    extra: list[tuple[str, bytes]] = (),
    compression: str | None = None,
) -> dict[str, int]:
    """Produce events keyed by request_id (record batches compressed with ``compression``,
    if given); returns records produced per topic.

    Each record's produce time (CreateTime) is one millisecond after the one before, in
    the order given, ending now (or later, after a call that ended later: never before
    the records of an earlier call): the worker interleaves a partition's predictions and
    outcomes by produce time (`streams.worker.alignment`), and records produced within
    one millisecond, which vary from run to run, would come predictions first instead of
    in the order given, which is replay's."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1 << 20,
        compression_type=compression,
    )
    await producer.start()
    counts = {topics.predictions: 0, topics.outcomes: 0}
    produced = max(int(time.time() * 1000) - len(events) - len(extra), _last_produced[0])
    try:
        for event in events:
            topic = topics.predictions if isinstance(event, Prediction) else topics.outcomes
            produced += 1
            await producer.send(
                topic, encode(event), key=event.request_id.encode(), timestamp_ms=produced
            )
            counts[topic] += 1
        for topic, raw in extra:
            produced += 1
            await producer.send(topic, raw, key=b"bad", timestamp_ms=produced)
            counts[topic] += 1
        await producer.flush()
    finally:
        await producer.stop()
        _last_produced[0] = produced
    return counts


async def read_all(bootstrap: str, topic: str, timeout_s: float = 2.0) -> list[bytes]:
    """Every record value of a topic, reading to the fetch high watermark (no group)."""
    return [value for value, _ in await read_records(bootstrap, topic, timeout_s)]


async def read_records(
    bootstrap: str, topic: str, timeout_s: float = 2.0
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every record of a topic as (value, headers), reading to the fetch high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        values: list[tuple[bytes, dict[str, bytes]]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                values += [(r.value, dict(r.headers or ())) for r in records]
            done = True
            for tp in tps:
                highwater = consumer.highwater(tp)
                done = done and highwater is not None and await consumer.position(tp) >= highwater
            if done and not batch:
                break
        return values
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topics: Topics, partitions: int) -> int:
    """Sum of the group's committed offsets over the input topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for topic in (topics.predictions, topics.outcomes):
            for p in range(partitions):
                offset = await consumer.committed(TopicPartition(topic, p))
                total += offset or 0
        return total
    finally:
        await consumer.stop()


async def wait_committed(
    bootstrap: str,
    group: str,
    topics: Topics,
    partitions: int,
    target: int,
    timeout_s: float = 60.0,
    tasks: list[asyncio.Task] | None = None,
    workers: Sequence[Worker] = (),
) -> None:
    """Wait until the group committed ``target`` input records; fail at once, with the
    worker's own error, if a worker task given in ``tasks`` ended.

    With ``workers`` (in-process workers of the group), also wait until their model-stage
    merges hold nothing back: committing the last summaries does not mean their items
    were released (the tail waits for the input partitions' idle markers)."""
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        for task in tasks or ():
            if task.done():
                task.result()
                raise AssertionError("a worker stopped before the input was consumed")
        done = await committed(bootstrap, group, topics, partitions)
        if (
            done >= target
            and all(merged(w) for w in workers)
            and await summaries_drained(bootstrap, group, topics)
            and all(merged(w) for w in workers)
        ):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"group {group} committed {done} of {target} records within {timeout_s} s")


def merged(worker: Worker) -> bool:
    """Whether a worker's model stage has released every item it was sent."""
    return all(
        not shard.pending and all(m.buffered == 0 for m in shard.merges.values())
        for shard in worker.model_shards.values()
    )


async def summaries_drained(bootstrap: str, group: str, topics: Topics) -> bool:
    """Whether the group's model stage has committed everything on the summaries topic
    (compared with the fetch high watermark: tansu's ListOffsets is wrong)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topics.summaries)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topics.summaries) or set()
        tps = [TopicPartition(topics.summaries, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, await consumer.committed(tp) or 0)
        batch = await consumer.getmany(timeout_ms=300)
        if any(batch.values()):
            return False
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) < highwater:
                return False
        return True
    finally:
        await consumer.stop()


async def decisions(bootstrap: str, topics: Topics) -> list[dict]:
    out = []
    for topic in (topics.alerts, topics.retrain, topics.rollback):
        out += [orjson.loads(v) for v in await read_all(bootstrap, topic)]
    return out


def write_config(path: Path, topics: Topics, group: str, detectors: dict | None = None) -> Path:
    lines = ["[worker]", f'group_id = "{group}"']
    lines += [f"{k} = {v}" for k, v in TEST_WORKER.items()]
    lines += ["", "[kafka]", "enable_idempotence = false", "", "[topics]"]
    lines += [f'{name} = "{getattr(topics, name)}"' for name in Topics.names()]
    if detectors:
        lines += ["", "[detectors]"] + [f"{k} = {v}" for k, v in detectors.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker_process(bootstrap: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "driftline"
    env = {**os.environ, "DRIFTLINE_BOOTSTRAP_SERVERS": bootstrap}
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(exe), "worker", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def setup_topics(bootstrap: str, topics: Topics, partitions: int) -> None:
    await create_topics(kafka(bootstrap), topics, partitions)


def config_for(topics: Topics, detectors) -> Config:
    return replace(Config(), topics=topics, detectors=detectors)
