"""Long runs: memory and state stay flat once their bounds are reached.

1. Replay path (the engine that replay and the worker run): ``--replay-events`` events
   (default 10M) of a seeded stream, repeated with fresh ids and later event times; RSS
   and compressed checkpoint bytes after each quarter.
2. Worker on the embedded broker: ``--worker-events`` events (default 2M) into a
   1-partition topic pair; after each quarter committed, RSS of this process (the worker
   runs in it), the last checkpoint's bytes and the bytes in the state topic. The
   embedded broker never compacts, so the state topic grows by one checkpoint per
   interval there; Kafka compacts it to the latest checkpoint per key.

    python benchmarks/soak.py [--replay-events 10000000] [--worker-events 2000000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from msgspec.structs import replace

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import encode
from driftline.schemas.records import Event, Prediction
from driftline.streams.broker import EmbeddedBroker
from driftline.streams.config import Config, Topics
from driftline.streams.kafka import KafkaSettings, create_topics
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.traffic import StreamSpec, generate
from driftline.streams.worker import Worker, WorkerSettings

CHUNK_PREDICTIONS = 200_000
"""Predictions per generated chunk; later chunks are the same events with new ids and
event times shifted past the previous chunk."""

SETTINGS = DetectorSettings(warmup_events=3_000, window_events=2_000, label_warmup_events=1_000)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def endless(n_events: int) -> Iterator[list[Event]]:
    """Batches of 4,096 events, ``n_events`` in all, ids unique, event time increasing."""
    base = list(
        generate(
            StreamSpec(
                scenario="mean_shift",
                n_predictions=CHUNK_PREDICTIONS,
                change_at=CHUNK_PREDICTIONS // 2,
                seed=11,
            )
        )
    )
    span = max(e.ts for e in base) - min(e.ts for e in base) + 1
    sent, k = 0, 0
    while sent < n_events:
        shift = k * span
        for i in range(0, len(base), 4_096):
            batch = [
                replace(
                    e,
                    event_id=f"{k}-{e.event_id}",
                    request_id=f"{k}-{e.request_id}",
                    ts=e.ts + shift,
                )
                for e in base[i : i + 4_096]
            ]
            batch = batch[: n_events - sent]
            sent += len(batch)
            yield batch
            if sent >= n_events:
                return
        k += 1


def checkpoint_bytes(engine: Engine) -> int:
    raw = orjson.dumps(engine.state(), option=orjson.OPT_SERIALIZE_NUMPY)
    return len(zlib.compress(raw, 1))


def soak_replay(n_events: int) -> None:
    engine = Engine(SETTINGS)
    quarter = n_events // 4
    done, mark = 0, quarter
    started = time.perf_counter()
    print(f"replay path, {n_events:,} events:")
    for batch in endless(n_events):
        engine.process(batch)
        done += len(batch)
        if done >= mark:
            rate = done / (time.perf_counter() - started)
            print(
                f"  {done:>12,} events  RSS {rss_mb():7.1f} MB  checkpoint "
                f"{checkpoint_bytes(engine) / 1e6:6.2f} MB  ({rate:,.0f} events/s incl. "
                "generation)"
            )
            mark += quarter


async def state_topic_bytes(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        total = 0
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                total += sum(len(r.value or b"") + len(r.key or b"") for r in records)
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                return total
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, t: Topics) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for topic in (t.predictions, t.outcomes):
            total += await consumer.committed(TopicPartition(topic, 0)) or 0
        return total
    finally:
        await consumer.stop()


async def soak_worker(n_events: int) -> None:
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        t = Topics.prefixed("soak")
        kafka = KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)
        await create_topics(kafka, t, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        for batch in endless(n_events):
            for e in batch:
                topic = t.predictions if isinstance(e, Prediction) else t.outcomes
                await producer.send(topic, encode(e), key=e.request_id.encode())
        await producer.flush()
        await producer.stop()
        settings = WorkerSettings(
            group_id="g-soak",
            checkpoint_interval_s=5.0,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
        )
        worker = Worker(Config(topics=t, detectors=SETTINGS), kafka, settings)
        task = asyncio.create_task(worker.run())
        print(f"worker on the embedded broker, {n_events:,} events (1 partition):")
        quarter = n_events // 4
        mark = quarter
        try:
            while mark <= n_events:
                if task.done():
                    task.result()
                done = await committed(bootstrap, "g-soak", t)
                if done >= mark:
                    gauge = worker.metrics.registry.get_sample_value(
                        "driftline_checkpoint_bytes", {"partition": "0"}
                    )
                    state = await state_topic_bytes(bootstrap, t.state)
                    print(
                        f"  {done:>12,} committed  RSS {rss_mb():7.1f} MB  checkpoint "
                        f"{(gauge or 0) / 1e6:6.2f} MB  state topic {state / 1e6:8.1f} MB"
                    )
                    mark += quarter
                await asyncio.sleep(1.0)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replay-events", type=int, default=10_000_000)
    parser.add_argument("--worker-events", type=int, default=2_000_000)
    args = parser.parse_args()
    tune_gc()
    if args.replay_events:
        soak_replay(args.replay_events)
    if args.worker_events:
        asyncio.run(soak_worker(args.worker_events))


if __name__ == "__main__":
    main()
