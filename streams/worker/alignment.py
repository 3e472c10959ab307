"""Stage 1's order of work: the records of one input partition to process now.

The predictions and outcomes topics are fetched independently; this module decides how
far each partition may go so that the engine sees about the order a live stream had.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_right
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from driftline.streams.worker.settings import WorkerSettings
from driftline.streams.worker.shards import Shard

ALIGN_BEHIND_FACTOR = 10
"""A topic whose high watermark says it holds more is waited for this many times
``align_max_wait_s`` (20 s by default) before the other is processed alone: long enough
for a fetch on a loaded broker, short enough that a topic whose last offsets are never
returned (control records of transactional producers) does not stall the partition."""


def aligned(
    shard: Shard,
    topics: tuple[str, ...],
    highwater_of: Callable[[TopicPartition], int | None],
    settings: WorkerSettings,
) -> list[ConsumerRecord]:
    """The records of one partition to process now, in arrival order.

    The predictions and outcomes topics are fetched independently, and after a restart
    or in a backlog one can be read hours (of event time) ahead of the other. Records
    are taken up to the produce time both topics have reached (a topic with nothing
    new counts as caught up once its position reaches the high watermark), the rest
    wait for the next fetch, so the engine sees about the order a live stream would
    have had, as in replay. Each topic's records stay in log order; the two interleave
    by produce time, predictions first on ties.
    """
    if len(topics) == 1:  # one topic: its log order is the order
        taken = shard.pending.get(topics[0], [])
        shard.pending[topics[0]] = []
        return taken
    horizon = math.inf
    unanswered = False
    for topic in topics:
        buffered = shard.pending.get(topic)
        if buffered:
            horizon = min(horizon, buffered[-1].timestamp)
            continue
        highwater = highwater_of(TopicPartition(topic, shard.partition))
        if highwater is None or shard.offsets.get(topic, 0) < highwater:
            horizon = -math.inf  # this topic has more to give: wait for it
            unanswered = unanswered or highwater is None
    full = any(len(b) >= settings.align_max_records for b in shard.pending.values())
    if horizon == -math.inf and not full:
        # A topic known to hold more (behind its high watermark) is waited for longer
        # than one that never answered: a slow fetch under load must not let the other
        # topic run ahead (the model stage would see one side hours early).
        now = time.monotonic()
        if shard.waiting_since is None:
            shard.waiting_since = now
        limit = settings.align_max_wait_s * (1 if unanswered else ALIGN_BEHIND_FACTOR)
        if now - shard.waiting_since < limit:
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


def _produce_time(record: ConsumerRecord) -> int:
    return int(record.timestamp)
