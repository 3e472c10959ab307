"""``driftline worker``: the long-running stream worker.

Which part sits where, and why (figures in ../shared/TANSU.md and benchmarks/):

* A faust App (streams/app.py) hosts this worker as a service: process lifecycle and
  signals. The low-volume references topic is read by every worker without a consumer
  group (`streams.worker.references`): a broadcast, not a work queue.
* The hot path (predictions, outcomes) runs on aiokafka batches (``getmany``): decoding,
  validation and detector updates are done a batch at a time. A faust agent pays about
  160 us of plumbing per message, which caps it near 6k msg/s, an order of magnitude
  below what the detectors sustain.
* Two stages, like a Kafka Streams topology with a repartition topic. Input shards, one
  per input partition (predictions and outcomes are co-partitioned by ``request_id``),
  decode, dedupe and join, and send each model's items to the summaries topic keyed by
  model. Model shards, one per summaries partition, merge a model's items from every
  input partition behind their watermarks (`detectors.intake.merge`) and run its detectors
  once. A rebalance moves whole shards of either kind, and each shard's checkpoint
  records the offsets it covers, so recovery seeks to them and never trusts
  ``end_offsets()``.
* Checkpoints follow a fixed order: flush outputs, write state, commit offsets. The state
  is taken in the loop; the rest of the periodic checkpoint runs in a task while the loop
  reads on (`Worker._checkpoint_soon`). A crash
  re-reads at most one checkpoint interval of input; the decisions it re-emits carry the
  same ``decision_id`` (ids are per episode), and published ids are remembered in the
  state so a restarted shard does not publish them again.
* Offsets follow processing, never decoding: a shard's offsets move past a record only
  once its effects (state updates, decisions, dead letters) are made and queued, and a
  checkpoint is written only after the broker acknowledged those outputs. A worker that
  fails (a publish refused, a bug, a cancellation mid-batch) writes no checkpoint at all:
  its in-memory state may hold half a batch, so the next worker resumes from the last
  checkpoint (at-least-once; duplicates dropped by event id, decision ids unchanged).
* Event time is bounded at the edge (`detectors.intake.clock.EventClock`, per partition): an
  event dated far ahead of its partition's recent traffic is dead-lettered as
  ``future_timestamp`` instead of moving every watermark.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import signal
import time
import uuid
from collections import Counter as CounterDict
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from driftline.detectors.decision import Decision
from driftline.detectors.drift.reference import ReferenceProfile, fingerprint
from driftline.detectors.engine import ModelEngine, numbered
from driftline.detectors.intake.blocks import BLOCK_BYTES
from driftline.detectors.intake.join import JOIN_COUNTERS
from driftline.detectors.intake.stage import LABELS, Intake, Routed
from driftline.detectors.intake.wire import decode_items, encode_items
from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.decode import DEFAULT_MAX_MESSAGE_BYTES, FUTURE_TIMESTAMP, decode
from driftline.schemas.exceptions import ConfigError, DecodeError
from driftline.schemas.formats import SourceRecord
from driftline.schemas.records import Event
from driftline.streams.checkpointing.store import (
    Checkpoint,
    encode_checkpoint,
    read_checkpoints,
    write_checkpoint,
)
from driftline.streams.checkpointing.trim import StateTrimmer
from driftline.streams.config import Config
from driftline.streams.faults import Backoff, ConnectionLog
from driftline.streams.formats.cloudevents import decision_headers, source_of
from driftline.streams.formats.ingest import ForeignIntake, letter, original
from driftline.streams.kafka import KafkaSettings
from driftline.streams.metrics import DRIFT_SCORE_MODELS, Metrics
from driftline.streams.views.live import LiveView, model_scores, observe, version_scores
from driftline.streams.worker.alignment import aligned
from driftline.streams.worker.publishing import Publisher, send_dead_letters
from driftline.streams.worker.references import ReferenceReader
from driftline.streams.worker.rekey import Rekeyer, input_topics
from driftline.streams.worker.settings import WorkerSettings
from driftline.streams.worker.shards import ModelShard, Shard

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

MIN_CHECKPOINT_SPACING_S = 0.1
"""Shortest time between two periodic checkpoint turns, whatever the shard count: each
turn commits (and probes membership with a commit), so a worker of many shards would
otherwise send tens of commits a second. Shards that fall behind for it are taken
together at their turn (`Worker._due`)."""

RECORD_OVERHEAD_BYTES = 512
"""Room left below ``max_request_size`` for a dead letter's record framing (batch and
record headers, the key): aiokafka counts them against the limit too."""


LOCAL_ITEMS = 500_000
"""Items kept in memory between a partition's input stage and the model stage of the same
process (a few seconds of traffic at full speed); beyond this the oldest are decoded from
the summaries topic instead."""

ACQUIRE_RETRY_S = 0.5
MAX_ACQUIRE_RETRY_S = 8.0
"""First and longest pause between attempts to read the state of assigned partitions."""

SUMMARY_FORMAT = 3
"""Version of the summaries topic's messages (see `Worker._forward`). 3: items as columns
(`detectors.intake.wire`); 2 and 1 (still read): a row per item, feature names once per
message (``fk``) or in every item."""

SPLIT_SLACK = 1.2
"""A batch is cut into pieces expected to fill at most 1/1.2 of a message: batches vary in
bytes per item (labels against predictions); a piece that still does not fit is cut again
by its own bytes per item, at the cost of encoding it twice."""

SUMMARY_HEADROOM_BYTES = 4_096
"""Input messages are accepted up to ``max_request_size`` less this, so that every
event, forwarded as a summaries item (its fields without their names), fits in one
message to the model stage."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.worker.rebalancing():
            await self.worker.release(self.worker.names(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        summaries = self.worker.topics.summaries
        async with self.worker.rebalancing():
            await self.worker.acquire(
                sorted({tp.partition for tp in assigned if tp.topic != summaries}),
                sorted({tp.partition for tp in assigned if tp.topic == summaries}),
            )


class _Snapshot(NamedTuple):
    """A checkpoint as taken (see `Worker._snapshot`), to be written."""

    due: list[str]
    """Shards whose offsets are to be committed (written now, or written before and not
    committed yet)."""
    states: list[tuple[str, Shard | ModelShard, Checkpoint, bytes]]
    """Each dirty shard: its name, the shard, its checkpoint and that as JSON."""
    outputs: list[Any]
    """The outputs queued when it was taken (`Publisher.take`)."""
    started: float


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
        """Stage 1, by input partition."""
        self.model_shards: dict[int, ModelShard] = {}
        """Stage 2, by summaries partition."""
        self.partitions = 0
        self.stopping = asyncio.Event()
        self.in_batch = asyncio.Lock()
        """Held by the loop while it handles a batch, and by the rebalance callbacks.
        aiokafka runs those in its coordinator's task, possibly while the loop waits on a
        send halfway through a batch; a checkpoint taken then holds the input stage's
        memory of records its offsets do not cover, and whoever restores it drops them as
        duplicates. The Java consumer calls its listener inside ``poll``, between
        batches; this lock gives the same."""
        self.rebalances = 0
        """Rebalance callbacks started so far (see `rebalancing`)."""
        self.rebalances_under_way = 0
        """Rebalance callbacks waiting for the lock or running."""
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.last_checkpoint = time.monotonic()
        self.last_metrics = 0.0
        self._join_seen: dict[int, dict[str, int]] = {}
        self._duplicates_seen = 0
        self._untested_seen = 0
        self._announce: list[ReferenceProfile] = []
        """References to hand to the input stages (`_hand_references`)."""
        self._handed: dict[str, str] = {}
        """Fingerprint of the reference last published per ``model_id@version``."""
        self._evictions_seen: dict[str, int] = {}
        self._merge_seen: dict[str, int] = {}
        self.token = uuid.uuid4().hex
        """Names this process's summaries messages (see `_forward`)."""
        self.local: OrderedDict[tuple[str, str], tuple[list[Routed], int]] = OrderedDict()
        """Items this process sent to the summaries topic, until its model stage reads them
        back (see `_local_items`), oldest first, with what they count for against
        `LOCAL_ITEMS`."""
        self.local_items = 0
        self.item_bytes = 0.0
        """Bytes per item of the last summaries message (how many messages a batch needs)."""
        self.publisher: Publisher | None = None
        self.failure: BaseException | None = None
        """Why the worker stopped processing, if it failed: no checkpoint is written after."""
        self.metrics_server: Any = None
        self.live = LiveView()
        """What the live view shows (fed whether or not it is served: it is small)."""
        self.connection_log = ConnectionLog(
            self.metrics.broker_errors.inc, self.metrics.broker_outages.inc
        )
        self.inputs: tuple[str, ...] = (
            (self.topics.rekeyed,)
            if config.input.foreign
            else (self.topics.predictions, self.topics.outcomes)
        )
        """Stage 1's input topics: predictions and outcomes, or the re-keyed topic that a
        foreign format's records reach through the re-key stage (`streams.worker.rekey`)."""
        self.rekeyer: Rekeyer | None = None
        self.rekey_task: asyncio.Task[None] | None = None
        self.writing: asyncio.Task[None] | None = None
        """The periodic checkpoint writing in the background, if one is."""
        self.trimmer = StateTrimmer(kafka, self.topics.state, self.metrics)
        self.trim_task: asyncio.Task[None] | None = None
        self.references = ReferenceReader(
            kafka, self.topics.references, self.add_reference, self.metrics
        )
        """Profiles published on the references topic, read by every worker."""
        self.references_task: asyncio.Task[None] | None = None
        self._pairs_seen: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop` is called (or SIGTERM/SIGINT when installed)."""
        try:
            await self._start()
        except BaseException:
            await self._close()  # what had started (a missing topic, say)
            raise
        try:
            if self.rekeyer is not None:
                self.rekey_task = asyncio.create_task(
                    self.rekeyer.run(
                        self.stopping,
                        self.settings.fetch_timeout_ms,
                        self.settings.max_batch_records,
                    )
                )
            if self.settings.state_trim_interval_s > 0:
                self.trim_task = asyncio.create_task(
                    self.trimmer.run(self.stopping, self.settings.state_trim_interval_s)
                )
            self.references_task = asyncio.create_task(self.references.follow(self.stopping))
            while not self.stopping.is_set() and self.failure is None:
                if self.rekey_task is not None and self.rekey_task.done():
                    self.rekey_task.result()  # its failure is the worker's
                    raise ConfigError("the re-key stage stopped unexpectedly")
                if self.references_task.done():
                    self.references_task.result()  # its failure is the worker's
                    raise ConfigError("the references reader stopped unexpectedly")
                assert self.consumer is not None
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.fetch_timeout_ms,
                    max_records=self.settings.max_batch_records,
                )
                started, under_way = self.rebalances, self.rebalances_under_way
                async with self.in_batch:
                    # A rebalance under way when these came, or begun before the lock was
                    # ours, revokes their partitions or seeks them to their checkpoints
                    # after they were fetched: they are read again. (One that ended
                    # before they came sought first: aiokafka returns what it fetched
                    # after.)
                    stale = under_way or self.rebalances != started
                    await self._process({} if stale else batch)
                self.connection_log.tick(bool(batch))
                now = time.monotonic()
                if now - self.last_checkpoint >= self._checkpoint_spacing():
                    self._checkpoint_soon()
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

    @asynccontextmanager
    async def rebalancing(self) -> AsyncIterator[None]:
        """What a rebalance callback runs in: between batches (`in_batch`), and counted
        from before it waits for the lock, so that the loop knows a batch it fetched
        meanwhile predates the callback's seeks."""
        self.rebalances += 1
        self.rebalances_under_way += 1
        try:
            async with self.in_batch:
                yield
        finally:
            self.rebalances_under_way -= 1

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
        # Every profile published so far, before the first record is handled.
        await self.references.start(
            self.consumer.partitions_for_topic(self.topics.references) or set()
        )
        if self.settings.ui_port is not None:
            await self.live.start(self.settings.ui_port)
            log.info("live view on http://127.0.0.1:%d/", self.settings.ui_port)
        if self.settings.metrics_port is not None:
            self.metrics_server = self.metrics.serve(self.settings.metrics_port)
        self.consumer.subscribe([*self.inputs, self.topics.summaries], listener=_Listener(self))
        if self.config.input.foreign:
            self.rekeyer = Rekeyer(
                self.config.input,
                self.topics,
                self.kafka,
                self.settings.group_id,
                # Its own publisher: its commits wait for its own outputs only.
                Publisher(
                    self.producer, self.settings.publish_timeout_s, self.metrics.publish_retries.inc
                ),
                self.metrics,
                {
                    "session_timeout_ms": self.settings.session_timeout_ms,
                    "heartbeat_interval_ms": self.settings.heartbeat_interval_ms,
                    "max_partition_fetch_bytes": 4 * 1024 * 1024,
                },
                self.max_event_bytes,
                self.kafka.max_request_size - RECORD_OVERHEAD_BYTES,
            )
            await self.rekeyer.start()

    async def _check_topics(self) -> int:
        assert self.consumer is not None
        counts = {}
        needed = [*self.inputs, self.topics.summaries, self.topics.state, self.topics.references]
        if self.config.input.foreign:
            needed.append(self.topics.outcomes)
            if self.config.input.format != "seldon":  # Seldon's topics are found by pattern
                needed += input_topics(self.config.input, self.topics)
        for topic in needed:
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
        if self.config.input.foreign:
            return counts[self.topics.rekeyed]
        if counts[self.topics.predictions] != counts[self.topics.outcomes]:
            raise ConfigError(
                f"{self.topics.predictions!r} has {counts[self.topics.predictions]} partitions "
                f"but {self.topics.outcomes!r} has {counts[self.topics.outcomes]}: the join "
                "needs them co-partitioned (same count, both keyed by request_id)"
            )
        return counts[self.topics.predictions]

    async def _shutdown(self) -> None:
        self.stopping.set()
        await self._settle()
        if self.rekey_task is not None:
            # Its last commit covers only what it re-keyed and confirmed; a failure is
            # already the worker's (raised from `run`).
            await asyncio.gather(self.rekey_task, return_exceptions=True)
        if self.rekeyer is not None:
            await self.rekeyer.stop()
        if self.trim_task is not None:
            await asyncio.gather(self.trim_task, return_exceptions=True)
        if self.references_task is not None:  # it only reads: stopped where it waits
            self.references_task.cancel()
            await asyncio.gather(self.references_task, return_exceptions=True)
        if self.consumer is not None and self.by_name() and self.failure is None:
            async with self.in_batch:  # not beside a rebalance's own checkpoint
                await self.checkpoint(set(self.by_name()))
        elif self.failure is not None:
            log.error(
                "worker stopped without a final checkpoint (%s); the next start resumes "
                "from the last checkpoint",
                _one_line(self.failure),
            )
        await self._close()

    async def _close(self) -> None:
        """Stop the clients and servers the worker started."""
        await self.references.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.live.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        self.connection_log.remove()

    # -- shards ------------------------------------------------------------------------

    def add_reference(self, key: str, profile: ReferenceProfile) -> None:
        """Use ``profile`` for versions of its model first seen from now on (versions already
        monitored keep the reference they started with). A version's own profile (keyed
        ``model_id@version``) also reaches the input stages for that version's slices:
        it is what model stages hand over (`_hand_references`); one the version's monitor
        does not test against is handed back by it."""
        self.config = replace(self.config, references={**self.config.references, key: profile})
        for shard in self.model_shards.values():
            shard.engine.profiles[key] = profile
        for input_shard in self.shards.values():
            input_shard.intake.slicer.profiles = self.config.references
            if "@" in key:  # a version's own: possibly what its model stage tests against
                input_shard.intake.slicer.learn(profile)

    async def _hand_references(self) -> None:
        """References the model stage hands over (warm-up references built or restored,
        a version's own when slices came summed against another) reach every input stage,
        so that they sum the versions' slices against them: this worker's at once, the
        others' through the references topic (what ``driftline reference publish`` sends
        to; a worker takes a version's own profile from there for the version's slices,
        `add_reference`), each published once per process."""
        if not self._announce:
            return
        assert self.publisher is not None
        found, self._announce = self._announce, []
        for profile in found:
            for shard in self.shards.values():
                shard.intake.slicer.learn(profile)
            key = f"{profile.model_id}@{profile.model_version}"
            digest = fingerprint(profile)
            # A model stage hands a reference again at every batch that brings slices
            # summed against another, until the other workers' input stages switch.
            if self._handed.get(key) == digest:
                continue
            self._handed[key] = digest
            await self.publisher.send(
                self.topics.references, orjson.dumps(profile.to_dict()), key.encode()
            )

    def by_name(self) -> dict[str, Shard | ModelShard]:
        """Every shard of both stages by its checkpoint name (``3``, ``m0``)."""
        named: dict[str, Shard | ModelShard] = {s.name: s for s in self.shards.values()}
        named.update((s.name, s) for s in self.model_shards.values())
        return named

    def names(self, tps: list[TopicPartition]) -> set[str]:
        """Checkpoint names of the shards these topic partitions belong to."""
        return {self._name(tp) for tp in tps}

    def _name(self, tp: TopicPartition) -> str:
        """Checkpoint name of the shard a topic partition belongs to (``3``, ``m0``)."""
        return f"m{tp.partition}" if tp.topic == self.topics.summaries else str(tp.partition)

    def _intake(self) -> Intake:
        c = self.config
        # A block of labels fits a summaries message beside other items, whatever
        # max_request_size is.
        block_bytes = min(BLOCK_BYTES, self.kafka.max_request_size // 4)
        return Intake(c.detectors, c.model_detectors, c.references, block_bytes)

    def _shard(self, partition: int) -> Shard:
        foreign = None
        if self.config.input.foreign:
            foreign = ForeignIntake(self.config.input, self.topics.outcomes, self.max_event_bytes)
        return Shard(partition, self._intake(), foreign)

    def _model_engine(self) -> ModelEngine:
        """The model stage sees all of a model's traffic: its settings are not split."""
        c = self.config
        return ModelEngine(c.detectors, c.references, c.model_detectors)

    async def acquire(self, partitions: list[int], summaries: list[int] | None = None) -> None:
        """Restore the shards of newly assigned partitions and seek to their offsets.

        The partitions stay paused while their state is read, and every seek happens
        together with the shard's registration (no await in between): a batch returned
        meanwhile can neither be processed without its shard nor move a position past
        records that were never processed.

        Reads that fail for a reason that can pass (a worker whose route to the broker
        just came back) are retried for up to ``publish_timeout_s``; then, or on any
        other error, the worker fails. aiokafka only logs what a rebalance callback
        raises: a worker that went on would own partitions it never reads.
        """
        assert self.consumer is not None
        summaries = summaries or []
        inputs = self.inputs
        tps = [TopicPartition(topic, p) for p in partitions for topic in inputs]
        tps += [TopicPartition(self.topics.summaries, q) for q in summaries]
        self.consumer.pause(*tps)
        try:
            checkpoints, positions = await self._read_positions(tps)
        except BaseException as exc:
            log.error("cannot restore partitions %s: %s", partitions, _one_line(exc))
            self.failure = exc
            self.stopping.set()
            raise
        shards = {}
        for p in partitions:
            shard = self._shard(p)
            checkpoint = checkpoints.get(str(p))
            if checkpoint is not None:
                shard.restore(checkpoint)
            for topic in inputs:
                if topic not in shard.offsets:
                    shard.offsets[topic] = positions[TopicPartition(topic, p)]
            shards[p] = shard
            log.info("partition %d: %s", p, "restored" if checkpoint else "new shard")
        for p, shard in shards.items():
            for topic in inputs:
                self.consumer.seek(TopicPartition(topic, p), shard.offsets[topic])
            shard.covered = dict(shard.offsets)
            self.shards[p] = shard
        for q in summaries:
            model_shard = ModelShard(
                q, self.topics.summaries, self._model_engine(), self.settings.published_memory
            )
            checkpoint = checkpoints.get(model_shard.name)
            if checkpoint is not None:
                model_shard.restore(checkpoint)
                self._announce += model_shard.engine.warmup_references()
            tp = TopicPartition(self.topics.summaries, q)
            if tp.topic not in model_shard.offsets:
                model_shard.offsets[tp.topic] = positions[tp]
            log.info("summaries partition %d: %s", q, "restored" if checkpoint else "new shard")
            self.consumer.seek(tp, model_shard.offsets[tp.topic])
            model_shard.covered = dict(model_shard.offsets)
            self.model_shards[q] = model_shard
        self.consumer.resume(*tps)

    async def _read_positions(
        self, tps: list[TopicPartition]
    ) -> tuple[dict[str, Checkpoint], dict[TopicPartition, int]]:
        """The group's latest checkpoints, and where each partition without one starts
        (the committed offset, else the log's beginning); retried with backoff
        while the broker cannot answer, for up to ``publish_timeout_s``."""
        assert self.consumer is not None
        backoff = Backoff(self.settings.publish_timeout_s, ACQUIRE_RETRY_S, MAX_ACQUIRE_RETRY_S)
        while True:
            try:
                reader = AIOKafkaConsumer(**self.kafka.client_options(), enable_auto_commit=False)
                await reader.start()
                try:
                    checkpoints = await read_checkpoints(
                        reader, self.topics.state, self.settings.group_id
                    )
                finally:
                    await reader.stop()
                positions = {}
                for tp in tps:
                    checkpoint = checkpoints.get(self._name(tp))
                    if checkpoint is not None and tp.topic in checkpoint.offsets:
                        continue  # the checkpoint says where this partition resumes
                    committed = await self.consumer.committed(tp)
                    if committed is None:
                        committed = (await self.consumer.beginning_offsets([tp]))[tp]
                    positions[tp] = committed
                return checkpoints, positions
            except (KafkaError, OSError) as exc:
                if backoff.expired:
                    raise
                pause = backoff.next_pause()
                log.warning(
                    "reading the state of partitions being assigned failed, retrying in %.1f s: %s",
                    pause,
                    _one_line(exc),
                )
                await asyncio.sleep(pause)

    async def release(self, names: set[str]) -> None:
        """Checkpoint and drop the shards of revoked partitions."""
        mine = names & set(self.by_name())
        if mine:
            await self.checkpoint(mine)
        for name in mine:
            self._drop(name)

    def _drop(self, name: str) -> None:
        if name.startswith("m"):
            self.model_shards.pop(int(name[1:]), None)
        else:
            self.shards.pop(int(name), None)

    # -- processing --------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        summaries = self.topics.summaries
        for tp, records in batch.items():
            if tp.topic == summaries:
                model_shard = self.model_shards.get(tp.partition)
                if model_shard is not None:
                    model_shard.pending.extend(records)
                    self.metrics.consumed.labels(tp.topic).inc(len(records))
                continue
            shard = self.shards.get(tp.partition)
            if shard is not None:
                # Records of a partition still being restored are skipped here and read
                # again after its seek; they are counted when they are handled.
                shard.pending.setdefault(tp.topic, []).extend(records)
                self.metrics.consumed.labels(tp.topic).inc(len(records))
        now_ms = int(time.time() * 1000)
        assert self.consumer is not None
        for shard in list(self.shards.values()):
            if not any(shard.pending.values()):
                continue
            merged = aligned(shard, self.inputs, self.consumer.highwater, self.settings)
            if merged:
                await self._handle(shard, merged, now_ms)
        for p, shard in list(self.shards.items()):
            if shard.idle_sent:
                continue
            if not self._caught_up(p, shard):
                shard.caught_up_since = None
                continue
            now = time.monotonic()
            if shard.caught_up_since is None:
                shard.caught_up_since = now
            if now - shard.caught_up_since >= self.settings.idle_after_ms / 1000:
                await self._send_idle(shard)
        for model_shard in list(self.model_shards.values()):
            if model_shard.pending:
                records, model_shard.pending = model_shard.pending, []
                await self._merge(model_shard, records, now_ms)
        if batch:
            self._observe_latency(batch)

    async def _handle(self, shard: Shard, records: list[ConsumerRecord], now_ms: int) -> None:
        """Decode, admit, detect and publish; only then do the shard's offsets cover
        ``records``. An exception anywhere leaves the offsets where they were (and the
        worker failed: see `run`)."""
        assert self.publisher is not None
        events, sources, letters, expired, traces = self._decode(shard, records)
        if events:
            admitted = shard.clock.admit(
                [e.model_id for e in events],
                np.fromiter((e.ts for e in events), np.int64, len(events)),
                np.fromiter((r.timestamp for r in sources), np.int64, len(sources)),
            )
            if not admitted.all():
                for i in np.flatnonzero(~admitted).tolist():
                    letters.append(self._future_letter(shard, events[i], sources[i]))
                kept = admitted.tolist()
                events = [e for e, ok in zip(events, kept, strict=True) if ok]
                traces = [t for t, ok in zip(traces, kept, strict=True) if ok]
        for model_id, items in shard.intake.process(events, traces).items():
            await self._forward(shard, model_id, items)
        shard.idle_sent = False
        shard.caught_up_since = None
        await self._dead_letter(letters + expired, now_ms)
        # Every effect of these records is made and queued: the offsets may move past them.
        processed: CounterDict[str] = CounterDict()
        for record in records:
            processed[record.topic] += 1
            offset = record.offset + 1
            if offset > shard.offsets.get(record.topic, 0):
                shard.offsets[record.topic] = offset
        for dead in letters:
            shard.dead_letters[dead.reason] += 1
            # A foreign record's letter names its original topic; it was read here from
            # the re-keyed one.
            processed[dead.topic if dead.topic in processed else self.inputs[0]] -= 1
            self.metrics.dead_lettered.labels(dead.topic, dead.reason).inc()
        for dead in expired:  # read (and counted as processed) in an earlier batch
            shard.dead_letters[dead.reason] += 1
            self.metrics.dead_lettered.labels(dead.topic, dead.reason).inc()
        shard.consumed += len(records)
        for topic, n in processed.items():
            self.metrics.processed.labels(topic).inc(n)
        shard.dirty = True

    async def _dead_letter(self, letters: list[DeadLetter], now_ms: int) -> None:
        assert self.publisher is not None
        budget = self.kafka.max_request_size - RECORD_OVERHEAD_BYTES
        await send_dead_letters(self.publisher, self.topics.deadletter, letters, budget, now_ms)

    def _caught_up(self, p: int, shard: Shard) -> bool:
        """Whether the partition has processed everything its topics hold (as far as the
        fetches so far tell)."""
        assert self.consumer is not None
        if any(shard.pending.values()):
            return False
        if self.rekeyer is not None and not self.rekeyer.caught_up():
            return False
        for topic in self.inputs:
            highwater = self.consumer.highwater(TopicPartition(topic, p))
            if highwater is None or shard.offsets.get(topic, 0) < highwater:
                return False
        return True

    async def _send_idle(self, shard: Shard) -> None:
        """Tell every model-stage partition that this input partition has read all there
        is for now (a Flink-style idle marker), so the merges stop waiting for it: the
        tail of a stream that pauses is decided on without waiting for more traffic. The
        slices it was summing are sent first."""
        assert self.publisher is not None and self.consumer is not None
        # Slices the partition was summing go first: the merges need not wait for them.
        for model_id, items in shard.intake.flush_slices().items():
            await self._forward(shard, model_id, items)
            shard.dirty = True
        parts = self.consumer.partitions_for_topic(self.topics.summaries) or set()
        value = orjson.dumps(
            {"v": SUMMARY_FORMAT, "p": shard.partition, "n": self.partitions, "idle": True}
        )
        for q in sorted(parts):
            await self.publisher.send(self.topics.summaries, value, None, partition=q)
        shard.idle_sent = True

    async def _forward(self, shard: Shard, model_id: str, items: list[Routed]) -> None:
        """Send one model's items to the model stage, keyed by model, in as few messages
        as fit (each says how far the partition's watermark of the model has reached)."""
        assert self.publisher is not None
        key = model_id.encode()
        budget = self.kafka.max_request_size - RECORD_OVERHEAD_BYTES - len(key)
        watermark = shard.intake.watermarks[model_id]
        # Cut into as many messages as the last message's bytes per item say are needed
        # (encoding a batch that turns out too large, then its halves, encoded a third of
        # the items twice on the benchmark's 4-partition stream).
        parts = self._pieces(items, 0, len(items), watermark, budget, 1)
        while parts:
            start, stop, mark = parts.pop(0)
            value = self._summary(shard, mark, items[start:stop])
            if stop > start:
                self.item_bytes = len(value) / (stop - start)
            if len(value) > budget and stop - start > 1:
                parts[:0] = self._pieces(items, start, stop, mark, budget, 2)
                continue
            part = items[start:stop]
            if not part:  # only the watermark moved (e.g. outcomes that joined nothing)
                await self.publisher.send(self.topics.summaries, value, key)
                self.metrics.summary_bytes.inc(len(value))
                continue
            # Named by this process's token and the part's exact range: a message another
            # process (or this worker before a crash) sent for the same seqs can differ in
            # its cut, and must be decoded, never answered from here.
            tag = f"{self.token}:{shard.partition}:{part[0].seq}:{part[-1].seq}:{len(part)}"
            # Only an input stage that slices sends blocks, which hold many labels.
            weight = _weight(part) if shard.intake.slicing else len(part)
            self.local[(model_id, tag)] = (part, weight)
            self.local_items += weight
            while self.local_items > LOCAL_ITEMS:
                self.local_items -= self.local.popitem(last=False)[1][1]
            headers = [("driftline-part", tag.encode())]
            await self.publisher.send(self.topics.summaries, value, key, headers=headers)
            self.metrics.summary_bytes.inc(len(value))

    def _pieces(
        self, items: list[Routed], start: int, stop: int, mark: int, budget: int, least: int
    ) -> list[tuple[int, int, int]]:
        """``items[start:stop]`` as (start, stop, watermark) pieces expected to fit in a
        message at the last bytes per item seen (at least ``least`` pieces when there are
        that many items). A piece's watermark is its last item's slot (nothing before it
        is still to come from this partition); the last piece's is ``mark``."""
        n = stop - start
        if n == 0:
            return [(start, stop, mark)]
        pieces = min(n, max(least, math.ceil(n * self.item_bytes * SPLIT_SLACK / budget)))
        size = math.ceil(n / pieces)
        cuts = [*range(start, stop, size), stop]
        found = [(a, b, items[b - 1].slot) for a, b in itertools.pairwise(cuts)]
        found[-1] = (found[-1][0], stop, mark)
        return found

    def _summary(self, shard: Shard, mark: int, items: Sequence[Routed]) -> bytes:
        """One summaries message: items (`detectors.intake.wire`) and how far the
        partition's watermark of the model has reached. The items come last: the model
        stage reads the head alone when it holds them already (`_message_head`)."""
        return orjson.dumps(
            {"v": SUMMARY_FORMAT, "p": shard.partition, "n": self.partitions,
             "w": mark, "i": encode_items(items)},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )  # fmt: skip

    def _local_items(
        self, record: ConsumerRecord, model_id: str, message: dict[str, Any]
    ) -> list[Routed]:
        """A message's items: the ones this process sent, when it still holds them (the
        message is the same bytes; decoding it again would cost a third of the worker's
        time), else decoded from the message."""
        tag = dict(record.headers or ()).get("driftline-part")
        if tag is not None:
            kept = self.local.pop((model_id, tag.decode()), None)
            if kept is not None:
                self.local_items -= kept[1]
                return kept[0]
        body = message if "i" in message else orjson.loads(record.value or b"")
        # fk: format 2's feature names beside the items (absent in formats 1 and 3).
        return decode_items(body["i"], model_id, body.get("fk"))

    async def _merge(self, shard: ModelShard, records: list[ConsumerRecord], now_ms: int) -> None:
        """Stage 2: merge the partitions' items per model, run the detectors on what the
        merge releases, publish decisions; only then do the offsets cover ``records``."""
        released: list[Routed] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                message = _message_head(record.value or b"")
                if message.get("idle"):
                    p = int(message["p"])
                    shard.idle.add(p)
                    for merge in shard.merges.values():
                        released += merge.mark_idle(p, now_ms)
                    continue
                model_id = (record.key or b"").decode()
                items = self._local_items(record, model_id, message)
                merge = shard.merge_for(model_id, int(message["n"]))
                shard.idle.discard(int(message["p"]))
                released += merge.add(int(message["p"]), int(message["w"]), items, now_ms)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
                letters.append(
                    letter("invalid_summary", f"unreadable summaries message: {exc}", record)
                )
        before = shard.engine.seq
        decisions = shard.engine.process(released) if released else []
        self._announce += shard.engine.take_hand_over()
        await self._hand_references()
        # Traces are looked up only for the (rare) batches that decided something.
        traces = _traces_by_position(released, before) if decisions else {}
        shard.forget()
        await self._dead_letter(letters, now_ms)
        await self._publish(shard, decisions, now_ms, traces)
        for record in records:
            if record.offset + 1 > shard.offsets.get(record.topic, 0):
                shard.offsets[record.topic] = record.offset + 1
        for dead in letters:
            shard.dead_letters[dead.reason] += 1
            self.metrics.dead_lettered.labels(dead.topic, dead.reason).inc()
        shard.consumed += len(records)
        self.metrics.processed.labels(shard.topic).inc(len(records) - len(letters))
        shard.dirty = True

    def _decode(
        self, shard: Shard, records: list[ConsumerRecord]
    ) -> tuple[
        list[Event],
        list[ConsumerRecord] | list[SourceRecord],
        list[DeadLetter],
        list[DeadLetter],
        list[str | None],
    ]:
        """Events with the record each came from, dead letters for the rest, dead letters
        of records read before (responses that never met their request), and each
        event's trace context."""
        if shard.foreign is not None:
            read = shard.foreign.read(
                [
                    original(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.timestamp,
                        r.value,
                        r.key,
                        tuple(r.headers or ()),
                    )
                    for r in records
                ]
            )
            return read.events, read.sources, read.letters, read.expired, read.traces
        predictions = self.topics.predictions
        events: list[Event] = []
        sources: list[ConsumerRecord] = []
        letters: list[DeadLetter] = []
        max_bytes = self.max_event_bytes
        for record in records:
            expect = "prediction" if record.topic == predictions else "outcome"
            try:
                if record.value is None:
                    raise DecodeError("invalid_json", "message has no value (tombstone)")
                events.append(decode(record.value, expect, max_bytes=max_bytes))
                sources.append(record)
            except DecodeError as exc:
                letters.append(letter(exc.reason, exc.message, record))
        return events, sources, letters, [], [_traceparent(r) for r in sources]

    def _future_letter(
        self, shard: Shard, event: Event, record: ConsumerRecord | SourceRecord
    ) -> DeadLetter:
        skew = shard.clock.max_future_skew_ms
        recent = shard.clock.now(event.model_id)
        where = f"recent event time {recent}" if recent is not None else "produce time"
        message = (
            f"ts {event.ts} is more than max_future_skew_ms={skew} ahead of model "
            f"{event.model_id!r}'s {where} on partition {record.partition} (record "
            f"timestamp {record.timestamp}); fix the producer's clock or timestamp units "
            "and re-publish"
        )
        return letter(FUTURE_TIMESTAMP, message, record)

    @property
    def max_event_bytes(self) -> int:
        """Largest input message accepted (see `SUMMARY_HEADROOM_BYTES`)."""
        return min(DEFAULT_MAX_MESSAGE_BYTES, self.kafka.max_request_size - SUMMARY_HEADROOM_BYTES)

    async def _publish(
        self,
        shard: ModelShard,
        decisions: list[Decision],
        now_ms: int,
        traces: dict[int, str] | None = None,
    ) -> None:
        assert self.publisher is not None
        for d in decisions:
            if any(
                d.decision_id in s.published.current or d.decision_id in s.published.previous
                for s in self.model_shards.values()
            ):
                continue
            shard.published.add(d.decision_id)
            self.metrics.decisions.labels(d.type, d.kind).inc()
            self.live.add_decision(d.to_dict(now_ms))
            await self.publisher.send(
                self.topics.for_decision(d.type),
                orjson.dumps(d.to_dict(now_ms)),
                d.model_id.encode(),
                headers=decision_headers(
                    d, source_of(self.settings.group_id), (traces or {}).get(d.seq)
                ),
            )

    def _observe_latency(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        now_ms = time.time() * 1000
        for records in batch.values():
            step = max(1, len(records) // LATENCY_SAMPLES_PER_BATCH)
            for record in records[::step]:
                self.metrics.latency.observe(max(0.0, (now_ms - record.timestamp) / 1000))

    def _observe_live(
        self, engines: list[ModelEngine], scores: dict[tuple[str, str, str], float]
    ) -> None:
        """One sample of the live view."""
        assert self.consumer is not None
        observe(
            self.live,
            engines,
            scores,
            {
                "processed": sum(s.consumed for s in self.shards.values()),
                "lag": sum(
                    max(
                        0,
                        (self.consumer.highwater(TopicPartition(t, p)) or 0) - s.offsets.get(t, 0),
                    )
                    for p, s in self.shards.items()
                    for t in self.inputs
                ),
                "join_buffer": sum(s.intake.join.size for s in self.shards.values()),
                "joined": sum(s.intake.join.counts["joined"] for s in self.shards.values()),
                "expired_unlabelled": sum(
                    s.intake.join.counts["expired_unlabelled"] for s in self.shards.values()
                ),
            },
        )

    def _refresh_gauges(self) -> None:
        assert self.consumer is not None
        for p in self.shards:
            for topic in self.inputs:
                tp = TopicPartition(topic, p)
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    position = self.shards[p].offsets.get(topic, 0)
                    self.metrics.lag.labels(topic, str(p)).set(max(0, highwater - position))
        self.metrics.join_buffer.set(sum(s.intake.join.size for s in self.shards.values()))
        for p, shard in self.shards.items():
            seen = self._join_seen.setdefault(p, dict.fromkeys(JOIN_COUNTERS, 0))
            for status, value in shard.intake.join.counts.items():
                if value > seen[status]:
                    self.metrics.outcomes.labels(status).inc(value - seen[status])
                    seen[status] = value
        engines = [s.engine for s in self.model_shards.values()]
        self.metrics.labels_held.set(sum(engine.labels_held for engine in engines))
        by_version = version_scores(engines)
        scores = model_scores(by_version)
        if self.settings.ui_port is not None:  # nobody looks otherwise
            self._observe_live(engines, by_version)
        models = sorted({m for m, _ in scores})[:DRIFT_SCORE_MODELS]
        for (model_id, kind), score in scores.items():
            if model_id in models:
                self.metrics.drift_score.labels(model_id, kind).set(score)
        for shard in self.shards.values():
            if shard.foreign is not None:
                for status, value in shard.foreign.pairing.counts.items():
                    seen_key = f"{shard.partition}:{status}"
                    before = self._pairs_seen.get(seen_key, 0)
                    if value > before:
                        self.metrics.pairs.labels(status).inc(value - before)
                    self._pairs_seen[seen_key] = value
        duplicates = sum(s.intake.counts["duplicates"] for s in self.shards.values())
        if duplicates > self._duplicates_seen:
            self.metrics.duplicates.inc(duplicates - self._duplicates_seen)
        self._duplicates_seen = duplicates
        untested = sum(s.engine.counts["untested_slice_events"] for s in self.model_shards.values())
        if untested > self._untested_seen:
            self.metrics.untested_slice_events.inc(untested - self._untested_seen)
        self._untested_seen = untested
        evicted = {
            "model": sum(s.engine.counts["evicted_models"] for s in self.model_shards.values()),
            "version": sum(s.engine.counts["evicted_versions"] for s in self.model_shards.values()),
            "clock": sum(s.clock.evicted for s in self.shards.values()),
        }
        merged = {"merged": 0, "late": 0, "duplicate": 0}
        for model_shard in self.model_shards.values():
            for merge in model_shard.merges.values():
                merged["merged"] += merge.counts["items"] - merge.counts["late_items"]
                merged["late"] += merge.counts["late_items"]
                merged["duplicate"] += merge.counts["duplicate_items"]
        for status, total in merged.items():
            before = self._merge_seen.get(status, 0)
            if total > before:
                self.metrics.merge_items.labels(status).inc(total - before)
            self._merge_seen[status] = total
        for what, total in evicted.items():
            before = self._evictions_seen.get(what, 0)
            if total > before:
                self.metrics.evictions.labels(what).inc(total - before)
            self._evictions_seen[what] = total

    # -- checkpoints -------------------------------------------------------------------

    async def checkpoint(self, names: set[str]) -> None:
        """Confirm outputs, write the shards' state, commit their offsets (in that order),
        for the shards of both stages named (``3``: input partition 3, ``m0``: summaries
        partition 0), and return when that is done: at shutdown and when partitions are
        revoked. The periodic checkpoint writes in the background (`_checkpoint_soon`).

        Does nothing once the worker has failed; a failure here fails the worker (it is
        also called from rebalance callbacks, whose exceptions aiokafka only logs)."""
        await self._settle()
        if self.failure is not None:
            return
        try:
            snapshot = self._snapshot(names)
        except BaseException as exc:
            self.failure = exc
            self.stopping.set()
            raise
        await self._write(snapshot)
        if self.failure is not None:
            raise self.failure

    def _checkpoint_spacing(self) -> float:
        """Seconds between periodic checkpoint turns: the interval spread over the shards,
        one shard's state taken at a time (`_due`), at least `MIN_CHECKPOINT_SPACING_S`."""
        shards = len(self.shards) + len(self.model_shards)
        return max(self.settings.checkpoint_interval_s / max(shards, 1), MIN_CHECKPOINT_SPACING_S)

    def _checkpoint_soon(self) -> None:
        """The periodic checkpoint: the due shards' state is taken now, in the loop (it is
        what the offsets cover); confirming outputs, compressing, writing and committing go
        on in a task while the loop reads on. One at a time: while one is writing, the next
        waits for the next turn. Its failure is the worker's (raised by `run`)."""
        if self.writing is not None and not self.writing.done():
            return
        if self.failure is None:
            self.writing = asyncio.create_task(self._write(self._snapshot(self._due())))

    def _due(self) -> set[str]:
        """The shards the next periodic checkpoint takes: every changed shard whose state
        was last taken ``checkpoint_interval_s`` ago or more, else the changed one taken
        longest ago; and those written but not committed yet (nothing to take).

        Taking every shard's state at once held the loop for all of them (four input
        partitions' joins and duplicate memories: 0.25-0.7 s on the paced benchmark, the
        largest part of its p99 produce-to-processed latency). One at a time, each shard
        is still taken once an interval, and shards the writes fell behind on are taken
        together."""
        shards = self.by_name()
        changed = [name for name, shard in shards.items() if shard.dirty]
        late = time.monotonic() - self.settings.checkpoint_interval_s
        due = {name for name in changed if shards[name].taken_at <= late}
        if not due and changed:
            due = {min(changed, key=lambda name: shards[name].taken_at)}
        return due | {name for name, shard in shards.items() if shard.committed != shard.covered}

    async def _settle(self) -> None:
        """Wait for the checkpoint writing in the background, if any."""
        if self.writing is not None:
            await self.writing
            self.writing = None

    def _snapshot(self, names: set[str]) -> _Snapshot:
        """What a checkpoint writes, taken at once: each dirty shard's state as JSON with
        the offsets it covers, and the outputs queued so far (sent for the records those
        offsets cover)."""
        assert self.publisher is not None
        started = time.monotonic()
        self.last_checkpoint = started
        shards = self.by_name()
        due = [
            name
            for name in sorted(names)
            if (shard := shards.get(name)) is not None
            and (shard.dirty or shard.committed != shard.covered)
        ]
        states: list[tuple[str, Shard | ModelShard, Checkpoint, bytes]] = []
        for name in due:
            shard = shards[name]
            if not shard.dirty:
                continue
            shard.generation += 1
            shard.taken_at = started
            taken = Checkpoint(name, dict(shard.offsets), shard.state(), shard.generation)
            states.append((name, shard, taken, encode_checkpoint(taken)))
            shard.dirty = False
        return _Snapshot(due, states, self.publisher.take(), started)

    async def _write(self, snapshot: _Snapshot) -> None:
        """Write a `_snapshot`: confirm its outputs, probe membership, write each state,
        commit. A failure becomes the worker's (``failure``, and it stops) instead of being
        raised; only a cancellation is."""
        assert self.producer is not None and self.publisher is not None
        due, states = snapshot.due, snapshot.states
        try:
            # A failed delivery (a decision, a dead letter, the items stage 2 has not
            # seen yet) raises before any state is written.
            await self.publisher.confirm(snapshot.outputs)
            dirty = [name for name, *_ in states]
            if dirty and not await self._still_member(dirty):
                due = [name for name in due if name not in dirty]
                states = []
            shards = self.by_name()
            for name, shard, taken, encoded in states:
                if shards.get(name) is not shard:
                    continue  # dropped meanwhile (its partition was revoked)
                size = await write_checkpoint(
                    self.producer,
                    self.topics.state,
                    self.settings.group_id,
                    taken,
                    encoded,
                    self.token,
                )
                self.metrics.checkpoint_bytes.labels(name).set(size)
                shard.covered = taken.offsets
            if due:
                await self._commit(due)
        except BaseException as exc:  # the worker's failure: `run` raises it
            self.failure = self.failure or exc
            self.stopping.set()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        done = time.monotonic()
        self.metrics.checkpoint_seconds.observe(done - snapshot.started)
        self.metrics.checkpoint_time.set_to_current_time()

    async def _still_member(self, names: list[str]) -> bool:
        """Whether the group still counts this worker as the owner of these shards.

        Probed by committing the offsets their last checkpoints already cover (always
        safe). A worker that was away past its session (a network cut, a long pause) is
        refused: it must not write its now stale state over the new owner's checkpoints,
        so it drops these shards; the rejoin that follows restores whatever it is given
        from the state topic."""
        assert self.consumer is not None
        # Membership is the group's, not a partition's: shards never checkpointed yet
        # probe with the offsets any shard here covers. A worker that has checkpointed
        # nothing at all has nothing to probe with (aiokafka refuses an empty commit).
        covered = self._covered(names) or self._covered(list(self.by_name()))
        if not covered:
            return True
        try:
            await self.consumer.commit(covered)
        except GROUP_ERRORS as exc:
            log.warning(
                "shards %s were given to another member while this worker was away "
                "(%s); dropping their state here, the new owner resumes from their last "
                "checkpoint",
                names,
                _one_line(exc),
            )
            for name in names:
                self._drop(name)
            return False
        return True

    def _covered(self, names: list[str]) -> dict[TopicPartition, int]:
        """The offsets the shards' latest checkpoints cover, ready to commit."""
        shards = self.by_name()
        return {
            TopicPartition(topic, shards[name].partition): offset
            for name in names
            for topic, offset in shards[name].covered.items()
        }

    async def _commit(self, names: list[str]) -> None:
        """Commit the offsets the shards' checkpoints cover. A refusal by a rebalancing
        group is not an error: the checkpoint holds the offsets (recovery seeks to them),
        and the commit is retried at the next checkpoint."""
        assert self.consumer is not None
        shards = self.by_name()
        present = [name for name in names if name in shards]
        covered = self._covered(present)
        if not covered:  # the shards left in a rebalance, or cover no record yet
            return
        try:
            await self.consumer.commit(covered)
        except GROUP_ERRORS as exc:
            log.warning("offset commit refused, retried later: %s", _one_line(exc))
            return
        for name in present:
            shards[name].committed = dict(shards[name].covered)


TRACE_HEADERS = ("traceparent", "ce_traceparent")
"""Where a record carries its W3C trace context: the plain header, or the CloudEvents
distributed-tracing extension in binary mode (KServe's logger events)."""


def _traceparent(record: ConsumerRecord) -> str | None:
    """The record's ``traceparent``, if it has one."""
    if not record.headers:  # most records: no headers at all
        return None
    found = next((v for k, v in record.headers if k.lower() in TRACE_HEADERS), None)
    return found.decode("ascii", "replace") if found else None


def _traces_by_position(items: list[Routed], before: int) -> dict[int, str]:
    """Each released item's trace by the position the model engine will give it (its
    counter before the batch is ``before``; `detectors.engine.numbered`), so a decision,
    which names the position of the event that triggered it, finds that event's trace."""
    out: dict[int, str] = {}
    for seq, _, _, item in numbered(items, before):
        if item.trace is not None:
            out.setdefault(seq, item.trace)
    return out


def _weight(items: list[Routed]) -> int:
    """What a run of items counts for against `LOCAL_ITEMS`: one per event they hold in
    full (a block of labels holds many; a slice summary holds sums)."""
    return len(items) + sum(item.event.events - 1 for item in items if item.kind == LABELS)


def _message_head(value: bytes) -> dict[str, Any]:
    """A summaries message's fields before its items (``v``, ``p``, ``n``, ``w``, and
    ``idle`` for markers), without decoding the items: they come first in the encoding."""
    cut = value.find(b',"i":')
    head = orjson.loads(value) if cut < 0 else orjson.loads(value[:cut] + b"}")
    if not isinstance(head, dict):
        raise ValueError("a summaries message is a JSON object")
    return head


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_worker(config: Config, kafka: KafkaSettings, settings: WorkerSettings) -> None:
    """Run a worker without the faust host until SIGTERM/SIGINT (embedding, tests)."""
    worker = Worker(config, kafka, settings)
    worker.install_signal_handlers()
    await worker.run()
