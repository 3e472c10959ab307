"""The model stage's merge (`detectors.intake.merge`) and the items it merges
(`detectors.intake.stage`): order independent of arrival, re-sent items recognised, waiting
bounded, nothing dropped."""

from __future__ import annotations

import random

import orjson

from driftline.detectors.intake.merge import ModelMerge
from driftline.detectors.intake.stage import Intake, item_from_wire, item_to_wire
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.kafka import partition_for
from driftline.streams.simulation.traffic import StreamSpec, generate
from tests.detectors.test_engine import SMALL


def partition_items(events, partitions: int):
    """Each partition's messages for its models: (partition, model, watermark, items)."""
    intakes = [Intake(SMALL) for _ in range(partitions)]
    messages = []
    for i in range(0, len(events), 500):
        parts = [[] for _ in range(partitions)]
        for e in events[i : i + 500]:
            parts[partition_for(e.request_id.encode(), partitions)].append(e)
        for p, (intake, part) in enumerate(zip(intakes, parts, strict=True)):
            for model, items in intake.process(part).items():
                messages.append((p, model, intake.watermarks[model], items))
    return messages


def staged(events, pipeline: StagedPipeline, batch: int) -> list:
    """``pipeline``'s decisions on ``events`` routed to its partitions as the worker's
    records are, ``batch`` events at a time, then flushed."""
    n = len(pipeline.intakes)
    found = []
    for i in range(0, len(events), batch):
        parts = [[] for _ in range(n)]
        for e in events[i : i + batch]:
            parts[partition_for(e.request_id.encode(), n)].append(e)
        found += pipeline.process(parts)
    return found + pipeline.flush()


def merged(messages, partitions: int, order) -> list:
    merge = ModelMerge(partitions, lateness_ms=10**12, max_buffered=10**9)
    out = []
    for p, _, mark, items in order(messages):
        out += merge.add(p, mark, items)
    return out + merge.flush()


def per_partition_shuffle(seed):
    """Any arrival interleaving that keeps each partition's own order (what Kafka keeps)."""

    def order(messages):
        rng = random.Random(seed)
        queues = {}
        for m in messages:
            queues.setdefault(m[0], []).append(m)
        out = []
        while queues:
            p = rng.choice(sorted(queues))
            out.append(queues[p].pop(0))
            if not queues[p]:
                del queues[p]
        return out

    return order


def test_the_merged_order_does_not_depend_on_arrival() -> None:
    """Four partitions' messages arriving in five different interleavings give the same
    merged sequence of items, in non-decreasing slot order, with every item once."""
    events = generate(StreamSpec(n_predictions=6_000, change_at=6_000, seed=3))
    messages = partition_items(events, 4)
    runs = [
        [(i.slot, i.event.event_id) for i in merged(messages, 4, per_partition_shuffle(s))]
        for s in range(5)
    ]
    assert all(run == runs[0] for run in runs[1:])
    slots = [slot for slot, _ in runs[0]]
    assert slots == sorted(slots)
    assert len(runs[0]) == sum(len(m[3]) for m in messages)


def test_re_sent_items_are_recognised() -> None:
    """A partition re-sending its last messages (a crash before its checkpoint) adds
    nothing: the items are counted as duplicates."""
    events = generate(StreamSpec(n_predictions=3_000, change_at=3_000, seed=4))
    messages = partition_items(events, 2)
    merge = ModelMerge(2, lateness_ms=10**12, max_buffered=10**9)
    out = []
    for k, (p, _, mark, items) in enumerate(messages):
        out += merge.add(p, mark, items)
        if k % 3 == 2:
            out += merge.add(p, mark, items)  # the same message again
    out += merge.flush()
    assert len(out) == sum(len(m[3]) for m in messages)
    assert merge.counts["duplicate_items"] > 0
    assert len({(i.event.event_id, i.kind) for i in out}) == len(out)


def test_a_quiet_partition_stops_holding_the_others_back_and_its_items_are_late() -> None:
    """Partition 1 reports once and goes quiet: after merge_lateness_ms of event time on
    partition 0 (and, in a worker, merge_idle_ms of wall silence) partition 0's items
    flow; partition 1's items that come later are released at once and counted late."""
    events = generate(StreamSpec(n_predictions=4_000, change_at=4_000, seed=5))
    messages = [m for m in partition_items(events, 2)]
    first_one = next(m for m in messages if m[0] == 1)
    zeros = [m for m in messages if m[0] == 0]
    ones = [m for m in messages if m[0] == 1 and m is not first_one]
    merge = ModelMerge(2, lateness_ms=5_000, max_buffered=10**9, idle_ms=1_000)
    released = merge.add(*first_one[:1], first_one[2], first_one[3], now_ms=0)
    for p, _, mark, items in zeros:  # partition 1 has been silent for 2 s of wall time
        released += merge.add(p, mark, items, now_ms=2_000)
    assert len(released) > 0.8 * sum(len(m[3]) for m in zeros)
    late = []
    for p, _, mark, items in ones:
        late += merge.add(p, mark, items, now_ms=3_000)
    assert merge.counts["late_items"] > 0
    total = len(released) + len(late) + len(merge.flush())
    assert total == sum(len(m[3]) for m in messages)


