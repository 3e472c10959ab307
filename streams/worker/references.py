"""Reference profiles from the references topic, read by every worker of a deployment.

The topic is a broadcast, not a work queue: each profile (``driftline reference publish``,
or a warm-up reference a model stage hands over) must reach every worker, since any of
them may run a model's stage or sum its slices. So it is read without a consumer group
(every partition assigned, from the beginning, at every start), like Kafka Streams'
global tables: a worker that starts or restarts takes every profile published before
it, to the topic's high watermark, before it handles its first record, then follows
the topic while it runs. (Read through faust's agent, the topic was one partition of the
``<group_id>-control`` group: one worker of several got the profiles, and a restarted
one resumed after its committed offset, so profiles published earlier never came back.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from driftline.detectors.drift.reference import ReferenceProfile
from driftline.schemas.exceptions import ConfigError
from driftline.streams.config import profile_key
from driftline.streams.kafka import KafkaSettings, read_to_highwater
from driftline.streams.metrics import Metrics

log = logging.getLogger("driftline.worker")

REFERENCES_FETCH_MS = 500
"""Fetch wait while reading and following the references topic (a handful of records a
day: latency of a new profile, not throughput)."""


class ReferenceReader:
    """Every profile of the references topic, handed to ``take(key, profile)`` in log
    order (a later profile under the same key replaces the earlier one)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        take: Callable[[str, ReferenceProfile], None],
        metrics: Metrics,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.take = take
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []

    async def start(self, partitions: Collection[int]) -> None:
        """Assign the topic's ``partitions`` (every one: the worker checked the topic
        exists) and take every profile on them so far."""
        self.consumer = AIOKafkaConsumer(
            **self.kafka.client_options(), group_id=None, enable_auto_commit=False
        )
        await self.consumer.start()
        self.tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        async for records in read_to_highwater(self.consumer, self.tps, REFERENCES_FETCH_MS):
            self._take(records)

    async def follow(self, stopping: asyncio.Event) -> None:
        """Take profiles as they are published, until ``stopping`` is set."""
        assert self.consumer is not None
        while not stopping.is_set():
            batch = await self.consumer.getmany(*self.tps, timeout_ms=REFERENCES_FETCH_MS)
            for records in batch.values():
                self._take(records)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    def _take(self, records: Sequence[ConsumerRecord]) -> None:
        for record in records:
            try:
                profile = ReferenceProfile.from_dict(orjson.loads(record.value or b""))
                key = profile_key(profile, self.topic)
            except (orjson.JSONDecodeError, ConfigError, KeyError, TypeError, ValueError) as exc:
                self.metrics.references.labels("rejected").inc()
                log.error(
                    "reference profile at %s[%d] offset %d rejected: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
                continue
            self.take(key, profile)
            self.metrics.references.labels("loaded").inc()
            log.info("reference profile %r loaded for %s", profile.name, key)
