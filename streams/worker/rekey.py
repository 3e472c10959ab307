"""Stage 0 for foreign input formats: re-key by correlation id (a repartition topic).

KServe and Seldon write records with no useful key (null, or a key that names a random
partition), so a request, its response and their outcomes can be on any partitions, and
the foreign topics need not have the outcomes topic's partition count. As Kafka Streams
does before a join, this stage reads them and writes each record, unchanged, to the
re-keyed topic keyed by `schemas.formats.correlation.correlation_key` of its id, with
its original timestamp and a header naming where it came from. Stage 1 reads the re-keyed
topic: everything of one correlation id is on one of its partitions, whatever the input's
partition counts.

Order: the stage reads many partitions (the log's and the outcomes'), which a backlog
fetches at different speeds (a fetch of short outcome records covers far more time than
one of long request logs). Records are therefore forwarded in record-timestamp order up
to the time every partition with more to give has reached, as stage 1 aligns predictions
and outcomes: the re-keyed topic then carries about the order a live stream had, so the
join and the pairing see halves and labels near their predictions.

Guarantees: offsets are committed only after the re-keyed records were acknowledged
(flush, then commit: the stage has no other state). A crash re-sends what followed the
last commit; stage 1 recognises re-sent halves by their source id and re-sent events by
their event id.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from bisect import bisect_right
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats import InputSettings, SourceRecord, seldon_pattern
from driftline.schemas.formats.correlation import correlation_id, correlation_key
from driftline.streams.config import Topics
from driftline.streams.formats.ingest import SOURCE_HEADER, letter, source_header
from driftline.streams.kafka import KafkaSettings
from driftline.streams.metrics import Metrics
from driftline.streams.worker.publishing import Publisher, send_dead_letters

log = logging.getLogger("driftline.rekey")

GROUP_SUFFIX: Final = ".rekey"
"""The re-key stage's consumer group is the worker's group id plus this: its offsets are
its own (it commits after its outputs are acknowledged, independently of the stages that
keep state)."""

ALIGN_MAX_RECORDS: Final = 50_000
"""Records held back per partition while others catch up; beyond this they are
forwarded without waiting (bounds memory when one partition is far behind)."""

ALIGN_MAX_WAIT_S: Final = 20.0
"""Longest wait for a partition that has more to give (behind its high watermark) before
the others are forwarded without it (a slow fetch under load, or a partition whose last
offsets are never returned)."""

COMMIT_INTERVAL_S: Final = 1.0
"""How often re-keyed input is confirmed and committed: a crash re-sends at most this
much, which stage 1 recognises; shorter costs a broker round trip more often."""


def _timestamp(record: ConsumerRecord) -> int:
    return int(record.timestamp)


def input_topics(settings: InputSettings, topics: Topics) -> list[str]:
    """The foreign topics named by ``[input] topics`` (default: the predictions topic)."""
    return list(settings.topics) or [topics.predictions]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, stage: Rekeyer) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.stage.in_batch:
            await self.stage.commit()
            for tp in revoked:  # held back, not forwarded: the next owner reads them again
                self.stage.pending.pop(tp, None)
                self.stage.positions.pop(tp, None)
                self.stage.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.stage.consumer is not None
        async with self.stage.in_batch:
            for tp in assigned:
                self.stage.positions.pop(tp, None)
                self.stage.pending.pop(tp, None)
                self.stage.read_to[tp] = await self.stage.consumer.position(tp)


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
        letter_budget: int,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.kafka = kafka
        self.group_id = group_id + GROUP_SUFFIX
        self.publisher = publisher
        self.metrics = metrics
        self.consumer_options = consumer_options
        self.max_bytes = max_bytes
        self.letter_budget = letter_budget
        """Bytes a dead letter may take (the producer's limit less record framing)."""
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[TopicPartition, int] = {}
        """Next offset to commit per partition: everything before it was re-keyed."""
        self.committed: dict[TopicPartition, int] = {}
        self.pending: dict[TopicPartition, list[ConsumerRecord]] = {}
        """Fetched records not forwarded yet, per partition, in log order."""
        self.waiting_since: float | None = None
        self.read_to: dict[TopicPartition, int] = {}
        """Offset after the last record forwarded (or the start position) per partition."""
        self.in_batch = asyncio.Lock()
        """Held while a batch is forwarded and by the rebalance callbacks (as the worker's
        `Worker.in_batch`): a partition revoked halfway through a batch would otherwise
        have its records forwarded after the revocation and its offset committed by a
        member that no longer owns it (aiokafka refuses that commit, failing the stage)."""
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
            models = seldon_pattern(self.settings)
            existing = await self.consumer.topics()
            if not any(re.fullmatch(models, topic) for topic in existing):
                # Not an error: models may be deployed later (the pattern picks them up).
                log.warning(
                    "no Seldon model topic matches %s on %s yet; check [input] "
                    "seldon_prefix and seldon_namespaces (waiting for models to appear)",
                    models,
                    self.kafka.bootstrap_servers,
                )
            outcomes = re.escape(self.topics.outcomes)
            pattern = f"^(?:{models}|{outcomes})$"
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
                async with self.in_batch:
                    assigned = self.consumer.assignment()
                    for tp, records in batch.items():
                        if tp in assigned:  # not revoked while this waited for the lock
                            self.pending.setdefault(tp, []).extend(records)
                    for tp, records in await self._aligned():
                        await self.forward(tp, records)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    await self.commit()
                    last_commit = time.monotonic()
            await self.commit()
        except BaseException:
            self.failed = True
            raise

    async def _aligned(self) -> list[tuple[TopicPartition, list[ConsumerRecord]]]:
        """Records to forward now, one run per record, in record-timestamp order: up to
        the earliest of the latest timestamps of the partitions that have more to give
        (see the module's note)."""
        assert self.consumer is not None
        horizon = math.inf
        for tp in self.consumer.assignment():
            buffered = self.pending.get(tp)
            if buffered:
                horizon = min(horizon, buffered[-1].timestamp)
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None or await self.consumer.position(tp) < highwater:
                horizon = -math.inf  # this partition has more to give: wait for it
        full = any(len(b) >= ALIGN_MAX_RECORDS for b in self.pending.values())
        if horizon == -math.inf and not full:
            now = time.monotonic()
            if self.waiting_since is None:
                self.waiting_since = now
            if now - self.waiting_since < ALIGN_MAX_WAIT_S:
                return []
        self.waiting_since = None
        if full or horizon == -math.inf:
            horizon = math.inf
        runs = []
        for tp, buffered in self.pending.items():
            cut = bisect_right(buffered, horizon, key=_timestamp)
            runs += [(r.timestamp, i, tp, r) for i, r in enumerate(buffered[:cut])]
            self.pending[tp] = buffered[cut:]
        runs.sort(key=lambda run: (run[0], run[2].topic, run[2].partition, run[1]))
        return [(tp, [r]) for _, _, tp, r in runs]

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
                assert self.consumer is not None
                count = len(self.consumer.partitions_for_topic(r.topic) or ())
                headers.append((SOURCE_HEADER, source_header(record, count)))
                await self.publisher.send(
                    self.topics.rekeyed,
                    record.value,
                    key.encode(),
                    headers=headers,
                    timestamp_ms=r.timestamp,
                )
                self.metrics.rekeyed.inc()
                self.metrics.processed.labels(r.topic).inc()
            self.positions[tp] = self.read_to[tp] = r.offset + 1

    async def _dead_letter(self, dead: DeadLetter) -> None:
        now_ms = int(time.time() * 1000)
        await send_dead_letters(
            self.publisher, self.topics.deadletter, [dead], self.letter_budget, now_ms
        )
        self.metrics.dead_lettered.labels(dead.topic, dead.reason).inc()

    def caught_up(self) -> bool:
        """Whether everything the input partitions hold (as far as the fetches so far
        tell) has been forwarded. Stage 1 of this process declares its partitions idle
        only then: while this stage still has a backlog, more input is on its way, and an
        idle marker would let the model stage release the others past it."""
        if self.consumer is None or any(self.pending.values()):
            return False
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None or self.read_to.get(tp, -1) < highwater:
                return False
        return True

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
