"""The stream worker against a real (embedded) broker."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import urllib.request
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest

from driftline.detectors.engine import ModelEngine
from driftline.detectors.settings import DetectorSettings
from driftline.streams.broker import free_port
from driftline.streams.worker import Worker, WorkerSettings
from driftline.streams.worker import worker as worker_module
from tests.kafka_helpers import (
    TEST_WORKER,
    committed,
    config_for,
    decisions,
    kafka,
    produce,
    read_all,
    read_records,
    setup_topics,
    topics_for,
    wait_committed,
)
from tests.kafka_helpers import (
    checkpoints as read_checkpoints_of,
)

SMALL = DetectorSettings(warmup_events=3_000, window_events=2_000, label_warmup_events=1_000)
_names = itertools.count()

BAD = [
    (b"not json", "invalid_json"),
    (b'{"event_id": "x", "request_id": "r"}', "schema_violation"),
    (
        b'{"type": "outcome", "event_id": "o", "request_id": "r", "model_id": "m", '
        b'"ts": 1, "label": 1}',
        "wrong_topic",
    ),
]


async def run_until_committed(
    bootstrap,
    topics,
    group,
    partitions,
    total,
    detectors=SMALL,
    metrics_port=None,
    before_stop=None,
    compression="none",
    max_request_size=None,
):
    settings = WorkerSettings(group_id=group, metrics_port=metrics_port, **TEST_WORKER)
    clients = replace(kafka(bootstrap), compression_type=compression)
    if max_request_size is not None:
        clients = replace(clients, max_request_size=max_request_size)
    worker = Worker(config_for(topics, detectors), clients, settings)
    task = asyncio.create_task(worker.run())
    try:
        await wait_committed(
            bootstrap, group, topics, partitions, total, tasks=[task], workers=[worker]
        )
        if before_stop is not None:
            await before_stop(worker)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    return worker


async def test_worker_decides_dead_letters_and_accounts_for_everything(broker, make_stream) -> None:
    """Drift is published to the alert topic, bad messages to the dead-letter topic with
    their reasons and origin, and consumed = processed + duplicates + dead-lettered."""
    topics = topics_for(f"e2e{next(_names)}")
    await setup_topics(broker, topics, 2)
    events = list(
        make_stream(scenario="mean_shift", n_predictions=20_000, change_at=8_000, seed=31)
    )
    events.insert(100, events[50])  # a duplicate
    counts = await produce(broker, topics, events, [(topics.predictions, raw) for raw, _ in BAD])
    total = sum(counts.values())
    port = free_port()
    scraped: list[str] = []

    async def scrape(_worker: Worker) -> None:
        await asyncio.sleep(1.2)  # one gauge refresh after the last batch
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        scraped.append(body.decode())

    await run_until_committed(
        broker, topics, "g-e2e", 2, total, metrics_port=port, before_stop=scrape
    )
    metrics = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scraped[0].splitlines()
        if line.startswith("driftline_")
    }
    consumed = sum(
        v
        for k, v in metrics.items()
        if k.startswith("driftline_records_consumed_total") and topics.summaries not in k
    )
    assert consumed == total
    # Stage 2 read every summaries message it was sent, and merged every item in order.
    summaries_read = sum(
        v
        for k, v in metrics.items()
        if k.startswith("driftline_records_consumed_total") and topics.summaries in k
    )
    assert summaries_read > 0
    assert metrics["driftline_summaries_bytes_total"] > 0
    assert metrics.get('driftline_merge_items_total{status="late"}', 0) == 0
    assert metrics.get('driftline_merge_items_total{status="duplicate"}', 0) == 0
    assert (
        metrics[
            f'driftline_records_dead_lettered_total{{reason="invalid_json",topic="{topics.predictions}"}}'
        ]
        == 1
    )
    assert metrics['driftline_decisions_total{kind="data_drift",type="alert"}'] == 1
    assert metrics["driftline_processing_latency_seconds_count"] > 0
    assert metrics["driftline_last_checkpoint_timestamp_seconds"] > time.time() - 60
    assert metrics["driftline_records_duplicate_total"] == 1
    assert metrics["driftline_labels_held"] == 0  # delays that do not depend on the outcome
    assert 'driftline_drift_score{kind="data_drift",model_id="credit-risk"}' in metrics
    assert not any("request_id" in k or "event_id" in k for k in metrics)

    found = await decisions(broker, topics)
    drift = [d for d in found if d["kind"] == "data_drift" and d["type"] == "alert"]
    assert drift and drift[0]["features"][0] == "x0"
    # Each decision is also a binary-mode CloudEvent: attributes in ce_* headers.
    for value, headers in await read_records(broker, topics.alerts):
        decision = orjson.loads(value)
        assert headers["ce_specversion"] == b"1.0"
        assert headers["ce_id"].decode() == decision["decision_id"]
        assert headers["ce_type"].decode() == f"io.driftline.alert.{decision['kind']}"
        assert headers["ce_source"] == b"/driftline/g-e2e"
        assert headers["ce_subject"].decode() == decision["model_id"]
        assert headers["content-type"] == b"application/json"
        when = datetime.fromisoformat(headers["ce_time"].decode().replace("Z", "+00:00"))
        assert round(when.timestamp() * 1000) == decision["ts"]
    letters = [orjson.loads(v) for v in await read_all(broker, topics.deadletter)]
    assert sorted(letter["reason"] for letter in letters) == sorted(r for _, r in BAD)
    assert {base64.b64decode(letter["original_b64"]) for letter in letters} == {
        raw for raw, _ in BAD
    }
    assert all(letter["source"]["topic"] == topics.predictions for letter in letters)

    checkpoints = await read_checkpoints_of(broker, topics.state, "g-e2e")
    consumed = sum(c.state["consumed"] for c in checkpoints.values())
    processed = sum(
        c.state["intake"]["counts"]["predictions"] + c.state["intake"]["counts"]["outcomes"]
        for c in checkpoints.values()
    )
    duplicates = sum(c.state["intake"]["counts"]["duplicates"] for c in checkpoints.values())
    dead = sum(sum(c.state["dead_letters"].values()) for c in checkpoints.values())
    assert (consumed, processed + duplicates + dead, duplicates, dead) == (
        total,
        total,
        1,
        len(BAD),
    )


async def test_committing_shards_that_left_in_a_rebalance_commits_nothing(
    broker, make_stream
) -> None:
    """A rebalance can take every shard a checkpoint names while the checkpoint awaits the
    broker, leaving no offsets to commit; aiokafka refuses an empty commit (ValueError({})),
    which once stopped a worker during a handover. The worker commits nothing and goes on."""
    topics = topics_for(f"left{next(_names)}")
    await setup_topics(broker, topics, 2)
    events = make_stream(scenario="stationary", n_predictions=2_000, change_at=2_000, seed=5)
    total = sum((await produce(broker, topics, list(events))).values())

    async def commit_departed(worker: Worker) -> None:
        await worker._commit(["7", "m7"])  # shards this worker does not own (any more)
        assert worker.failure is None

    await run_until_committed(broker, topics, "g-left", 2, total, before_stop=commit_departed)


async def test_compressed_input_topics_are_read(broker, make_stream) -> None:
    """Prediction logs written with zstd record batches (as model servers' producers often
    write them) are read and decided on; the worker writes its own outputs with lz4."""
    topics = topics_for(f"zstd{next(_names)}")
    await setup_topics(broker, topics, 2)
    events = make_stream(scenario="mean_shift", n_predictions=12_000, change_at=6_000, seed=13)
    total = sum((await produce(broker, topics, list(events), compression="zstd")).values())
    worker = await run_until_committed(broker, topics, "g-zstd", 2, total, compression="lz4")
    assert worker.kafka.compression_type == "lz4"
    drift = [d for d in await decisions(broker, topics) if d["kind"] == "data_drift"]
    assert drift and drift[0]["features"][0] == "x0"


async def test_worker_rolls_back_a_bad_canary(broker, make_stream) -> None:
    """Through the broker: a canary 5 points worse on 10 % of traffic is rolled back to the
    stable version on the rollback topic (the model stage judges the canary on both
    partitions' traffic together)."""
    from driftline.streams.simulation.traffic import with_canary  # noqa: PLC0415

    topics = topics_for(f"canary{next(_names)}")
    await setup_topics(broker, topics, 2)
    base = list(make_stream(scenario="stationary", n_predictions=80_000, change_at=80_000, seed=91))
    events = with_canary(base, 0.10, 0.12, seed=91)
    total = sum((await produce(broker, topics, events)).values())
    await run_until_committed(broker, topics, "g-canary", 2, total)
    rollbacks = [orjson.loads(v) for v in await read_all(broker, topics.rollback)]
    assert rollbacks, "no rollback published"
    assert {(r["kind"], r["from_version"], r["to_version"]) for r in rollbacks} == {
        ("canary_regression", "v2", "v1")
    }
    assert len({r["decision_id"] for r in rollbacks}) == 1


async def test_worker_flags_a_feedback_loop(broker) -> None:
    """Through the broker: patrol predictions with segment and action, their outcomes, and
    citizen reports as independent outcomes on the outcomes topic; the runaway allocation
    is flagged once on the alerts topic (the model stage sees both partitions: one loop,
    one id)."""
    from driftline.streams.simulation.loops import simulate  # noqa: PLC0415

    topics = topics_for(f"loop{next(_names)}")
    await setup_topics(broker, topics, 2)
    events = simulate("policing_loop", 3)
    total = sum((await produce(broker, topics, events)).values())
    worker = await run_until_committed(broker, topics, "g-loop", 2, total)
    alerts = [orjson.loads(v) for v in await read_all(broker, topics.alerts)]
    loops = [a for a in alerts if a["kind"] == "feedback_loop"]
    merges = {m: g.counts for s in worker.model_shards.values() for m, g in s.merges.items()}
    assert loops, ([a["kind"] for a in alerts], merges)
    assert {(a["type"], a["severity"], a["evidence"]["reference_available"]) for a in loops} == {
        ("alert", "critical", True)
    }
    assert len({a["decision_id"] for a in loops}) == 1


async def test_a_live_stream_is_merged_in_order_and_decided_as_replay_decides(
    broker, make_stream
) -> None:
    """Records produced while the worker runs (each input partition catches up after every
    fetch) are merged in event-time order: no late items, and the decisions, timestamps
    included, are replay's at the same partition count. Input partitions that declared
    themselves idle the moment they caught up made 65 % of such a stream late."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from driftline.detectors.pipeline import StagedPipeline  # noqa: PLC0415
    from driftline.schemas.decode import encode  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415
    from driftline.streams.replay import Staged, replay  # noqa: PLC0415

    topics = topics_for(f"live{next(_names)}")
    await setup_topics(broker, topics, 4)
    events = list(
        make_stream(scenario="mean_shift", n_predictions=20_000, change_at=8_000, seed=31)
    )
    group = "g-live"
    settings = WorkerSettings(group_id=group, **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), kafka(broker), settings)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(5)  # the group has formed: what follows arrives live
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    rate = 4_000  # records per second
    started = time.monotonic()
    try:
        for i, event in enumerate(events):
            topic = topics.predictions if isinstance(event, Prediction) else topics.outcomes
            await producer.send(topic, encode(event), key=event.request_id.encode())
            if i % 400 == 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    try:
        await wait_committed(broker, group, topics, 4, len(events), tasks=[task], workers=[worker])
        late = sum(
            m.counts["late_items"] for s in worker.model_shards.values() for m in s.merges.values()
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert late == 0
    native = replay([encode(e) for e in events], Staged(StagedPipeline(4, SMALL, {}, {})))
    found = sorted((d["type"], d["kind"], d["ts"]) for d in await decisions(broker, topics))
    assert found == sorted((d.type, d.kind, d.ts) for d in native.decisions)
    assert any(kind == "data_drift" for _, kind, _ in found)


async def test_items_read_back_from_the_summaries_topic_decide_as_replay(
    broker, make_stream, monkeypatch
) -> None:
    """With nothing kept in memory between the stages, the model stage decodes every item
    from the summaries topic (columns, format 3) and decides as replay does at the same
    partition count, on replay's very sequence of items; with messages limited to the
    smallest size allowed, batches of items are cut into several messages (each piece
    carrying its own watermark) and still decide alike."""
    from driftline.detectors.pipeline import StagedPipeline  # noqa: PLC0415
    from driftline.schemas.decode import encode  # noqa: PLC0415
    from driftline.streams.replay import Staged, replay  # noqa: PLC0415

    monkeypatch.setattr(worker_module, "LOCAL_ITEMS", 0)
    topics = topics_for(f"wire{next(_names)}")
    await setup_topics(broker, topics, 2)
    events = list(make_stream(scenario="mean_shift", n_predictions=12_000, change_at=6_000, seed=7))
    total = sum((await produce(broker, topics, events)).values())
    limit = 600_000
    pieces, batches, oversized = [], [], []
    summary, forward = worker_module.Worker._summary, worker_module.Worker._forward

    def counted_summary(self, shard, mark, items):
        pieces.append(len(items))
        value = summary(self, shard, mark, items)
        if len(value) > limit:
            oversized.append(len(items))
        return value

    async def counted_forward(self, shard, model_id, items):
        batches.append(len(items))
        await forward(self, shard, model_id, items)

    monkeypatch.setattr(worker_module.Worker, "_summary", counted_summary)
    monkeypatch.setattr(worker_module.Worker, "_forward", counted_forward)
    seen: list[tuple[int, int, str | None]] = []  # what the model stage runs on
    engine_sort = ModelEngine._sort

    def recorded(self, items):
        seen.extend((i.kind, i.slot, getattr(i.event, "event_id", None)) for i in items)
        return engine_sort(self, items)

    monkeypatch.setattr(ModelEngine, "_sort", recorded)
    worker = await run_until_committed(broker, topics, "g-wire", 2, total, max_request_size=limit)
    merged_by_worker, seen[:] = list(seen), []
    assert worker.local_items == 0
    # Some batches were cut (more messages than batches), by the size of the items seen
    # before: a batch is encoded whole and found too large only before any message said
    # how large an item is (the first), or when its items are much larger than the last
    # message's.
    assert len(pieces) > len(batches)
    assert len(oversized) <= 2
    native = replay([encode(e) for e in events], Staged(StagedPipeline(2, SMALL, {}, {})))
    # The model stage ran on replay's very sequence of items (what a run whose produce
    # times tie across the two topics does not give: see `tests.kafka_helpers.produce`).
    assert merged_by_worker == seen
    found = sorted(
        (d["type"], d["kind"], d["ts"], d["decision_id"], tuple(d["features"]))
        for d in await decisions(broker, topics)
    )
    assert found == sorted(
        (d.type, d.kind, d.ts, d.decision_id, d.features) for d in native.decisions
    )
    assert ("alert", "data_drift") in {(t, k) for t, k, *_ in found}


def test_summaries_messages_of_every_format_give_the_same_items() -> None:
    """Messages of format 1 (an older worker's: feature names in every item), format 2
    (names once per message) and format 3 (columns, what the worker writes) decode to
    the same items in the worker; so do items whose features have other names or
    another order than the rest of their message."""
    from aiokafka import ConsumerRecord  # noqa: PLC0415

    from driftline.detectors.intake.stage import Intake, item_to_wire  # noqa: PLC0415
    from driftline.schemas.records import Outcome, Prediction  # noqa: PLC0415
    from driftline.streams.worker.shards import Shard  # noqa: PLC0415
    from driftline.streams.worker.worker import SUMMARY_FORMAT  # noqa: PLC0415
    from tests.detectors.intake.test_wire import format_2_rows  # noqa: PLC0415

    events = [
        Prediction("p1", "r1", "m", "v1", 10, {"a": 1.5, "b": "x", "c": None}, 0.9),
        Prediction("p2", "r2", "m", "v1", 11, {"b": "y", "a": 2.5, "c": 3}, 0.1),
        Prediction("p3", "r3", "m", "v1", 12, {}, 0.4),
        Outcome("o1", "r1", "m", 20, 1),
        Prediction("p4", "r4", "m", "v1", 13, {"a": 0.5, "b": "z", "c": None}, 0.7),
    ]
    items = Intake().process(events)["m"]
    worker = Worker(config_for(topics_for("fmt"), SMALL), kafka("127.0.0.1:1"), WorkerSettings())
    rows, keys = format_2_rows(items)
    assert keys == [("a", "b", "c"), ("b", "a", "c"), ()]
    messages = [
        {"v": 1, "p": 0, "n": 1, "w": 20, "i": [item_to_wire(item) for item in items]},
        {"v": 2, "p": 0, "n": 1, "w": 20, "fk": keys, "i": rows},
        orjson.loads(worker._summary(Shard(0, Intake()), 20, items)),
    ]
    assert messages[-1]["v"] == SUMMARY_FORMAT == 3
    for message in messages:
        value = orjson.dumps(message)
        record = ConsumerRecord("s", 0, 0, 0, 0, b"m", value, None, 1, len(value), ())
        got = worker._local_items(record, "m", orjson.loads(value))
        assert got == [item._replace(tag=None) for item in items]
        assert [list(i.event.features) for i in got[:3]] == [["a", "b", "c"], ["b", "a", "c"], []]


def test_items_kept_between_the_stages_count_the_labels_of_their_blocks() -> None:
    """What the worker keeps in memory for its own model stage is bounded by events: a
    block of labels counts as the labels it holds (`LOCAL_ITEMS`)."""
    from driftline.detectors.intake.stage import LABELS, Intake  # noqa: PLC0415
    from driftline.detectors.settings import DetectorSettings  # noqa: PLC0415
    from driftline.schemas.records import Outcome, Prediction  # noqa: PLC0415

    events = [
        *(Prediction(f"p{i}", f"r{i}", "m", "v1", 10 * i, {"a": 1.0}, 0.9) for i in range(40)),
        *(Outcome(f"o{i}", f"r{i}", "m", 400 + 10 * i, 1) for i in range(30)),
    ]
    intake = Intake(DetectorSettings(slice_ms=100))
    items = intake.process(events)["m"] + intake.flush_slices()["m"]
    blocks = [i for i in items if i.kind == LABELS]
    assert blocks and sum(b.event.events for b in blocks) == 30
    assert worker_module._weight(items) == len(items) - len(blocks) + 30


def test_a_trace_after_a_block_of_labels_is_found_at_the_engines_position() -> None:
    """A block takes a position per outcome in the model stage; the worker counts them
    alike when it looks up the trace of a decision's triggering event."""
    from driftline.detectors.engine import ModelEngine  # noqa: PLC0415
    from driftline.detectors.intake.blocks import LabelBlock  # noqa: PLC0415
    from driftline.detectors.intake.stage import LABELS, PREDICTION, Routed  # noqa: PLC0415
    from driftline.detectors.settings import DetectorSettings  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415

    block = LabelBlock(
        "m", 0, ["v1", "v2", "v1", "v1"], [0, 0, 1, 2], ["o1", "o1", "o2", "o3"],
        [5, 5, 6, 7], [1, 1, 0, 1], [0.9, 0.4, 0.2, 0.7], [1, 1, 2, 3],
    )  # fmt: skip
    p = Prediction("p9", "r9", "m", "v1", 8, {"x": 1.0}, 0.5)
    items = [Routed(LABELS, 0, 7, block, None), Routed(PREDICTION, 1, 8, p, None, "t-p")]
    engine = ModelEngine(DetectorSettings(slice_ms=10))
    engine.seq = 10
    engine.process(items)
    assert block.positions == 3
    assert worker_module._traces_by_position(items, 10) == {engine.seq - 1: "t-p"} == {13: "t-p"}


async def test_a_batch_too_large_for_one_message_is_cut_by_its_items_size() -> None:
    """Stage 1's items of a model go out in messages under ``max_request_size``, cut by
    the bytes per item of the messages before (each item encoded once, but for the first
    batch's), in order, each piece with its last item's slot as watermark and the last
    with the partition's."""
    from driftline.detectors.intake.stage import Intake  # noqa: PLC0415
    from driftline.detectors.intake.wire import decode_items  # noqa: PLC0415
    from driftline.streams.simulation.traffic import StreamSpec, generate  # noqa: PLC0415
    from driftline.streams.worker.shards import Shard  # noqa: PLC0415

    class Recorded:  # stands in for the broker: what _forward sends
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, topic, value, key=None, headers=None, partition=None):
            self.sent.append(value)

    limit = 600_000
    worker = Worker(
        config_for(topics_for("cut"), SMALL),
        replace(kafka("127.0.0.1:1"), max_request_size=limit),
        WorkerSettings(),
    )
    worker.publisher = Recorded()  # type: ignore[assignment]
    encoded = []
    summary = worker._summary

    def counted(shard, mark, items):
        encoded.append(len(items))
        return summary(shard, mark, items)

    worker._summary = counted
    shard = Shard(0, Intake(SMALL))
    events = generate(StreamSpec(n_predictions=40_000, seed=5))
    sent_items, batches = [], []
    for i in range(0, len(events), 12_000):
        for model_id, items in shard.intake.process(events[i : i + 12_000]).items():
            batches.append(len(items))
            first = len(worker.publisher.sent)
            await worker._forward(shard, model_id, items)
            messages = [orjson.loads(v) for v in worker.publisher.sent[first:]]
            assert len(messages) > 1  # each batch is over 600 kB
            assert [m["w"] for m in messages[:-1]] == [
                decode_items(m["i"], model_id)[-1].slot for m in messages[:-1]
            ]
            assert messages[-1]["w"] == shard.intake.watermarks[model_id]
            for m in messages:
                sent_items += decode_items(m["i"], model_id)
            assert sent_items[-len(items) :] == [item._replace(tag=None) for item in items]
    assert max(map(len, worker.publisher.sent)) <= limit
    assert sum(encoded) <= sum(batches) + batches[0]


async def test_the_loop_reads_on_while_a_checkpoint_is_written(
    broker, make_stream, monkeypatch
) -> None:
    """The periodic checkpoint takes the shards' state in the loop and writes it in the
    background: held up at its first write while more input arrives, the worker handles
    that input meanwhile, the checkpoint holds the offsets of when it was taken (not of
    when it was written), and the run accounts for every record."""
    topics = topics_for(f"bg{next(_names)}")
    await setup_topics(broker, topics, 1)
    events = list(make_stream(scenario="mean_shift", n_predictions=6_000, change_at=3_000, seed=17))
    half = len(events) // 2
    total = sum((await produce(broker, topics, events[:half])).values())
    real_write = worker_module.write_checkpoint
    seen: dict[str, Any] = {}

    async def held_write(producer, topic, group, checkpoint, *rest):  # type: ignore[no-untyped-def]
        if not seen and checkpoint.partition == "0":
            seen["taken"] = dict(checkpoint.offsets)
            shard = worker.shards[0]
            before = shard.consumed
            await produce(broker, topics, events[half:])
            deadline = time.monotonic() + 20
            while shard.consumed == before and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polls a count the loop moves
            seen["read_meanwhile"] = shard.consumed - before
            seen["offsets_then"] = dict(shard.offsets)
        return await real_write(producer, topic, group, checkpoint, *rest)

    monkeypatch.setattr(worker_module, "write_checkpoint", held_write)
    settings = WorkerSettings(group_id="g-bg", max_batch_records=500, **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), kafka(broker), settings)
    task = asyncio.create_task(worker.run())
    total += len(events) - half
    try:
        await wait_committed(broker, "g-bg", topics, 1, total, tasks=[task], workers=[worker])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert worker.failure is None
    assert seen["read_meanwhile"] > 0
    assert sum(seen["taken"].values()) < sum(seen["offsets_then"].values())
    assert (await read_checkpoints_of(broker, topics.state, "g-bg"))[0].state["consumed"] == total


