"""Stage 2's input: one model's items from every input partition, in event-time order.

Each input partition's intake (`detectors.intake.stage.Intake`) sends a model's items in the
order it made them, with its watermark of the model (the largest event time it has
admitted). Items are released to the model's detectors once every partition has
reported past them, merged by ``(slot, partition, seq)``: the order depends only on
what the partitions sent, not on when their batches happened to arrive, so a worker
reading N partitions and ``driftline replay --partitions N`` run the detectors on the
same sequence.

The trade-offs of waiting, each bounded by a setting:

* A partition that has not reported the model yet, or whose watermark lags the
  model's furthest one by more than ``merge_lateness_ms`` (it stopped producing, or it
  carries only a trickle of this model), stops holding the others back, once it has
  also been silent for ``merge_idle_ms`` of wall time (a worker catching up on a
  backlog reads its partitions unevenly; a partition still sending is never left
  behind). Replay, which has no wall time and reads its partitions side by side, uses
  the event-time rule alone, and adds every partition's items of a batch before it
  releases any (`detectors.pipeline.StagedPipeline.process`): released one partition at
  a time, a sparse model's batch (hours of event time) let the first partition run past
  the lateness and made the others' items late. Items that arrive behind what was
  released are *late*: they are released at once, counted, and never dropped.
* At most ``merge_max_buffered`` items wait per model; beyond that everything waiting is
  released (counted as a forced release), which bounds memory when a partition stalls.
* An item that repeats a ``seq`` its partition already sent (re-sent after a crash) is
  recognised and counted as a duplicate, never counted twice.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from driftline.detectors.intake.stage import Routed

_slot = attrgetter("slot")
_seq = attrgetter("seq")

MERGE_COUNTERS = ("items", "duplicate_items", "late_items", "forced_releases")

_NEVER = -(2**63)
"""Watermark of a partition that has not reported."""


class ModelMerge:
    """Items of one model from ``partitions`` input partitions, held until aligned."""

    def __init__(
        self, partitions: int, lateness_ms: int, max_buffered: int, idle_ms: int = 0
    ) -> None:
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        self.max_buffered = max_buffered
        self.idle_ms = idle_ms
        self.heard: list[int | None] = [None] * partitions
        """Wall time each partition last sent this model (not checkpointed: a restored
        merge waits ``idle_ms`` afresh)."""
        self.since: int | None = None
        """Wall time of the first message after start or restore."""
        self.idle = [False] * partitions
        """Partitions that said they have read everything there is (a Flink-style idle
        marker): they hold nothing back until they send this model again."""
        self.watermarks = [_NEVER] * partitions
        self.sent = [-1] * partitions
        """Per partition, the ``seq`` of the last item received from it."""
        self.waiting: list[list[Routed]] = [[] for _ in range(partitions)]
        self.first = _NEVER
        """The first watermark any partition reported (holds back the silent ones)."""
        self.released = _NEVER
        """Items with a slot below this have been released."""
        self.counts = dict.fromkeys(MERGE_COUNTERS, 0)

    def widen(self, partitions: int) -> None:
        """The input topics gained partitions."""
        extra = partitions - self.partitions
        if extra > 0:
            self.watermarks += [_NEVER] * extra
            self.sent += [-1] * extra
            self.waiting += [[] for _ in range(extra)]
            self.heard += [None] * extra
            self.idle += [False] * extra
            self.partitions = partitions

    def add(
        self,
        partition: int,
        watermark: int,
        items: Sequence[Routed],
        now_ms: int | None = None,
        release: bool = True,
    ) -> list[Routed]:
        """Take a partition's items (in the order it made them); return what is released,
        in merge order. ``now_ms`` is wall time (None in replay: event time alone).
        Without ``release``, only late items are returned; the rest wait for `release`
        (replay adds every partition's items of a batch before releasing any)."""
        self.idle[partition] = False
        if now_ms is not None:
            self.heard[partition] = now_ms
            if self.since is None:
                self.since = now_ms
        last = self.sent[partition]
        # A partition's items come in seq order, with non-decreasing slots: the fresh and
        # the late ones are a suffix and a prefix, found by bisection.
        fresh = (
            items[bisect_right(items, last, key=_seq) :]
            if items and items[0].seq <= last
            else items
        )
        counts = self.counts
        counts["duplicate_items"] += len(items) - len(fresh)
        counts["items"] += len(fresh)
        if fresh:
            self.sent[partition] = fresh[-1].seq
        self.watermarks[partition] = max(self.watermarks[partition], watermark)
        if self.first == _NEVER:
            self.first = watermark
        late: Sequence[Routed] = ()
        if fresh and fresh[0].slot < self.released:
            cut = bisect_left(fresh, self.released, key=_slot)
            late, fresh = fresh[:cut], fresh[cut:]
            counts["late_items"] += len(late)
        self.waiting[partition] += fresh
        released = self.release(now_ms) if release else []
        return [*late, *released] if late else released

    def release(self, now_ms: int | None = None) -> list[Routed]:
        """The items every partition that still counts has reported past, in merge order
        (and everything waiting beyond ``max_buffered``)."""
        released = self._release(self._horizon(now_ms))
        if self.buffered > self.max_buffered:
            self.counts["forced_releases"] += 1
            released += self._release(None)
        return released

    def mark_idle(self, partition: int, now_ms: int | None = None) -> list[Routed]:
        """A partition has read all its input for now: stop waiting for it."""
        if partition >= self.partitions:
            self.widen(partition + 1)
        self.idle[partition] = True
        return self._release(self._horizon(now_ms))

    def _horizon(self, now_ms: int | None) -> int | None:
        """The slot below which every partition that still counts has reported (None:
        none counts, everything waiting may go)."""
        furthest = max(self.watermarks)
        horizon = None
        for p, w in enumerate(self.watermarks):
            if self.idle[p]:
                continue
            behind = self.first if w == _NEVER else w
            if furthest - behind <= self.lateness_ms or not self._silent(p, now_ms):
                horizon = w if horizon is None else min(horizon, w)
        return horizon

    def _silent(self, partition: int, now_ms: int | None) -> bool:
        """Whether a partition has sent nothing of this model for ``idle_ms``."""
        if now_ms is None:
            return True
        heard = self.heard[partition]
        if heard is None:
            heard = self.since if self.since is not None else now_ms
        return now_ms - heard > self.idle_ms

    def _release(self, horizon: int | None) -> list[Routed]:
        """Release the items below ``horizon`` (None: everything waiting)."""
        if horizon is not None and horizon <= self.released:
            return []
        runs = []
        for p, waiting in enumerate(self.waiting):
            if not waiting:
                continue
            cut = len(waiting) if horizon is None else bisect_left(waiting, horizon, key=_slot)
            if cut:
                runs.append(waiting[:cut])
                self.waiting[p] = waiting[cut:]
        if horizon is None:
            horizon = max(self.watermarks) + 1
        self.released = max(self.released, horizon)
        if len(runs) == 1:
            return runs[0]
        # heapq.merge breaks ties by run, and runs are in partition order: the order is
        # (slot, partition, seq).
        return list(heapq.merge(*runs, key=_slot))

    def flush(self) -> list[Routed]:
        """Release everything waiting (the end of a recorded stream)."""
        return self._release(None)

    @property
    def buffered(self) -> int:
        return sum(len(w) for w in self.waiting)

    def state(self, encode: Any) -> dict[str, Any]:
        return {
            "watermarks": self.watermarks,
            "sent": self.sent,
            "waiting": [[encode(item) for item in w] for w in self.waiting],
            "first": self.first,
            "released": self.released,
            "counts": dict(self.counts),
        }

    def restore(self, state: dict[str, Any], decode: Any) -> None:
        self.partitions = len(state["watermarks"])
        self.heard = [None] * self.partitions
        self.since = None
        self.idle = [False] * self.partitions
        self.watermarks = list(state["watermarks"])
        self.sent = list(state["sent"])
        self.waiting = [[decode(item) for item in w] for w in state["waiting"]]
        self.first = state["first"]
        self.released = state["released"]
        self.counts = {**dict.fromkeys(MERGE_COUNTERS, 0), **state["counts"]}


__all__ = ["MERGE_COUNTERS", "ModelMerge"]
