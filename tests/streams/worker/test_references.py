"""The references topic read by every worker of a group (a broadcast), on the broker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from aiokafka import AIOKafkaProducer

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile
from driftline.schemas.records import Prediction
from driftline.streams.kafka import publish_profile
from driftline.streams.worker import Worker, WorkerSettings
from tests.kafka_helpers import TEST_WORKER, config_for, kafka, setup_topics, topics_for
from tests.streams.worker.test_worker import SMALL


class FirstBatch(Worker):
    """Records the profiles it holds when its loop first handles a batch."""

    at_first_batch: set[str] | None = None

    async def _process(self, batch):  # type: ignore[no-untyped-def]
        if self.at_first_batch is None:
            self.at_first_batch = set(self.config.references)
        await super()._process(batch)


def profile(make_stream, name: str, model_id: str, version: str | None) -> ReferenceProfile:
    builder = ReferenceBuilder(SMALL, 2_000)
    for e in make_stream(n_predictions=2_000, seed=5):
        if isinstance(e, Prediction):
            builder.add(e.features, e.prediction)
    return builder.build(name, model_id, version)


def rejected(worker: Worker) -> float:
    return worker.metrics.references.labels("rejected")._value.get()


async def until(condition, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_every_worker_of_a_group_takes_every_profile_and_again_after_a_restart(
    broker, make_stream
) -> None:
    """Two workers of one group both take a profile published before they started (before
    their first batch) and one published while they run; a record that is no profile is
    rejected and counted by each, and stops neither; a worker started later takes them
    all again from the beginning (through faust's agent one worker of a group got them,
    and a restarted one resumed after its committed offset)."""
    topics = topics_for("refs-broadcast")
    await setup_topics(broker, topics, 2)
    clients = kafka(broker)
    before = profile(make_stream, "offline", "credit-risk", None)
    await publish_profile(clients, topics.references, "credit-risk", before)
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        await producer.send_and_wait(topics.references, b"not a profile", key=b"credit-risk")
    finally:
        await producer.stop()

    def worker() -> FirstBatch:
        settings = WorkerSettings(group_id="g-refs-broadcast", **TEST_WORKER)
        return FirstBatch(config_for(topics, SMALL), clients, settings)

    first, second = worker(), worker()
    tasks = [asyncio.create_task(w.run()) for w in (first, second)]
    try:
        await until(lambda: all(w.at_first_batch is not None for w in (first, second)), "batch")
        assert first.at_first_batch == second.at_first_batch == {"credit-risk"}
        assert rejected(first) == rejected(second) == 1
        handed = replace(profile(make_stream, "warmup", "fraud", "v2"), name="warmup")
        await publish_profile(clients, topics.references, "fraud@v2", handed)
        await until(
            lambda: all("fraud@v2" in w.config.references for w in (first, second)),
            "the profile published while both run reaches both",
        )
        for w in (first, second):
            assert w.config.references["credit-risk"].name == "offline"
            assert w.config.references["fraud@v2"].model_version == "v2"
            assert all(not t.done() for t in tasks)
    finally:
        for w in (first, second):
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    later = worker()
    task = asyncio.create_task(later.run())
    try:
        await until(lambda: later.at_first_batch is not None, "batch")
        assert later.at_first_batch == {"credit-risk", "fraud@v2"}
    finally:
        later.stop()
        await asyncio.wait_for(task, 60)


async def test_a_missing_references_topic_is_one_clear_error(broker) -> None:
    """The worker does not start without its references topic: one line names it and the
    command that creates it."""
    from driftline.schemas.exceptions import ConfigError  # noqa: PLC0415

    topics = topics_for("refs-missing")
    await setup_topics(broker, topics, 1)
    config = config_for(replace(topics, references="refs-missing.nowhere"), SMALL)
    settings = WorkerSettings(group_id="g-refs-missing", **TEST_WORKER)
    worker = Worker(config, kafka(broker), settings)
    try:
        await asyncio.wait_for(worker.run(), 60)
    except ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("the worker started without its references topic")
    assert "'refs-missing.nowhere' does not exist" in message
    assert "driftline topics create" in message and "\n" not in message
