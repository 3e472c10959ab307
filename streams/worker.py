"""``driftline worker``: the long-running stream worker.

Which part sits where, and why (figures in ../shared/TANSU.md and benchmarks/):

* A faust App (streams/app.py) hosts this worker as a service: process lifecycle, signals,
  and the low-volume references topic.
* The hot path (predictions, outcomes) runs on aiokafka batches (``getmany``): decoding,
  validation and detector updates are done a batch at a time. A faust agent pays about
  160 us of plumbing per message, which caps it near 6k msg/s, an order of magnitude
  below what the detectors sustain.
* Detector state is sharded by input partition (predictions and outcomes are
  co-partitioned by ``request_id``), like Kafka Streams or faust tables: a rebalance moves
  whole shards, and each shard's checkpoint records the input offsets it covers, so
  recovery seeks to them and never trusts ``end_offsets()``.
* Checkpoints follow a fixed order: flush outputs, write state, commit offsets. A crash
  re-reads at most one checkpoint interval of input; the decisions it re-emits carry the
  same ``decision_id`` (ids are per episode), and published ids are remembered in the
  state so a restarted shard does not publish them again.
* Offsets follow processing, never decoding: a shard's offsets move past a record only
  once its effects (state updates, decisions, dead letters) are made and queued, and a
  checkpoint is written only after the broker acknowledged those outputs. A worker that
  fails (a publish refused, a bug, a cancellation mid-batch) writes no checkpoint at all:
  its in-memory state may hold half a batch, so the next worker resumes from the last
  checkpoint (at-least-once; duplicates dropped by event id, decision ids unchanged).
* Event time is bounded at the edge (`detectors.clock.EventClock`, per partition): an
  event dated far ahead of its partition's recent traffic is dead-lettered as
  ``future_timestamp`` instead of moving every watermark.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import signal
import time
from bisect import bisect_right
from collections import Counter as CounterDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from detectors.clock import PartitionClock
from detectors.decision import Decision
from detectors.engine import Engine, RecentIds
from detectors.join import JOIN_COUNTERS
from detectors.reference import ReferenceProfile
from detectors.settings import reject_unknown
from schemas.deadletter import DeadLetter
from schemas.decode import FUTURE_TIMESTAMP, decode
from schemas.exceptions import ConfigError, DecodeError
from schemas.records import Event
from streams.config import Config, shard_settings
from streams.faults import ConnectionLog
from streams.kafka import KafkaSettings
from streams.metrics import DRIFT_SCORE_MODELS, Metrics
from streams.publishing import Publisher
from streams.state_store import Checkpoint, read_checkpoints, write_checkpoint

log = logging.getLogger("driftline.worker")

GROUP_ERRORS = (
    CommitFailedError,
    IllegalGenerationError,
    UnknownMemberIdError,
    RebalanceInProgressError,
)
"""Commit refusals that mean "the group moved on" (a rebalance), not a broken worker."""

LATENCY_SAMPLES_PER_BATCH = 64
"""Records per batch whose latency is observed: enough for p99 over a minute of batches
without paying a histogram lock per record."""

METRICS_INTERVAL_S = 1.0
"""How often lag, join-buffer and drift-score gauges are refreshed."""

RECORD_OVERHEAD_BYTES = 512
"""Room left below ``max_request_size`` for a dead letter's record framing (batch and
record headers, the key): aiokafka counts them against the limit too."""


def _produce_time(record: ConsumerRecord) -> int:
    return int(record.timestamp)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Worker behaviour. TOML ``[worker]``; environment ``DRIFTLINE_<NAME>``."""

    group_id: str = "driftline"
    """Consumer group; also names this deployment's checkpoints in the state topic."""
    checkpoint_interval_s: float = 5.0
    """State is written at most this often: a crash re-reads at most this much input.
    Five seconds keeps the checkpoint cost near 1 % of a busy worker's time."""
    max_batch_records: int = 5_000
    """Records per fetch: large enough to amortise per-batch numpy cost."""
    fetch_timeout_ms: int = 50
    """Wait for records when idle; bounds added latency at low traffic."""
    session_timeout_ms: int = 10_000
    """Consumer group session (aiokafka's default). Some brokers delay joins by half of it."""
    heartbeat_interval_ms: int = 3_000
    metrics_port: int | None = None
    """Port of the Prometheus endpoint; None disables it."""
    shutdown_timeout_s: float = 30.0
    """Upper bound on the final checkpoint and client shutdown after SIGTERM/SIGINT."""
    published_memory: int = 10_000
    """Decision ids remembered per shard, so restarts and other shards do not republish."""
    align_max_records: int = 50_000
    """Records held back per input partition while the other topic catches up (see
    `Worker._aligned`); beyond this they are processed without waiting."""
    align_max_wait_s: float = 2.0
    """Longest wait for a topic that has not answered a fetch yet before processing the
    other one alone."""
    startup_timeout_s: float = 60.0
    """How long the worker waits for a broker at start-up (retrying with backoff) before
    it exits non-zero with one line naming the address: long enough for a broker started
    by the same compose file or deployment, short enough that a wrong address is seen."""
    data_dir: str | None = None
    """Where the faust host keeps its small control data; default
    ``$XDG_STATE_HOME/driftline`` (``~/.local/state/driftline``), never the current
    directory."""
    publish_timeout_s: float = 120.0
    """How long an output refused for a reason that can pass (broker away, leader
    election, delivery timeout) is retried before the worker stops. Two minutes rides
    out a broker restart; a longer outage stops the worker cleanly (nothing committed
    past the undelivered output) for its supervisor to restart."""

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> WorkerSettings:
        reject_unknown(cls, values, "worker")
        settings = cls(**values)
        if settings.checkpoint_interval_s <= 0 or settings.max_batch_records <= 0:
            raise ConfigError("checkpoint_interval_s and max_batch_records must be positive")
        if settings.startup_timeout_s < 0:
            raise ConfigError(
                f"startup_timeout_s must be 0 or positive, got {settings.startup_timeout_s}"
            )
        if settings.publish_timeout_s <= 0:
            raise ConfigError(
                f"publish_timeout_s must be positive, got {settings.publish_timeout_s}"
            )
        return settings


