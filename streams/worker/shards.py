"""The shards a worker owns: one per input partition (stage 1) and one per summaries
partition (stage 2), each with the offsets its state covers and how it is checkpointed."""

from __future__ import annotations

import logging
import time
from collections import Counter as CounterDict
from typing import Any

from aiokafka import ConsumerRecord

from driftline.detectors.engine import ModelEngine, split_legacy_state
from driftline.detectors.intake.clock import PartitionClock
from driftline.detectors.intake.merge import ModelMerge
from driftline.detectors.intake.recent import RecentIds
from driftline.detectors.intake.stage import Intake, item_from_wire, item_to_wire
from driftline.streams.checkpointing.store import Checkpoint
from driftline.streams.formats.ingest import ForeignIntake

log = logging.getLogger("driftline.worker")

CHECKPOINT_FORMAT = 2
"""Version of the checkpoint layout: 2 = two stages (input shards hold the intake, model
shards the detectors); 1 = one engine per input partition."""


class Shard:
    """Stage 1 of one input partition (dedupe, join, bounded event time), with the offsets
    and counts it covers. Its items go to the model stage through the summaries topic."""

    def __init__(
        self, partition: int, intake: Intake, foreign: ForeignIntake | None = None
    ) -> None:
        self.partition = partition
        self.name = str(partition)
        self.intake = intake
        self.foreign = foreign
        """Reads and pairs re-keyed records of a foreign input format (None: driftline's)."""
        self.clock = PartitionClock(intake.settings.max_future_skew_ms)
        self.offsets: dict[str, int] = {}
        self.consumed = 0
        self.dead_letters: CounterDict[str] = CounterDict()
        self.generation = 0
        self.dirty = False
        self.taken_at = time.monotonic()
        """When the shard's state was last taken for a checkpoint (at first: when the shard
        was made; see `Worker._due`)."""
        self.covered: dict[str, int] = {}
        """Offsets covered by the shard's latest checkpoint (restored or written)."""
        self.committed: dict[str, int] = {}
        """Offsets the group last accepted a commit of (empty: not known)."""
        self.pending: dict[str, list[ConsumerRecord]] = {}
        """Fetched records not processed yet, per topic, in log order (see
        `streams.worker.alignment`)."""
        self.idle_sent = False
        """Whether the model stage was told this partition has read everything there is."""
        self.caught_up_since: float | None = None
        """Since when (monotonic) the partition has had nothing new to process."""
        self.waiting_since: float | None = None

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "intake": self.intake.state(),
            "consumed": self.consumed,
            "dead_letters": dict(self.dead_letters),
            "clock": self.clock.state(),
            **({"pairing": self.foreign.state()} if self.foreign is not None else {}),
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        if "intake" in state:
            self.intake.restore(state["intake"])
        else:
            log.warning(
                "partition %d: checkpoint format 1 (one engine per partition): its join and "
                "duplicate memory are kept, its detector state is not (the model stage warms "
                "up again)",
                self.partition,
            )
            self.intake.restore(split_legacy_state(state["engine"])["intake"])
        self.consumed = state["consumed"]
        self.dead_letters = CounterDict(state["dead_letters"])
        if "clock" in state:  # checkpoints from before bounded event time have none
            self.clock.restore(state["clock"])
        if self.foreign is not None and "pairing" in state:
            self.foreign.restore(state["pairing"])
        self.offsets = dict(checkpoint.offsets)
        self.generation = checkpoint.generation


class ModelShard:
    """Stage 2 of one summaries partition: the merges and detectors of the models Kafka
    routes to it (the summaries topic is keyed by model), with the offset it covers."""

    def __init__(self, partition: int, topic: str, engine: ModelEngine, published: int) -> None:
        self.partition = partition
        self.name = f"m{partition}"
        self.topic = topic
        self.engine = engine
        self.merges: dict[str, ModelMerge] = {}
        self.offsets: dict[str, int] = {}
        self.consumed = 0
        self.dead_letters: CounterDict[str] = CounterDict()
        self.published = RecentIds(published)
        self.generation = 0
        self.dirty = False
        self.taken_at = time.monotonic()
        self.covered: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self.pending: list[ConsumerRecord] = []
        self.idle: set[int] = set()
        """Input partitions whose last word was an idle marker (new merges start with it)."""

    def merge_for(self, model_id: str, partitions: int) -> ModelMerge:
        merge = self.merges.get(model_id)
        if merge is None:
            s = self.engine.settings_for(model_id)
            merge = self.merges[model_id] = ModelMerge(
                partitions, s.merge_lateness_ms, s.merge_max_buffered, s.merge_idle_ms
            )
            for p in self.idle:
                merge.mark_idle(p)
        else:
            merge.widen(partitions)
        return merge

    def forget(self) -> None:
        """Merges of models the detectors forgot (bounded by ``max_models``), once empty."""
        if len(self.merges) > self.engine.settings.max_models:
            known = self.engine.recent_models
            for model_id in [m for m, g in self.merges.items() if m not in known]:
                if not self.merges[model_id].buffered:
                    del self.merges[model_id]

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "engine": self.engine.state(),
            "merges": {m: g.state(item_to_wire) for m, g in self.merges.items()},
            "consumed": self.consumed,
            "dead_letters": dict(self.dead_letters),
            "published": self.published.state(),
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        self.engine.restore(state["engine"])
        self.merges = {}
        for model_id, merge_state in state["merges"].items():
            merge = self.merge_for(model_id, len(merge_state["watermarks"]))
            merge.restore(merge_state, lambda row, m=model_id: item_from_wire(row, m))
        self.consumed = state["consumed"]
        self.dead_letters = CounterDict(state["dead_letters"])
        self.published.restore(state["published"])
        self.offsets = dict(checkpoint.offsets)
        self.generation = checkpoint.generation
