"""Keeps the state topic bounded on brokers that do not compact it.

Every checkpoint supersedes the shard's previous one, and on Kafka the state topic is
compacted, so only the latest records per key stay. A broker that accepts
``cleanup.policy=compact`` but never compacts (tansu's memory engine, some
Kafka-compatible services) keeps every checkpoint ever written: 15 MB to 126 MB over 2M
events in `benchmarks/soak.py`. So every `state_trim_interval_s` the worker reads the
state topic, finds the lowest offset that any group's latest checkpoint still reads
(`streams.checkpointing.store.trim_point`) and asks the broker to delete the records below it
(DeleteRecords). Reading the whole topic is what makes this safe for every group that
shares it: a key's latest record only moves forward, and a record written after the read
lies above the point.

Where the broker refuses (Kafka refuses DeleteRecords on a topic whose
``cleanup.policy`` is only ``compact``, and compacts it instead; tansu closes the
connection), the refusal is logged once, counted, and tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaError, PolicyViolationError

from driftline.streams.checkpointing.store import read_state_log, trim_point
from driftline.streams.kafka import KafkaSettings
from driftline.streams.metrics import Metrics

log = logging.getLogger("driftline.state")


class StateTrimmer:
    """Deletes superseded checkpoint records from one state topic, periodically."""

    def __init__(self, kafka: KafkaSettings, topic: str, metrics: Metrics) -> None:
        self.kafka = kafka
        self.topic = topic
        self.metrics = metrics
        self.low = 0
        """The state topic's first offset after the last trim that the broker accepted."""
        self.refusal: str | None = None
        """Why the broker last refused (logged once per distinct reason)."""

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        """Trim every ``interval_s`` until ``stopping`` is set; a failed attempt is logged
        and tried again at the next interval (it never stops the worker)."""
        while True:
            try:
                await asyncio.wait_for(stopping.wait(), interval_s)
                return
            except TimeoutError:
                pass
            try:
                await self.trim()
            except (KafkaError, OSError) as exc:
                log.debug("state topic %s: trim failed: %s", self.topic, exc)

    async def trim(self) -> int:
        """Delete what no checkpoint reads any more; returns the records deleted."""
        reader = AIOKafkaConsumer(**self.kafka.client_options(), enable_auto_commit=False)
        try:
            await reader.start()
            point = trim_point(await read_state_log(reader, self.topic))
        finally:
            await reader.stop()
        if point is None or point <= self.low:
            return 0
        admin = AIOKafkaAdminClient(**self.kafka.client_options())
        try:
            await admin.start()
            tp = TopicPartition(self.topic, 0)
            low = (await admin.delete_records({tp: RecordsToDelete(point)}))[tp]
        except KafkaError as exc:
            self.metrics.state_trims.labels("refused").inc()
            reason = type(exc).__name__
            if reason != self.refusal:
                self.refusal = reason
                # Kafka refuses on a compact-only topic, which it compacts instead.
                compacted = isinstance(exc, PolicyViolationError)
                (log.info if compacted else log.warning)(
                    "the broker refused to delete superseded checkpoints from %s (%s): the "
                    "topic keeps every checkpoint unless the broker compacts it",
                    self.topic,
                    reason,
                )
            return 0
        finally:
            await admin.close()
        deleted = low - self.low
        self.low = low
        self.refusal = None
        self.metrics.state_trims.labels("deleted").inc()
        self.metrics.state_low_offset.set(low)
        log.info(
            "state topic %s: deleted %d superseded records (now from %d)", self.topic, deleted, low
        )
        return deleted
