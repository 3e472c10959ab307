"""Stage 0 for foreign input formats: re-key by correlation id (a repartition topic).

KServe and Seldon write records with no useful key (null, or a key that names a random
partition), so a request, its response and their outcomes can be on any partitions, and
the foreign topics need not have the outcomes topic's partition count. As Kafka Streams
does before a join, this stage reads them and writes each record, unchanged, to the
re-keyed topic keyed by `schemas.formats.correlation.correlation_key` of its id, with
its original timestamp and a header naming where it came from. Stage 1 reads the re-keyed
topic: everything of one correlation id is on one of its partitions, whatever the input's
partition counts.

Guarantees: offsets are committed only after the re-keyed records were acknowledged
(flush, then commit: the stage has no other state). A crash re-sends what followed the
last commit; stage 1 recognises re-sent halves by their source id and re-sent events by
their event id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from schemas.deadletter import DeadLetter
from schemas.exceptions import DecodeError
from schemas.formats import InputSettings, SourceRecord, seldon_pattern
from schemas.formats.correlation import correlation_id, correlation_key
from streams.config import Topics
from streams.ingest import SOURCE_HEADER, letter, source_header
from streams.kafka import KafkaSettings
from streams.metrics import Metrics
from streams.publishing import Publisher

log = logging.getLogger(__name__)

GROUP_SUFFIX: Final = ".rekey"
"""The re-key stage's consumer group is the worker's group id plus this: its offsets are
its own (it commits after its outputs are acknowledged, independently of the stages that
keep state)."""

COMMIT_INTERVAL_S: Final = 1.0
"""How often re-keyed input is confirmed and committed: a crash re-sends at most this
much, which stage 1 recognises; shorter costs a broker round trip more often."""


def input_topics(settings: InputSettings, topics: Topics) -> list[str]:
    """The foreign topics named by ``[input] topics`` (default: the predictions topic)."""
    return list(settings.topics) or [topics.predictions]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, stage: Rekeyer) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.stage.commit()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.stage.positions.pop(tp, None)


class Rekeyer:
    """Reads the foreign topics and the outcomes topic; writes them re-keyed."""

    def __init__(
        self,
        settings: InputSettings,
        topics: Topics,
        kafka: KafkaSettings,
        group_id: str,
        publisher: Publisher,
        metrics: Metrics,
        consumer_options: dict[str, Any],
        max_bytes: int,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.kafka = kafka
        self.group_id = group_id + GROUP_SUFFIX
        self.publisher = publisher
        self.metrics = metrics
        self.consumer_options = consumer_options
        self.max_bytes = max_bytes
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[TopicPartition, int] = {}
        """Next offset to commit per partition: everything before it was re-keyed."""
        self.committed: dict[TopicPartition, int] = {}
        self.failed = False

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.consumer_options,
        )
        await self.consumer.start()
        listener = _Listener(self)
        if self.settings.format == "seldon":
            outcomes = re.escape(self.topics.outcomes)
            pattern = f"^(?:{seldon_pattern(self.settings)}|{outcomes})$"
            self.consumer.subscribe(pattern=pattern, listener=listener)
        else:
            names = [*input_topics(self.settings, self.topics), self.topics.outcomes]
            self.consumer.subscribe(names, listener=listener)

    async def run(self, stopping: asyncio.Event, fetch_timeout_ms: int, max_records: int) -> None:
        """Re-key until ``stopping`` is set; a failure propagates (nothing is committed
        past records whose outputs were not acknowledged)."""
        assert self.consumer is not None
        last_commit = time.monotonic()
        try:
            while not stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=fetch_timeout_ms, max_records=max_records
                )
                for tp, records in batch.items():
                    await self.forward(tp, records)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    await self.commit()
                    last_commit = time.monotonic()
            await self.commit()
        except BaseException:
            self.failed = True
            raise

    async def forward(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Re-key one partition's records (dead-letter those with no correlation id)."""
        outcomes = self.topics.outcomes
        for r in records:
            self.metrics.consumed.labels(r.topic).inc()
            record = SourceRecord(
                r.topic,
                r.partition,
                r.offset,
                r.timestamp,
                r.value or b"",
                r.key,
                {name.lower(): value for name, value in r.headers or ()},
            )
            try:
                if len(record.value) > self.max_bytes:
                    raise DecodeError(
                        "too_large", f"message is {len(record.value)} bytes, limit {self.max_bytes}"
                    )
                key = correlation_key(correlation_id(record, self.settings, outcomes))
            except DecodeError as exc:
                await self._dead_letter(letter(exc.reason, exc.message, record))
            else:
                headers = [(n, v) for n, v in r.headers or () if n != SOURCE_HEADER]
                headers.append((SOURCE_HEADER, source_header(record)))
                await self.publisher.send(
                    self.topics.rekeyed,
                    record.value,
                    key.encode(),
                    headers=headers,
                    timestamp_ms=r.timestamp,
                )
                self.metrics.rekeyed.inc()
                self.metrics.processed.labels(r.topic).inc()
            self.positions[tp] = r.offset + 1

    async def _dead_letter(self, dead: DeadLetter) -> None:
        value = dead.to_json(int(time.time() * 1000), self.kafka.max_request_size - 1_024)
        await self.publisher.send(self.topics.deadletter, value, dead.key)
        self.metrics.dead_lettered.labels(dead.topic, dead.reason).inc()

    async def commit(self) -> None:
        """Confirm every re-keyed record, then commit the offsets they cover."""
        if self.failed or self.consumer is None:
            return
        due = {tp: o for tp, o in self.positions.items() if self.committed.get(tp) != o}
        if not due:
            return
        await self.publisher.confirm()
        try:
            await self.consumer.commit(due)
        except (
            CommitFailedError,
            IllegalGenerationError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        ) as exc:  # the group moved on: the next commit (by whoever owns them) covers them
            log.warning("re-key stage: offset commit refused, retried later: %s", exc)
            return
        self.committed.update(due)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
