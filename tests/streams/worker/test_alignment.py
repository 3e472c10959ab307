"""Stage 1's order of work over a partition's two input topics (`aligned`), without a
broker: records are taken up to the produce time both topics have reached."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from driftline.detectors.intake.stage import Intake
from driftline.detectors.settings import DetectorSettings
from driftline.streams.worker.alignment import ALIGN_BEHIND_FACTOR, aligned
from driftline.streams.worker.settings import WorkerSettings
from driftline.streams.worker.shards import Shard

TOPICS = ("p", "o")


def record(topic: str, offset: int, produced: int) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, produced, 0, None, b"", None, 0, 0, [])


def shard_with(pending: dict[str, list[ConsumerRecord]]) -> Shard:
    shard = Shard(0, Intake(DetectorSettings()))
    shard.pending = {topic: list(records) for topic, records in pending.items()}
    return shard


def test_both_topics_interleave_by_produce_time_up_to_where_both_have_reached() -> None:
    predictions = [record("p", i, t) for i, t in enumerate((10, 20, 30, 40))]
    outcomes = [record("o", i, t) for i, t in enumerate((15, 25))]
    shard = shard_with({"p": predictions, "o": outcomes})
    taken = aligned(shard, TOPICS, lambda tp: 100, WorkerSettings())
    assert [(r.topic, r.timestamp) for r in taken] == [
        ("p", 10),
        ("o", 15),
        ("p", 20),
        ("o", 25),
    ]
    assert [r.timestamp for r in shard.pending["p"]] == [30, 40]  # wait for the outcomes
    assert shard.pending["o"] == []


def test_a_topic_read_to_its_end_does_not_hold_the_other_back() -> None:
    shard = shard_with({"p": [record("p", 0, 10), record("p", 1, 20)]})
    shard.offsets = {"o": 7}
    taken = aligned(shard, TOPICS, lambda tp: 7, WorkerSettings())
    assert [r.timestamp for r in taken] == [10, 20]


def test_a_topic_behind_its_high_watermark_is_waited_for_then_passed(monkeypatch) -> None:
    """The outcomes topic holds more (offset 0 of 5) but returned nothing yet: the
    predictions wait, for ``align_max_wait_s`` times the factor, then go alone."""
    clock = [1_000.0]
    monkeypatch.setattr("driftline.streams.worker.alignment.time.monotonic", lambda: clock[0])
    settings = WorkerSettings(align_max_wait_s=2.0)
    shard = shard_with({"p": [record("p", 0, 10)]})
    assert aligned(shard, TOPICS, lambda tp: 5, settings) == []
    clock[0] += 2.0 * ALIGN_BEHIND_FACTOR - 0.1
    assert aligned(shard, TOPICS, lambda tp: 5, settings) == []
    clock[0] += 0.2
    assert [r.timestamp for r in aligned(shard, TOPICS, lambda tp: 5, settings)] == [10]


def test_a_topic_that_never_answered_is_waited_for_only_align_max_wait_s(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("driftline.streams.worker.alignment.time.monotonic", lambda: clock[0])
    settings = WorkerSettings(align_max_wait_s=2.0)
    shard = shard_with({"p": [record("p", 0, 10)]})
    assert aligned(shard, TOPICS, lambda tp: None, settings) == []
    clock[0] += 2.1
    assert [r.timestamp for r in aligned(shard, TOPICS, lambda tp: None, settings)] == [10]


def test_a_full_buffer_is_processed_without_waiting() -> None:
    settings = WorkerSettings(align_max_records=3)
    shard = shard_with({"p": [record("p", i, 10 * i) for i in range(3)]})
    assert len(aligned(shard, TOPICS, lambda tp: 5, settings)) == 3


def test_one_input_topic_is_taken_in_log_order() -> None:
    shard = shard_with({"r": [record("r", 0, 30), record("r", 1, 10)]})
    assert [r.timestamp for r in aligned(shard, ("r",), lambda tp: None, WorkerSettings())] == [
        30,
        10,
    ]
