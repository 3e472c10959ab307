"""Foreign prediction logs through the worker on the embedded broker: KServe's logger,
Seldon Core 2 and a mapped JSON log give the decisions the same traffic gives in
driftline's format, whatever partitions their records land on, and every malformed
message is dead-lettered with its reason and original coordinates."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.detectors.pipeline import StagedPipeline
from driftline.schemas.decode import encode
from driftline.schemas.formats import InputSettings, SourceRecord
from driftline.streams.config import Config
from driftline.streams.replay import Staged, replay
from driftline.streams.simulation.foreign import MAPPING, to_foreign
from driftline.streams.worker import Worker, WorkerSettings
from tests.kafka_helpers import (
    TEST_WORKER,
    decisions,
    kafka,
    merged,
    read_all,
    read_records,
    setup_topics,
    summaries_drained,
    topics_for,
)
from tests.streams.worker.test_worker import SMALL

_names = itertools.count()
EVENT_MS = 10
"""Event-time spacing of the simulated predictions."""
CHANGE_AT = 8_000
TOLERANCE_EVENTS = 300
"""How far (in predictions) a worker's decision may sit from the native replay's. Records
land on random partitions and are re-keyed; the model stage sees replay's order as long
as no stage-1 partition declares itself idle while more is coming (`idle_after_ms`), and
then every decision, retrains included, is replay's to the millisecond (measured, all
formats at 4 partitions). The slack covers a partition that runs dry for longer than that
on a loaded machine: its idle marker lets the others be released past it, and the
sequential tests' sample path moves with the order (retrains moved by up to 2,400
predictions when partitions declared idle at once)."""


def _kserve_bad(topic: str, ts: int) -> list[tuple[SourceRecord, str]]:
    """Malformed KServe records and the reason each must be dead-lettered with."""
    time = "2023-11-14T22:13:25Z"
    base = {
        "ce_specversion": b"1.0",
        "ce_type": b"org.kubeflow.serving.inference.request",
        "ce_inferenceservicename": b"credit-risk",
        "ce_time": time.encode(),
        "content-type": b"application/json",
    }
    good_inputs = {
        "inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]
    }
    response = {**base, "ce_type": b"org.kubeflow.serving.inference.response", "ce_id": b"orphan-1"}
    out = [
        (
            SourceRecord(topic, 0, 0, ts, orjson.dumps(good_inputs), None, dict(base)),
            "missing_correlation_id",
        ),
        (
            SourceRecord(
                topic,
                0,
                0,
                ts,
                orjson.dumps(
                    {
                        "inputs": [
                            {
                                "name": "input-0",
                                "shape": [2, 2],
                                "datatype": "FP64",
                                "data": [1.0, 2.0],
                            }
                        ]
                    }
                ),
                None,
                {**base, "ce_id": b"bad-shape"},
            ),
            "tensor_mismatch",
        ),
        (
            SourceRecord(
                topic,
                0,
                0,
                ts,
                orjson.dumps(
                    {
                        "inputs": [
                            {"name": "input-0", "shape": [1], "datatype": "FP24", "data": [1.0]}
                        ]
                    }
                ),
                None,
                {**base, "ce_id": b"bad-type"},
            ),
            "unknown_datatype",
        ),
        (
            SourceRecord(
                topic,
                0,
                0,
                ts,
                orjson.dumps(
                    {
                        "inputs": [
                            {"name": "input-0", "shape": [1], "datatype": "FP32", "data": ["a"]}
                        ]
                    }
                ),
                None,
                {**base, "ce_id": b"bad-data"},
            ),
            "tensor_mismatch",
        ),
        (
            SourceRecord(
                topic, 0, 0, ts, orjson.dumps(good_inputs)[:20], None, {**base, "ce_id": b"cut"}
            ),
            "invalid_json",
        ),
        (
            SourceRecord(
                topic,
                0,
                0,
                ts,
                orjson.dumps(
                    {
                        "id": "orphan-1",
                        "model_name": "credit-risk",
                        "outputs": [
                            {"name": "output-0", "shape": [1], "datatype": "FP64", "data": [0.5]}
                        ],
                    }
                ),
                None,
                response,
            ),
            "response_without_request",
        ),
    ]
    return out


def _seldon_bad(prefix: str, ts: int) -> list[tuple[SourceRecord, str]]:
    topic = f"{prefix}.seldon-mesh.model.credit-risk.inputs"
    return [
        (
            SourceRecord(topic, 0, 0, ts, b"\x0a\x05iri", None, {"x-request-id": b"cut-1"}),
            "invalid_protobuf",
        ),
        (SourceRecord(topic, 0, 0, ts, b"\x0a\x04iris", None, {}), "missing_correlation_id"),
        (
            SourceRecord(
                topic,
                0,
                0,
                ts,
                b'{"inputs": [',
                None,
                {"x-request-id": b"cut-2", "seldon-infer-type": b"json/inferModelRequest"},
            ),
            "invalid_json",
        ),
    ]


def _mapped_bad(topic: str, ts: int) -> list[tuple[SourceRecord, str]]:
    return [
        (
            SourceRecord(topic, 0, 0, ts, b'{"meta": {"model": {"name": "credit-risk"}}}'),
            "missing_correlation_id",
        ),
        (
            SourceRecord(
                topic, 0, 0, ts, b'{"meta": {"id": "no-inputs"}, "output": {"score": 0.1}}'
            ),
            "schema_violation",
        ),
    ]


async def _produce(bootstrap: str, records: list[SourceRecord], partitions: dict[str, int]) -> None:
    """Each record on a random partition of its topic (seeded), with its headers; record
    timestamps are event times (Seldon carries no other)."""
    rng = random.Random(7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for r in records:
            await producer.send(
                r.topic,
                r.value,
                key=r.key,
                partition=rng.randrange(partitions[r.topic]),
                headers=list(r.headers.items()),
                timestamp_ms=r.timestamp,
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return sum([await consumer.committed(tp) or 0 for tp in tps])
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("fmt", "partitions"),
    [("kserve", 4), ("kserve", 1), ("seldon", 4), ("seldon", 1), ("mapped", 4), ("mapped", 1)],
)
async def test_foreign_logs_give_the_native_decisions(broker, make_stream, fmt, partitions) -> None:
    """The worker reads the format's log (requests and responses on random partitions,
    outcomes on random partitions, some batched requests and some never answered) and
    publishes the decisions a replay of the same traffic in driftline's format gives
    (kind, features, and event time within 200 predictions); the malformed messages are
    dead-lettered with their reasons, naming their original topic."""
    n = next(_names)
    topics = topics_for(f"fmt{n}")
    await setup_topics(broker, topics, partitions)
    events = list(
        make_stream(scenario="mean_shift", n_predictions=20_000, change_at=CHANGE_AT, seed=31)
    )
    prefix = f"seldon{n}"
    log_topic = topics.predictions
    traffic = to_foreign(events, fmt, log_topic, topics.outcomes, seldon_prefix=prefix)
    ts0 = events[0].ts
    bad = {
        "kserve": lambda: _kserve_bad(log_topic, ts0),
        "seldon": lambda: _seldon_bad(prefix, ts0),
        "mapped": lambda: _mapped_bad(log_topic, ts0),
    }[fmt]()
    records = [r for r, _ in bad[:1]] + traffic.records[:5_000] + [r for r, _ in bad[1:]]
    records += traffic.records[5_000:]
    input_topics = sorted({r.topic for r in records})
    counts = {t: partitions for t in input_topics}
    if fmt == "seldon":  # the model topics, found by the worker's pattern
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, partitions, 1) for t in input_topics if t != topics.outcomes]
            )
        finally:
            await admin.close()
    await _produce(broker, records, counts)

    settings = InputSettings(
        format=fmt,
        features=traffic.features,
        mapping=MAPPING if fmt == "mapped" else {},
        seldon_prefix=prefix,
        pair_ttl_ms=30_000,
    )
    group = f"g-fmt{n}"
    config = Config(detectors=SMALL, topics=topics, input=settings)
    worker = Worker(config, kafka(broker), WorkerSettings(group_id=group, **TEST_WORKER))
    task = asyncio.create_task(worker.run())
    stage0 = [TopicPartition(t, p) for t in input_topics for p in range(partitions)]
    stage1 = [TopicPartition(topics.rekeyed, p) for p in range(partitions)]
    expected_rekeyed = len(records) - 1  # the first bad record has no correlation id
    if fmt == "seldon":
        expected_rekeyed -= 1  # so has the second
    try:
        for _ in range(300):
            assert not task.done(), task.result()
            if (
                await _committed(broker, group + ".rekey", stage0) >= len(records)
                and await _committed(broker, group, stage1) >= expected_rekeyed
                and merged(worker)
                and await summaries_drained(broker, group, topics)
                and merged(worker)
            ):
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("the worker did not process the input within 90 s")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    native = replay([encode(e) for e in traffic.events], Staged(StagedPipeline(1, SMALL, {}, {})))
    assert native.decisions, "the scenario must give decisions to compare"
    found = sorted(
        ((d["type"], d["kind"], tuple(d["features"])), d["ts"])
        for d in await decisions(broker, topics)
    )
    wanted = sorted(((d.type, d.kind, tuple(d.features)), d.ts) for d in native.decisions)
    assert [k for k, _ in found] == [k for k, _ in wanted]
    change_ts = events[0].ts + CHANGE_AT * EVENT_MS
    for (_, got), (_, want) in zip(found, wanted, strict=True):
        assert got > change_ts  # nothing before the change
        assert abs(got - want) <= TOLERANCE_EVENTS * EVENT_MS

    # Each alert joins the trace of a request served at its event time.
    by_ts: dict[int, set[str]] = {}
    for e in traffic.events:
        if e.request_id in traffic.traces and type(e).__name__ == "Prediction":
            by_ts.setdefault(e.ts, set()).add(traffic.traces[e.request_id])
    traced = 0
    for value, headers in await read_records(broker, topics.alerts):
        decision = orjson.loads(value)
        if "traceparent" in headers:
            assert headers["traceparent"].decode() in by_ts[decision["ts"]]
            assert headers["ce_traceparent"] == headers["traceparent"]
            traced += 1
    assert traced >= 1

    letters = [orjson.loads(v) for v in await read_all(broker, topics.deadletter)]
    reasons = Counter(d["reason"] for d in letters)
    assert reasons == Counter(reason for _, reason in bad)
    assert all(d["source"]["topic"] != topics.rekeyed for d in letters)


async def test_kill_minus_9_on_a_kserve_log_loses_and_duplicates_nothing(
    broker, make_stream, tmp_path
) -> None:
    """SIGKILL of a worker reading a KServe log (both its re-key stage and its pairing
    mid-stream), then a restart: the decisions of an uninterrupted in-process run (by id),
    every malformed record dead-lettered (re-sends of a letter are the same record), and
    no request or response lost to the crash (no response_without_request but the one
    injected)."""
    import signal  # noqa: PLC0415

    from tests.kafka_helpers import start_worker_process, write_config  # noqa: PLC0415

    partitions = 4
    n = next(_names)
    events = list(
        make_stream(scenario="mean_shift", n_predictions=14_000, change_at=CHANGE_AT, seed=37)
    )
    topics = topics_for(f"kfmt{n}")
    await setup_topics(broker, topics, partitions)
    traffic = to_foreign(events, "kserve", topics.predictions, topics.outcomes)
    bad = _kserve_bad(topics.predictions, events[0].ts)
    records = [r for r, _ in bad] + traffic.records
    await _produce(broker, records, {topics.predictions: partitions, topics.outcomes: partitions})
    settings = InputSettings(format="kserve", features=traffic.features, pair_ttl_ms=30_000)
    stage0 = [
        TopicPartition(t, p)
        for t in (topics.predictions, topics.outcomes)
        for p in range(partitions)
    ]
    expected_rekeyed = len(records) - 1

    async def done(group: str, mine) -> bool:
        stage1 = [TopicPartition(mine.rekeyed, p) for p in range(partitions)]
        return (
            await _committed(broker, group + ".rekey", stage0) >= len(records)
            and await _committed(broker, group, stage1) >= expected_rekeyed
            and await summaries_drained(broker, group, mine)
        )

    # The reference: one uninterrupted in-process worker, its own outputs.
    reference = replace(
        topics_for(f"kref{n}"), predictions=topics.predictions, outcomes=topics.outcomes
    )
    await setup_topics(broker, reference, partitions)
    worker = Worker(
        Config(detectors=SMALL, topics=reference, input=settings),
        kafka(broker),
        WorkerSettings(group_id=f"g-kref{n}", **TEST_WORKER),
    )
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(400):
            assert not task.done(), task.result()
            if await done(f"g-kref{n}", reference) and merged(worker):
                break
            await asyncio.sleep(0.3)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    wanted = {d["decision_id"] for d in await decisions(broker, reference)}
    assert wanted

    crashed = replace(
        topics_for(f"kcrash{n}"), predictions=topics.predictions, outcomes=topics.outcomes
    )
    await setup_topics(broker, crashed, partitions)
    group = f"g-kcrash{n}"
    config = write_config(
        tmp_path / "w.toml",
        crashed,
        group,
        {
            "warmup_events": SMALL.warmup_events,
            "window_events": SMALL.window_events,
            "label_warmup_events": SMALL.label_warmup_events,
        },
    )
    features = ", ".join(f'"{f}"' for f in traffic.features)
    text = config.read_text().replace("[worker]\n", "[worker]\nmax_batch_records = 500\n")
    text += f'\n[input]\nformat = "kserve"\nfeatures = [{features}]\npair_ttl_ms = 30000\n'
    config.write_text(text)
    stage1 = [TopicPartition(crashed.rekeyed, p) for p in range(partitions)]
    first = start_worker_process(broker, config, tmp_path / "first.log")
    try:
        while (got := await _committed(broker, group, stage1)) < expected_rekeyed * 0.3:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert got < expected_rekeyed, "the worker finished before it could be killed"
    second = start_worker_process(broker, config, tmp_path / "second.log")
    try:
        for _ in range(400):
            assert second.poll() is None, (tmp_path / "second.log").read_text()[-2000:]
            if await done(group, crashed):
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("the restarted worker did not finish within 120 s")
        await asyncio.sleep(3)  # the tail's idle markers and merges
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=40)
    assert code == 0, (tmp_path / "second.log").read_text()[-2000:]
    assert {d["decision_id"] for d in await decisions(broker, crashed)} == wanted
    letters = {
        (d["reason"], d["source"]["topic"], d["source"]["partition"], d["source"]["offset"])
        for d in map(orjson.loads, await read_all(broker, crashed.deadletter))
    }
    assert Counter(reason for reason, *_ in letters) == Counter(reason for _, reason in bad)


async def test_a_seldon_prefix_that_matches_nothing_is_said(broker, caplog) -> None:
    """A Seldon prefix or namespace that matches no model topic gives one warning naming
    the pattern (the worker keeps waiting: models may be deployed later)."""
    n = next(_names)
    topics = topics_for(f"seldonnone{n}")
    await setup_topics(broker, topics, 1)
    settings = InputSettings(format="seldon", seldon_prefix=f"nosuch{n}")
    config = Config(detectors=SMALL, topics=topics, input=settings)
    worker = Worker(config, kafka(broker), WorkerSettings(group_id=f"g-sn{n}", **TEST_WORKER))
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            if any("no Seldon model topic matches" in r.getMessage() for r in caplog.records):
                break
            assert not task.done(), task.result()
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    said = [r.getMessage() for r in caplog.records if "no Seldon model topic" in r.getMessage()]
    assert len(said) == 1 and f"nosuch{n}" in said[0]