@pytest.mark.parametrize("offline", [True, False])
async def test_slices_summed_by_the_input_stages_decide_as_replay(
    broker, make_stream, monkeypatch, offline
) -> None:
    """With ``slice_ms``, the input stages of 4 partitions send a version's predictions as
    slices through the summaries topic (nothing kept in memory between the stages) once
    they have its reference: an offline profile from the start, or the warm-up reference
    the model stage builds and publishes on the references topic. The model stage tests
    the sums and decides as replay does at the same partition count, every decision's id
    and time."""
    from driftline.detectors.drift.reference import ReferenceBuilder  # noqa: PLC0415
    from driftline.detectors.pipeline import StagedPipeline  # noqa: PLC0415
    from driftline.schemas.decode import encode  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415
    from driftline.streams.replay import Staged, replay  # noqa: PLC0415

    monkeypatch.setattr(worker_module, "LOCAL_ITEMS", 0)
    settings = replace(SMALL, slice_ms=2_000, merge_idle_ms=600_000)
    builder = ReferenceBuilder(settings, 20_000)
    for e in make_stream(scenario="stationary", n_predictions=20_000, seed=99):
        if isinstance(e, Prediction):
            builder.add(e.features, e.prediction)
    profiles = {"credit-risk": builder.build("training", "credit-risk")} if offline else {}
    topics = topics_for(f"slices{next(_names)}")
    await setup_topics(broker, topics, 4)
    events = list(make_stream(scenario="mean_shift", n_predictions=12_000, change_at=6_000, seed=7))
    # Without a profile, the stream comes in two parts: the input stages have read the
    # first before the model stage has built the reference from it (a backlog read at
    # once would leave nothing to sum). No idle markers in between, and no partition
    # left behind for its silence during the pause (`merge_idle_ms`, wall time): either
    # lets the others run ahead, which replay does not do.
    cut = len(events) if offline else 6_000
    total = sum((await produce(broker, topics, events[:cut])).values())
    sent: list[int] = []
    forward = worker_module.Worker._forward

    async def counted_forward(self, shard, model_id, items):
        sent.extend(item.kind for item in items)
        await forward(self, shard, model_id, items)

    monkeypatch.setattr(worker_module.Worker, "_forward", counted_forward)
    group = f"g-slices-{offline}"
    worker = Worker(
        replace(config_for(topics, settings), references=profiles),
        kafka(broker),
        WorkerSettings(group_id=group, idle_after_ms=2_000 if offline else 600_000, **TEST_WORKER),
    )
    task = asyncio.create_task(worker.run())
    try:
        if not offline:
            deadline = time.monotonic() + 60
            while not worker.shards or not all(
                s.intake.slicer.learned for s in worker.shards.values()
            ):
                assert time.monotonic() < deadline and not task.done()
                await asyncio.sleep(0.1)
            total += sum((await produce(broker, topics, events[cut:])).values())
            # Idle markers again only once the second part is read: a partition that had
            # been caught up since the pause would otherwise declare itself idle before
            # its first fetch of it (and send its open slice early, in two parts).
            while await committed(broker, group, topics, 4) < total:
                assert time.monotonic() < deadline + 60 and not task.done()
                await asyncio.sleep(0.2)
            worker.settings = replace(worker.settings, idle_after_ms=2_000)  # the tail's turn
        await wait_committed(broker, group, topics, 4, total, tasks=[task], workers=[worker])
        late = sum(
            m.counts["late_items"] for s in worker.model_shards.values() for m in s.merges.values()
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert late == 0  # merged as replay merges
    assert sent.count(3) > 100  # summaries
    if offline:
        assert sent.count(0) == 0  # and no prediction items
    else:  # the first part's predictions travel as items, the second's as slices
        assert sent.count(0) == sum(isinstance(e, Prediction) for e in events[:cut])
        published = [orjson.loads(v) for v in await read_all(broker, topics.references)]
        assert [(p["name"], p["model_version"]) for p in published] == [("warmup", "v1")]
    native = replay([encode(e) for e in events], Staged(StagedPipeline(4, settings, profiles, {})))
    found = sorted(
        (d["type"], d["kind"], d["ts"], d["decision_id"]) for d in await decisions(broker, topics)
    )
    expected = sorted((d.type, d.kind, d.ts, d.decision_id) for d in native.decisions)
    assert found == expected
    # x0's shift (within the skew horizon of an offline profile), and the prediction's.
    drift = "online_offline_gap" if offline else "data_drift"
    assert {("alert", drift), ("alert", "prediction_drift")} <= {(t, k) for t, k, *_ in found}


def test_a_versions_own_profile_from_the_references_topic_reaches_the_input_stages(
    make_stream,
) -> None:
    """What another worker's model stage hands over arrives through the references topic
    keyed ``model_id@version``: the input stages take it for that version's slices. A
    model's profile (keyed ``model_id``) only applies to versions first seen afterwards."""
    from driftline.detectors.drift.reference import ReferenceBuilder  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415

    settings = replace(SMALL, slice_ms=2_000)
    builder = ReferenceBuilder(settings, 3_000)
    for e in make_stream(n_predictions=3_000, seed=3):
        if isinstance(e, Prediction):
            builder.add(e.features, e.prediction)
    warmup = builder.build("warmup", "credit-risk", "v1")
    worker = Worker(
        config_for(topics_for("unused"), settings),
        kafka("localhost:1"),
        WorkerSettings(group_id="g-unused", **TEST_WORKER),
    )
    worker.shards[0] = worker._shard(0)
    slicer = worker.shards[0].intake.slicer
    worker.add_reference("credit-risk", replace(warmup, model_version=None))
    assert slicer.learned == {}
    worker.add_reference("credit-risk@v1", warmup)
    assert slicer.learned == {"credit-risk@v1": warmup}
    assert slicer.profiles["credit-risk"].model_version is None


def test_periodic_checkpoints_take_one_shard_at_a_time_and_each_once_an_interval() -> None:
    """The loop is held only for one shard's state at a time (`Worker._due`): the
    checkpoints come ``checkpoint_interval_s / shards`` apart, each takes the changed
    shard taken longest ago, every shard is taken once an interval, shards the writes fell
    behind on are taken together, and shards written but not committed are committed."""
    from driftline.streams.worker.shards import ModelShard  # noqa: PLC0415

    interval = 600.0  # far longer than the test: no shard falls behind on its own
    worker = Worker(
        config_for(topics_for("unused"), SMALL),
        kafka("localhost:1"),
        WorkerSettings(group_id="g-unused", **{**TEST_WORKER, "checkpoint_interval_s": interval}),
    )
    for p in range(4):
        worker.shards[p] = worker._shard(p)
        worker.model_shards[p] = ModelShard(p, "summaries", worker._model_engine(), 10)
    shards = worker.by_name()
    assert worker._checkpoint_spacing() == interval / 8
    worker.settings = replace(worker.settings, checkpoint_interval_s=0.2)  # 25 ms a turn
    assert worker._checkpoint_spacing() == worker_module.MIN_CHECKPOINT_SPACING_S
    worker.settings = replace(worker.settings, checkpoint_interval_s=interval)
    start = time.monotonic()
    taken: list[str] = []
    for turn in range(1, 17):  # two intervals' turns, every shard changing all the time
        for shard in shards.values():
            shard.dirty = True
        due = worker._due()
        assert len(due) == 1
        (name,) = due
        # What `_snapshot` does, at the turn's time.
        shards[name].taken_at, shards[name].dirty = start + turn * interval / 8, False
        taken.append(name)
    assert sorted(taken[:8]) == sorted(shards) and taken[8:] == taken[:8]
    # Nothing changed: nothing to take. Written, not committed: committed only.
    for shard in shards.values():
        shard.dirty = False
    assert worker._due() == set()
    shards["2"].covered = {"predictions": 5}
    assert worker._due() == {"2"}
    shards["2"].committed = {"predictions": 5}
    # Writes fell behind on three shards (none for over an interval): taken at once.
    for name in ("0", "m1", "m3"):
        shards[name].dirty, shards[name].taken_at = True, time.monotonic() - 2 * interval
    shards["1"].dirty = True
    assert worker._due() == {"0", "m1", "m3"}