class Shard:
    """Detector state of one input partition, with the offsets and counts it covers."""

    def __init__(self, partition: int, engine: Engine, published_memory: int) -> None:
        self.partition = partition
        self.engine = engine
        self.clock = PartitionClock(engine.settings.max_future_skew_ms)
        self.offsets: dict[str, int] = {}
        self.consumed = 0
        self.dead_letters: CounterDict[str] = CounterDict()
        self.published = RecentIds(published_memory)
        self.generation = 0
        self.dirty = False
        self.covered: dict[str, int] = {}
        """Offsets covered by the shard's latest checkpoint (restored or written)."""
        self.committed: dict[str, int] = {}
        """Offsets the group last accepted a commit of (empty: not known)."""
        self.pending: dict[str, list[ConsumerRecord]] = {}
        """Fetched records not processed yet, per topic, in log order (see `_aligned`)."""
        self.waiting_since: float | None = None

    def state(self) -> dict[str, Any]:
        return {
            "engine": self.engine.state(),
            "consumed": self.consumed,
            "dead_letters": dict(self.dead_letters),
            "published": self.published.state(),
            "clock": self.clock.state(),
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        self.engine.restore(checkpoint.state["engine"])
        self.consumed = checkpoint.state["consumed"]
        self.dead_letters = CounterDict(checkpoint.state["dead_letters"])
        self.published.restore(checkpoint.state["published"])
        if "clock" in checkpoint.state:  # checkpoints from before bounded event time have none
            self.clock.restore(checkpoint.state["clock"])
        self.offsets = dict(checkpoint.offsets)
        self.generation = checkpoint.generation


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.acquire(sorted({tp.partition for tp in assigned}))


class Worker:
    """Consumes predictions and outcomes, runs the detectors, publishes decisions."""

    def __init__(
        self,
        config: Config,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.topics = config.topics
        self.kafka = kafka
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.shards: dict[int, Shard] = {}
        self.partitions = 0
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.last_checkpoint = time.monotonic()
        self.last_metrics = 0.0
        self._join_seen: dict[int, dict[str, int]] = {}
        self._duplicates_seen = 0
        self._evictions_seen: dict[str, int] = {}
        self.publisher: Publisher | None = None
        self.failure: BaseException | None = None
        """Why the worker stopped processing, if it failed: no checkpoint is written after."""
        self.metrics_server: Any = None
        self.connection_log = ConnectionLog(
            self.metrics.broker_errors.inc, self.metrics.broker_outages.inc
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop` is called (or SIGTERM/SIGINT when installed)."""
        await self._start()
        try:
            while not self.stopping.is_set() and self.failure is None:
                assert self.consumer is not None
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.fetch_timeout_ms,
                    max_records=self.settings.max_batch_records,
                )
                await self._process(batch)
                self.connection_log.tick(bool(batch))
                now = time.monotonic()
                if now - self.last_checkpoint >= self.settings.checkpoint_interval_s:
                    await self.checkpoint(set(self.shards))
                if now - self.last_metrics >= METRICS_INTERVAL_S:
                    self.last_metrics = now
                    self._refresh_gauges()
            if self.failure is not None:  # failed in a rebalance callback
                raise self.failure
        except BaseException as exc:
            # Whatever stopped processing mid-batch left state that the offsets do not
            # describe: the shutdown must not checkpoint it.
            if self.failure is None:
                self.failure = exc
            raise
        finally:
            await asyncio.wait_for(self._shutdown(), self.settings.shutdown_timeout_s)

    def stop(self) -> None:
        """Ask the worker to finish its batch, checkpoint, commit and return."""
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _start(self) -> None:
        self.connection_log.install()
        self.producer = AIOKafkaProducer(**self.kafka.producer_options())
        await self.producer.start()
        self.publisher = Publisher(
            self.producer, self.settings.publish_timeout_s, self.metrics.publish_retries.inc
        )
        self.consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            # Range assignment gives predictions-p and outcomes-p to the same member.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self.consumer.start()
        self.partitions = await self._check_topics()
        if self.settings.metrics_port is not None:
            self.metrics_server = self.metrics.serve(self.settings.metrics_port)
        self.consumer.subscribe(
            [self.topics.predictions, self.topics.outcomes], listener=_Listener(self)
        )

    async def _check_topics(self) -> int:
        assert self.consumer is not None
        counts = {}
        for topic in (self.topics.predictions, self.topics.outcomes, self.topics.state):
            parts = self.consumer.partitions_for_topic(topic)
            if parts is None:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                raise ConfigError(
                    f"topic {topic!r} does not exist on {self.kafka.bootstrap_servers}; "
                    "create the topics first with 'driftline topics create'"
                )
            counts[topic] = len(parts)
        if counts[self.topics.predictions] != counts[self.topics.outcomes]:
            raise ConfigError(
                f"{self.topics.predictions!r} has {counts[self.topics.predictions]} partitions "
                f"but {self.topics.outcomes!r} has {counts[self.topics.outcomes]}: the join "
                "needs them co-partitioned (same count, both keyed by request_id)"
            )
        return counts[self.topics.predictions]

    async def _shutdown(self) -> None:
        if self.consumer is not None and self.shards and self.failure is None:
            await self.checkpoint(set(self.shards))
        elif self.failure is not None:
            log.error(
                "worker stopped without a final checkpoint (%s); the next start resumes "
                "from the last checkpoint",
                _one_line(self.failure),
            )
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        self.connection_log.remove()

    # -- shards ------------------------------------------------------------------------

    def add_reference(self, key: str, profile: ReferenceProfile) -> None:
        """Use ``profile`` for versions of its model first seen from now on (versions already
        monitored keep the reference they started with)."""
        self.config = replace(self.config, references={**self.config.references, key: profile})
        for shard in self.shards.values():
            shard.engine.profiles[key] = profile

    def _engine(self) -> Engine:
        """An engine for one shard (the model's false-alarm budget split across shards)."""
        return Engine(*shard_settings(self.config, max(self.partitions, 1)))

    async def acquire(self, partitions: list[int]) -> None:
        """Restore the shards of newly assigned partitions and seek to their offsets.

        The partitions stay paused while their state is read, and every seek happens
        together with the shard's registration (no await in between): a batch returned
        meanwhile can neither be processed without its shard nor move a position past
        records that were never processed.
        """
        assert self.consumer is not None
        inputs = (self.topics.predictions, self.topics.outcomes)
        tps = [TopicPartition(topic, p) for p in partitions for topic in inputs]
        self.consumer.pause(*tps)
        reader = AIOKafkaConsumer(**self.kafka.client_options(), enable_auto_commit=False)
        await reader.start()
        try:
            checkpoints = await read_checkpoints(reader, self.topics.state, self.settings.group_id)
        finally:
            await reader.stop()
        shards = {}
        for p in partitions:
            shard = Shard(p, self._engine(), self.settings.published_memory)
            checkpoint = checkpoints.get(p)
            if checkpoint is not None:
                shard.restore(checkpoint)
            for topic in inputs:
                if topic not in shard.offsets:
                    tp = TopicPartition(topic, p)
                    committed = await self.consumer.committed(tp)
                    if committed is None:
                        committed = (await self.consumer.beginning_offsets([tp]))[tp]
                    shard.offsets[topic] = committed
            shards[p] = shard
            log.info("partition %d: %s", p, "restored" if checkpoint else "new shard")
        for p, shard in shards.items():
            for topic in inputs:
                self.consumer.seek(TopicPartition(topic, p), shard.offsets[topic])
            shard.covered = dict(shard.offsets)
            self.shards[p] = shard
        self.consumer.resume(*tps)

    async def release(self, partitions: set[int]) -> None:
        """Checkpoint and drop the shards of revoked partitions."""
        mine = partitions & set(self.shards)
        if mine:
            await self.checkpoint(mine)
        for p in mine:
            self.shards.pop(p, None)

    # -- processing --------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            shard = self.shards.get(tp.partition)
            if shard is not None:
                # Records of a partition still being restored are skipped here and read
                # again after its seek; they are counted when they are handled.
                shard.pending.setdefault(tp.topic, []).extend(records)
                self.metrics.consumed.labels(tp.topic).inc(len(records))
        now_ms = int(time.time() * 1000)
        for p, shard in list(self.shards.items()):
            if not any(shard.pending.values()):
                continue
            merged = self._aligned(p, shard)
            if merged:
                await self._handle(shard, merged, now_ms)
        if batch:
            self._observe_latency(batch)

    def _aligned(self, p: int, shard: Shard) -> list[ConsumerRecord]:
        """The records of one partition to process now, in arrival order.

        The predictions and outcomes topics are fetched independently, and after a restart
        or in a backlog one can be read hours (of event time) ahead of the other. Records
        are taken up to the produce time both topics have reached (a topic with nothing
        new counts as caught up once its position reaches the high watermark), the rest
        wait for the next fetch, so the engine sees about the order a live stream would
        have had, as in replay. Each topic's records stay in log order; the two interleave
        by produce time, predictions first on ties.
        """
        assert self.consumer is not None
        topics = (self.topics.predictions, self.topics.outcomes)
        horizon = math.inf
        for topic in topics:
            buffered = shard.pending.get(topic)
            if buffered:
                horizon = min(horizon, buffered[-1].timestamp)
                continue
            highwater = self.consumer.highwater(TopicPartition(topic, p))
            if highwater is None or shard.offsets.get(topic, 0) < highwater:
                horizon = -math.inf  # this topic has more to give: wait for it
        full = any(len(b) >= self.settings.align_max_records for b in shard.pending.values())
        if horizon == -math.inf and not full:
            now = time.monotonic()
            if shard.waiting_since is None:
                shard.waiting_since = now
            if now - shard.waiting_since < self.settings.align_max_wait_s:
                return []
        shard.waiting_since = None
        if full or horizon == -math.inf:
            horizon = math.inf
        taken = []
        for topic in topics:
            buffered = shard.pending.get(topic, [])
            cut = bisect_right(buffered, horizon, key=_produce_time)
            taken.append(buffered[:cut])
            shard.pending[topic] = buffered[cut:]
        return list(heapq.merge(*taken, key=_produce_time))

    async def _handle(self, shard: Shard, records: list[ConsumerRecord], now_ms: int) -> None:
        """Decode, admit, detect and publish; only then do the shard's offsets cover
        ``records``. An exception anywhere leaves the offsets where they were (and the
        worker failed: see `run`)."""
        assert self.publisher is not None
        events, sources, letters = self._decode(records)
        if events:
            admitted = shard.clock.admit(
                [e.model_id for e in events],
                np.fromiter((e.ts for e in events), np.int64, len(events)),
                np.fromiter((r.timestamp for r in sources), np.int64, len(sources)),
            )
            if not admitted.all():
                for i in np.flatnonzero(~admitted).tolist():
                    letters.append(self._future_letter(shard, events[i], sources[i]))
                events = [e for e, ok in zip(events, admitted.tolist(), strict=True) if ok]
        decisions = shard.engine.process(events)
        max_bytes = self.kafka.max_request_size - RECORD_OVERHEAD_BYTES
        for letter in letters:
            value = letter.to_json(now_ms, max_bytes - len(letter.key or b""))
            await self.publisher.send(self.topics.deadletter, value, letter.key)
        await self._publish(shard, decisions, now_ms)
        # Every effect of these records is made and queued: the offsets may move past them.
        processed: CounterDict[str] = CounterDict()
        for record in records:
            processed[record.topic] += 1
            offset = record.offset + 1
            if offset > shard.offsets.get(record.topic, 0):
                shard.offsets[record.topic] = offset
        for letter in letters:
            shard.dead_letters[letter.reason] += 1
            processed[letter.topic] -= 1
            self.metrics.dead_lettered.labels(letter.topic, letter.reason).inc()
        shard.consumed += len(records)
        for topic, n in processed.items():
            self.metrics.processed.labels(topic).inc(n)
        shard.dirty = True

    def _decode(
        self, records: list[ConsumerRecord]
    ) -> tuple[list[Event], list[ConsumerRecord], list[DeadLetter]]:
        """Events with the record each came from, and dead letters for the rest."""
        predictions = self.topics.predictions
        events: list[Event] = []
        sources: list[ConsumerRecord] = []
        letters: list[DeadLetter] = []
        for record in records:
            expect = "prediction" if record.topic == predictions else "outcome"
            try:
                if record.value is None:
                    raise DecodeError("invalid_json", "message has no value (tombstone)")
                events.append(decode(record.value, expect))
                sources.append(record)
            except DecodeError as exc:
                letters.append(_letter(exc.reason, exc.message, record))
        return events, sources, letters

    def _future_letter(self, shard: Shard, event: Event, record: ConsumerRecord) -> DeadLetter:
        skew = shard.clock.max_future_skew_ms
        recent = shard.clock.now(event.model_id)
        where = f"recent event time {recent}" if recent is not None else "produce time"
        message = (
            f"ts {event.ts} is more than max_future_skew_ms={skew} ahead of model "
            f"{event.model_id!r}'s {where} on partition {record.partition} (record "
            f"timestamp {record.timestamp}); fix the producer's clock or timestamp units "
            "and re-publish"
        )
        return _letter(FUTURE_TIMESTAMP, message, record)

    async def _publish(self, shard: Shard, decisions: list[Decision], now_ms: int) -> None:
        assert self.publisher is not None
        for d in decisions:
            if any(
                d.decision_id in s.published.current or d.decision_id in s.published.previous
                for s in self.shards.values()
            ):
                continue
            shard.published.add(d.decision_id)
            self.metrics.decisions.labels(d.type, d.kind).inc()
            await self.publisher.send(
                self.topics.for_decision(d.type),
                orjson.dumps(d.to_dict(now_ms)),
                d.model_id.encode(),
            )

    def _observe_latency(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        now_ms = time.time() * 1000
        for records in batch.values():
            step = max(1, len(records) // LATENCY_SAMPLES_PER_BATCH)
            for record in records[::step]:
                self.metrics.latency.observe(max(0.0, (now_ms - record.timestamp) / 1000))

    def _refresh_gauges(self) -> None:
        assert self.consumer is not None
        for p in self.shards:
            for topic in (self.topics.predictions, self.topics.outcomes):
                tp = TopicPartition(topic, p)
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    position = self.shards[p].offsets.get(topic, 0)
                    self.metrics.lag.labels(topic, str(p)).set(max(0, highwater - position))
        self.metrics.join_buffer.set(sum(s.engine.join.size for s in self.shards.values()))
        for p, shard in self.shards.items():
            seen = self._join_seen.setdefault(p, dict.fromkeys(JOIN_COUNTERS, 0))
            for status, value in shard.engine.join.counts.items():
                if value > seen[status]:
                    self.metrics.outcomes.labels(status).inc(value - seen[status])
                    seen[status] = value
        scores: dict[tuple[str, str], float] = {}
        for shard in self.shards.values():
            for model_id, versions in shard.engine.monitors.items():
                for monitor in versions.values():
                    for kind, score in monitor.drift_scores().items():
                        key = (model_id, kind)
                        scores[key] = max(scores.get(key, 0.0), score)
        models = sorted({m for m, _ in scores})[:DRIFT_SCORE_MODELS]
        for (model_id, kind), score in scores.items():
            if model_id in models:
                self.metrics.drift_score.labels(model_id, kind).set(score)
        duplicates = sum(s.engine.counts["duplicates"] for s in self.shards.values())
        if duplicates > self._duplicates_seen:
            self.metrics.duplicates.inc(duplicates - self._duplicates_seen)
        self._duplicates_seen = duplicates
        evicted = {
            "model": sum(s.engine.counts["evicted_models"] for s in self.shards.values()),
            "version": sum(s.engine.counts["evicted_versions"] for s in self.shards.values()),
            "clock": sum(s.clock.evicted for s in self.shards.values()),
        }
        for what, total in evicted.items():
            before = self._evictions_seen.get(what, 0)
            if total > before:
                self.metrics.evictions.labels(what).inc(total - before)
            self._evictions_seen[what] = total

    # -- checkpoints -------------------------------------------------------------------

    async def checkpoint(self, partitions: set[int]) -> None:
        """Confirm outputs, write the shards' state, commit their offsets (in that order).

        Does nothing once the worker has failed; a failure here fails the worker (it is
        also called from rebalance callbacks, whose exceptions aiokafka only logs)."""
        if self.failure is not None:
            return
        assert self.producer is not None and self.consumer is not None
        assert self.publisher is not None
        started = time.monotonic()
        try:
            await self.publisher.confirm()  # a failed delivery raises before any state
            due = [
                p
                for p in sorted(partitions)
                if (shard := self.shards.get(p)) is not None
                and (shard.dirty or shard.committed != shard.covered)
            ]
            dirty = [p for p in due if self.shards[p].dirty]
            if dirty and not await self._still_member(dirty):
                due = [p for p in due if p not in dirty]
                dirty = []
            for p in dirty:
                shard = self.shards[p]
                shard.generation += 1
                size = await write_checkpoint(
                    self.producer,
                    self.topics.state,
                    self.settings.group_id,
                    Checkpoint(p, dict(shard.offsets), shard.state(), shard.generation),
                )
                self.metrics.checkpoint_bytes.labels(str(p)).set(size)
                shard.dirty = False
                shard.covered = dict(shard.offsets)
            if due:
                await self._commit(due)
        except BaseException as exc:
            self.failure = exc
            self.stopping.set()
            raise
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoint_seconds.observe(self.last_checkpoint - started)

    async def _still_member(self, partitions: list[int]) -> bool:
        """Whether the group still counts this worker as the owner of ``partitions``.

        Probed by committing the offsets their last checkpoints already cover (always
        safe). A worker that was away past its session (a network cut, a long pause) is
        refused: it must not write its now stale state over the new owner's checkpoints,
        so it drops these shards; the rejoin that follows restores whatever it is given
        from the state topic."""
        assert self.consumer is not None
        try:
            await self.consumer.commit(self._covered(partitions))
        except GROUP_ERRORS as exc:
            log.warning(
                "partitions %s were given to another member while this worker was away "
                "(%s); dropping their state here, the new owner resumes from their last "
                "checkpoint",
                partitions,
                _one_line(exc),
            )
            for p in partitions:
                self.shards.pop(p, None)
            return False
        return True

    def _covered(self, partitions: list[int]) -> dict[TopicPartition, int]:
        """The input offsets the shards' latest checkpoints cover, ready to commit."""
        return {
            TopicPartition(topic, p): offset
            for p in partitions
            for topic, offset in self.shards[p].covered.items()
        }

    async def _commit(self, partitions: list[int]) -> None:
        """Commit the offsets the shards' checkpoints cover. A refusal by a rebalancing
        group is not an error: the checkpoint holds the offsets (recovery seeks to them),
        and the commit is retried at the next checkpoint."""
        assert self.consumer is not None
        present = [p for p in partitions if p in self.shards]
        try:
            await self.consumer.commit(self._covered(present))
        except GROUP_ERRORS as exc:
            log.warning("offset commit refused, retried later: %s", _one_line(exc))
            return
        for p in present:
            self.shards[p].committed = dict(self.shards[p].covered)


def _letter(reason: str, message: str, record: ConsumerRecord) -> DeadLetter:
    return DeadLetter(
        reason,
        message,
        record.topic,
        record.partition,
        record.offset,
        record.value or b"",
        record.key,
        tuple(record.headers or ()),
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_worker(config: Config, kafka: KafkaSettings, settings: WorkerSettings) -> None:
    """Run a worker without the faust host until SIGTERM/SIGINT (embedding, tests)."""
    worker = Worker(config, kafka, settings)
    worker.install_signal_handlers()
    await worker.run()