def test_a_partition_still_sending_is_waited_for_however_far_behind() -> None:
    """In a worker (wall time given), a partition that lags in event time but keeps
    sending holds the others back: nothing becomes late in a backlog read unevenly."""
    events = generate(StreamSpec(n_predictions=4_000, change_at=4_000, seed=6))
    messages = partition_items(events, 2)
    merge = ModelMerge(2, lateness_ms=1_000, max_buffered=10**9, idle_ms=30_000)
    zeros = [m for m in messages if m[0] == 0]
    ones = [m for m in messages if m[0] == 1]
    out = []
    for now, (p, _, mark, items) in enumerate(zeros[:1] + ones[:1] + zeros[1:] + ones[1:]):
        out += merge.add(p, mark, items, now_ms=now)
    out += merge.flush()
    assert merge.counts["late_items"] == 0
    slots = [i.slot for i in out]
    assert slots == sorted(slots)


def test_an_idle_marker_releases_the_tail() -> None:
    """When every partition says it has read everything, nothing waits."""
    events = generate(StreamSpec(n_predictions=2_000, change_at=2_000, seed=7))
    messages = partition_items(events, 2)
    merge = ModelMerge(2, lateness_ms=10**12, max_buffered=10**9)
    out = []
    for p, _, mark, items in messages:
        out += merge.add(p, mark, items, now_ms=0)
    assert merge.buffered > 0
    out += merge.mark_idle(0, now_ms=0) + merge.mark_idle(1, now_ms=0)
    assert merge.buffered == 0
    assert len(out) == sum(len(m[3]) for m in messages)


def test_waiting_is_bounded() -> None:
    """A partition that never reports cannot make the merge hold more than
    merge_max_buffered items."""
    events = generate(StreamSpec(n_predictions=3_000, change_at=3_000, seed=8))
    messages = [m for m in partition_items(events, 2) if m[0] == 0]
    merge = ModelMerge(2, lateness_ms=10**12, max_buffered=1_000)
    for p, _, mark, items in messages:
        merge.add(p, mark, items, now_ms=0)
        assert merge.buffered <= 1_000
    assert merge.counts["forced_releases"] > 0


def test_items_survive_the_wire() -> None:
    """Every kind of item, through JSON and back, is the item it was (but for the
    prediction's feedback tag, which stays in the process that built it: the model stage
    builds it again from the same fields)."""
    intake = Intake(DetectorSettings(feedback_enabled=True))
    events = [
        Prediction(
            "p1", "r1", "m", "v1", 10, {"a": 1.5, "b": "x", "c": None}, ("i1", "i2"),
            {"1": 0.7}, "canary", {"region": "n"}, ("i1",), True,
        ),
        Outcome("o1", "r1", "m", 20, "i1"),
        Outcome("o2", "r2", "m", 30, 1, {"region": "s"}, True),
        Outcome("o3", "r3", "m", 40, 0),
        Prediction("p3", "r3", "m", "v2", 35, {"a": 2}, 0.25),
    ]  # fmt: skip
    items = intake.process(events)["m"]
    assert [i.kind for i in items] == [0, 1, 2, 0, 1]
    for item in items:
        row = orjson.loads(orjson.dumps(item_to_wire(item)))
        assert item_from_wire(row, "m") == item._replace(tag=None)
    assert items[0].tag == (True, True, (("region", "n"),))


def test_staged_pipeline_detects_as_fast_at_any_partition_count() -> None:
    """The same seeded mean shift is found after the same number of model events on 1, 4
    and 12 partitions, and the stationary prefix gives no decision at any count."""
    spec = StreamSpec(scenario="mean_shift", n_predictions=30_000, change_at=10_000, seed=12)
    events = generate(spec)
    change_ts = sorted(e.ts for e in events if isinstance(e, Prediction))[spec.change_at]
    first = {}
    for n in (1, 4, 12):
        found = staged(events, StagedPipeline(n, SMALL), 2_000)
        assert not [d for d in found if d.ts < change_ts]
        first[n] = min(d.ts for d in found if d.kind == "data_drift" and d.type == "alert")
    assert first[1] > change_ts
    assert abs(first[12] - first[1]) <= 2_000 and abs(first[4] - first[1]) <= 2_000


def test_replay_merges_a_sparse_models_partitions_side_by_side() -> None:
    """A prediction every 12 s, a batch spanning hours of event time: replay on 4
    partitions merges each batch's partitions before releasing any, so no item is late
    and the decisions are those of one partition (none: labels that come a day later for
    one outcome, read by matured cohort). Released one partition at a time, the first
    ran past the others by more than the lateness and two thirds of the items were late,
    out of order: the late outcome's labels came in bursts, read as concept drift."""
    from tests.detectors.versions.test_registry import _outcome_ordered_stream  # noqa: PLC0415

    events = _outcome_ordered_stream(5)
    for n in (1, 4):
        pipeline = StagedPipeline(n, DetectorSettings())
        assert staged(events, pipeline, 4_096) == [], n
        assert pipeline.counts["late_items"] == 0
        assert pipeline.counts["items"] == len(events)
