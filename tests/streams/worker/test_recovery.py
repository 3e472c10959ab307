"""Crash recovery, scale-out and online/offline parity, on one seeded stream.

The uninterrupted single-worker run is the reference: a worker killed with SIGKILL and
restarted, two workers sharing the partitions, and `driftline replay --partitions` must
all give the same decisions (compared by decision_id, as consumers deduplicate)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.schemas.decode import encode
from driftline.streams.cli import main
from driftline.streams.config import Topics
from driftline.streams.simulation.traffic import StreamSpec
from tests.conftest import stream
from tests.kafka_helpers import (
    TEST_WORKER,
    checkpoints,
    committed,
    decisions,
    fresh,
    produce,
    read_all,
    setup_topics,
    start_worker_process,
    topics_for,
    wait_committed,
    write_config,
)
from tests.streams.worker.test_worker import SMALL, run_until_committed

PARTITIONS = 4
SPEC = StreamSpec(scenario="mean_shift", n_predictions=40_000, change_at=12_000, seed=41)
DETECTORS = {"warmup_events": 3_000, "window_events": 2_000, "label_warmup_events": 1_000}
_runs = itertools.count()


@pytest.fixture(scope="module")
def produced(broker):
    """The stream produced once into 2-partition input topics; returns (topics, total)."""
    topics = topics_for(fresh("recovery"))

    async def go():
        await setup_topics(broker, topics, PARTITIONS)
        return sum((await produce(broker, topics, list(stream(SPEC)))).values())

    return topics, asyncio.run(go())


def outputs(topics, name):
    """Same input topics, a run's own output and state topics."""
    own = topics_for(name)
    return replace(own, predictions=topics.predictions, outcomes=topics.outcomes)


def reference_of(topics: Topics) -> str:
    """The reference run's name (its output topics and group), one per produced stream."""
    return topics.predictions.removesuffix(".predictions") + "-ref"


@pytest.fixture(scope="module")
def reference_run(broker, produced):
    """Decisions of one uninterrupted in-process worker."""
    topics, total = produced
    mine = outputs(topics, reference_of(topics))

    async def go():
        await setup_topics(broker, mine, PARTITIONS)
        await run_until_committed(
            broker, mine, f"g-{reference_of(topics)}", PARTITIONS, total, SMALL
        )
        return await decisions(broker, mine)

    found = asyncio.run(go())
    assert any(d["kind"] == "data_drift" for d in found)
    return found


async def merged_items(broker, state_topic, group) -> tuple[int, int]:
    """Items the model stage merged, and re-sent items it recognised, over its shards."""
    found = await checkpoints(broker, state_topic, group, stage=2)
    merges = [m for c in found.values() for m in c.state["merges"].values()]
    return (
        sum(m["counts"]["items"] for m in merges),
        sum(m["counts"]["duplicate_items"] for m in merges),
    )


def ids(found):
    return {d["decision_id"] for d in found}


async def kill_and_restart(broker, config, group, topics, total, tmp_path) -> int:
    """Run a worker process, SIGKILL it once anything is committed, restart it until
    ``total`` records are committed, then SIGTERM it (which must exit 0); returns how
    many records were committed at the kill."""
    first = start_worker_process(broker, config, tmp_path / "first.log")
    try:
        # Killed once anything is committed: the worker takes a second or two for the whole
        # stream (checkpoints every 0.5 s), and a poll under load can take a good part of
        # that, so waiting for a larger share let it finish first now and then.
        while (done := await committed(broker, group, topics, PARTITIONS)) == 0:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert done < total, "the worker finished before it could be killed"
    second = start_worker_process(broker, config, tmp_path / "second.log")
    try:
        await wait_committed(broker, group, topics, PARTITIONS, total, timeout_s=90)
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=40)
    assert code == 0, (tmp_path / "second.log").read_text()[-2000:]
    return done


async def test_kill_minus_9_loses_nothing_and_duplicates_nothing(
    broker, produced, reference_run, tmp_path
) -> None:
    """SIGKILL mid-stream, restart: same decision ids as the uninterrupted run, every input
    record counted exactly once in the recovered state, and SIGTERM then exits 0."""
    topics, total = produced
    mine = outputs(topics, f"crash{next(_runs)}")
    await setup_topics(broker, mine, PARTITIONS)
    config = write_config(tmp_path / "w.toml", mine, "g-crash", DETECTORS)
    text = config.read_text().replace("[worker]\n", "[worker]\nmax_batch_records = 500\n")
    config.write_text(text)
    done = await kill_and_restart(broker, config, "g-crash", mine, total, tmp_path)
    found = await decisions(broker, mine)
    assert ids(found) == ids(reference_run)
    print(
        f"killed at {done}/{total} committed; {len(found) - len(ids(found))} decisions re-emitted"
    )

    recovered = await checkpoints(broker, mine.state, "g-crash")
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0
    # The model stage merged every item once: as many as the uninterrupted run, whatever
    # the killed worker had sent twice.
    merged, resent = await merged_items(broker, mine.state, "g-crash")
    assert (
        merged
        == (
            await merged_items(
                broker, outputs(topics, reference_of(topics)).state, f"g-{reference_of(topics)}"
            )
        )[0]
    )
    print(f"model stage: {merged} items merged, {resent} re-sent items recognised")


async def test_two_workers_share_partitions_and_agree(broker, produced, reference_run) -> None:
    """Two workers in one group split the partitions and together decide the same."""
    from driftline.streams.worker import Worker, WorkerSettings  # noqa: PLC0415
    from tests.kafka_helpers import config_for, kafka  # noqa: PLC0415

    topics, total = produced
    mine = outputs(topics, "pair")
    await setup_topics(broker, mine, PARTITIONS)
    workers = [
        Worker(
            config_for(mine, SMALL), kafka(broker), WorkerSettings(group_id="g-pair", **TEST_WORKER)
        )
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await wait_committed(broker, "g-pair", mine, PARTITIONS, total, timeout_s=90, tasks=tasks)
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
    assert ids(await decisions(broker, mine)) == ids(reference_run)


def test_replay_matches_the_worker(produced, reference_run, tmp_path) -> None:
    """Online/offline parity: `driftline replay --partitions 4` on the recorded stream gives
    the worker's decisions (same ids, types, kinds, features); trigger times agree within
    2,000 events (20 s of event time), the slack of merging two topics by timestamp."""
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_bytes(b"".join(encode(e) + b"\n" for e in stream(SPEC)))
    config = tmp_path / "c.toml"
    config.write_text("[detectors]\n" + "".join(f"{k} = {v}\n" for k, v in DETECTORS.items()))
    out = tmp_path / "d.jsonl"
    assert (
        main(
            [
                "replay",
                str(recorded),
                "--partitions",
                str(PARTITIONS),
                "--config",
                str(config),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    import orjson  # noqa: PLC0415

    offline = {d["decision_id"]: d for d in map(orjson.loads, out.read_bytes().splitlines())}
    online = {d["decision_id"]: d for d in reference_run}
    assert set(offline) == set(online)
    for key, d in online.items():
        o = offline[key]
        assert (o["type"], o["kind"], o["model_version"], o["features"][:1]) == (
            d["type"],
            d["kind"],
            d["model_version"],
            d["features"][:1],
        )
        assert abs(o["ts"] - d["ts"]) <= 20_000


def test_the_worker_on_4_partitions_detects_as_one_partition_does(
    produced, reference_run, tmp_path
) -> None:
    """The model stage sees every partition: the worker on 4-partition topics finds the
    mean shift within 200 model events (2 s of event time) of a one-partition replay, and
    both after the change."""
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_bytes(b"".join(encode(e) + b"\n" for e in stream(SPEC)))
    config = tmp_path / "c.toml"
    config.write_text("[detectors]\n" + "".join(f"{k} = {v}\n" for k, v in DETECTORS.items()))
    out = tmp_path / "one.jsonl"
    args = ["replay", str(recorded), "--partitions", "1", "--config", str(config)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    import orjson  # noqa: PLC0415

    def first_drift(found):
        return min(d["ts"] for d in found if (d["type"], d["kind"]) == ("alert", "data_drift"))

    one = first_drift(map(orjson.loads, out.read_bytes().splitlines()))
    predictions = sorted(e.ts for e in stream(SPEC) if type(e).__name__ == "Prediction")
    assert one > predictions[SPEC.change_at]
    assert abs(first_drift(reference_run) - one) <= 2_000


def test_worker_config_file_parses(tmp_path) -> None:
    """The TOML the tests write is a valid worker configuration."""
    from driftline.streams.cli import _worker_parts, build_parser  # noqa: PLC0415

    config = write_config(tmp_path / "w.toml", topics_for("x"), "g", DETECTORS)
    args = build_parser().parse_args(["worker", "--config", str(config)])
    cfg, kafka_settings, worker = _worker_parts(args)
    assert (worker.group_id, kafka_settings.enable_idempotence, cfg.detectors.warmup_events) == (
        "g",
        False,
        3_000,
    )
    assert Path(config).exists()


async def test_a_worker_frozen_past_its_session_loses_its_partitions_and_nothing_else(
    broker, produced, reference_run, tmp_path
) -> None:
    """Two worker processes; one is frozen (SIGSTOP, as a network partition or a long
    pause looks to the group) for longer than the session timeout mid-stream, then
    resumed. Its partitions move to the other worker and back; decisions equal the
    uninterrupted run's and every record is counted once."""
    topics, total = produced
    mine = outputs(topics, f"freeze{next(_runs)}")
    await setup_topics(broker, mine, PARTITIONS)
    config = write_config(tmp_path / "w.toml", mine, "g-freeze", DETECTORS)
    config.write_text(
        config.read_text().replace("[worker]\n", "[worker]\nmax_batch_records = 500\n")
    )
    runs = [start_worker_process(broker, config, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        while await committed(broker, "g-freeze", mine, PARTITIONS) < total * 0.2:
            assert all(r.poll() is None for r in runs), (tmp_path / "w0.log").read_text()[-2000:]
            await asyncio.sleep(0.1)
        runs[0].send_signal(signal.SIGSTOP)
        await asyncio.sleep(TEST_WORKER["session_timeout_ms"] / 1000 * 1.5)
        runs[0].send_signal(signal.SIGCONT)
        await wait_committed(broker, "g-freeze", mine, PARTITIONS, total, timeout_s=120)
    finally:
        for r in runs:
            r.send_signal(signal.SIGCONT)
            r.send_signal(signal.SIGTERM)
        codes = [r.wait(timeout=60) for r in runs]
    assert ids(await decisions(broker, mine)) == ids(reference_run)
    recovered = await checkpoints(broker, mine.state, "g-freeze")
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0
    print(f"exit codes after the freeze: {codes}")


async def test_state_that_cannot_be_read_at_assignment_is_retried_then_fails_the_worker(
    broker, produced, reference_run, monkeypatch
) -> None:
    """Reading the checkpoints of newly assigned partitions fails twice (a route that just
    came back): the worker retries and decides as the uninterrupted run. When the read
    keeps failing for longer than ``publish_timeout_s``, the worker stops with that error
    instead of owning partitions it never reads (aiokafka only logs what a rebalance
    callback raises)."""
    from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

    from driftline.streams.worker import Worker, WorkerSettings  # noqa: PLC0415
    from driftline.streams.worker import worker as worker_module  # noqa: PLC0415
    from tests.kafka_helpers import config_for, kafka  # noqa: PLC0415

    topics, total = produced
    real = worker_module.read_checkpoints
    failures = {"left": 2}

    async def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures["left"] > 0:
            failures["left"] -= 1
            await asyncio.sleep(0.05)  # a request that fails takes a while
            raise KafkaConnectionError("connection refused (injected)")
        return await real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "read_checkpoints", flaky)
    mine = outputs(topics, "flaky")
    await setup_topics(broker, mine, PARTITIONS)
    await run_until_committed(broker, mine, "g-flaky", PARTITIONS, total, SMALL)
    assert failures["left"] == 0
    assert ids(await decisions(broker, mine)) == ids(reference_run)

    failures["left"] = 10**9
    mine = outputs(topics, "unreadable")
    await setup_topics(broker, mine, PARTITIONS)
    settings = WorkerSettings(group_id="g-unreadable", publish_timeout_s=1.0, **TEST_WORKER)
    worker = Worker(config_for(mine, SMALL), kafka(broker), settings)
    with pytest.raises(KafkaConnectionError, match="injected"):
        await asyncio.wait_for(worker.run(), 60)
    assert await committed(broker, "g-unreadable", mine, PARTITIONS) == 0


async def held_in_a_batch(broker, topics, group: str, rebalance) -> tuple[Any, asyncio.Task]:
    """A worker held inside its 20th batch (in a send) while ``rebalance(listener,
    assignment)`` runs the rebalance listener's callbacks, as aiokafka does from its
    coordinator's task; the batch then finishes. Returns the worker, still running, and
    its task."""
    from driftline.streams.worker import Worker, WorkerSettings  # noqa: PLC0415
    from driftline.streams.worker import worker as worker_module  # noqa: PLC0415
    from tests.kafka_helpers import config_for, kafka  # noqa: PLC0415

    settings = WorkerSettings(group_id=group, max_batch_records=500, **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), kafka(broker), settings)
    inside, gate = asyncio.Event(), asyncio.Event()
    forward = worker._forward
    calls = itertools.count(1)

    async def held(*args):  # type: ignore[no-untyped-def]
        if next(calls) == 20:  # mid-stream, after some checkpoints
            inside.set()
            await gate.wait()
        await forward(*args)

    worker._forward = held  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(inside.wait(), 60)
        assert worker.consumer is not None
        listener = worker_module._Listener(worker)
        callbacks = asyncio.create_task(rebalance(listener, list(worker.consumer.assignment())))
        await asyncio.sleep(0.5)
        gate.set()
        await asyncio.wait_for(callbacks, 30)
    except BaseException:
        gate.set()
        worker.stop()
        await asyncio.wait_for(task, 30)
        raise
    return worker, task


async def test_a_revocation_waits_for_the_batch_in_hand(broker, produced) -> None:
    """aiokafka calls the rebalance listener from its coordinator's task, while the loop
    may be halfway through a batch (waiting for a send). A revocation must wait for the
    batch: a checkpoint taken mid-batch holds the input stage's memory of records its
    offsets do not cover, and whoever restores it drops them as duplicates, so they are
    lost (seen as 754 "duplicates" in a run of the network-cut test). A worker is held
    inside a batch while its partitions are revoked; its checkpoints must describe whole
    batches, and the worker that takes over counts every record once."""
    topics, total = produced
    mine = outputs(topics, f"midbatch{next(_runs)}")
    group = f"g-midbatch{next(_runs)}"
    await setup_topics(broker, mine, PARTITIONS)

    async def revoke(listener, assignment):  # type: ignore[no-untyped-def]
        await listener.on_partitions_revoked(assignment)

    worker, task = await held_in_a_batch(broker, mine, group, revoke)
    worker.stop()
    await asyncio.wait_for(task, 30)
    written = await checkpoints(broker, mine.state, group)
    assert written
    for p, c in written.items():
        assert c.state["intake"]["counts"]["events"] == c.state["consumed"], p

    await run_until_committed(broker, mine, group, PARTITIONS, total, SMALL)
    recovered = await checkpoints(broker, mine.state, group)
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0


async def test_a_batch_fetched_while_partitions_are_handed_back_is_read_again(
    broker, produced
) -> None:
    """The partitions are revoked and assigned again while the loop is inside a batch
    (both callbacks queued behind it, as in an eager rebalance that gives a member its
    partitions back). The loop fetches its next batch before they run; the assignment
    restores the shards from their checkpoints and seeks them there, so that batch is
    read again, not handled as well: every record is counted once (a batch handled by
    the restored shards and then read again after the seek would count twice)."""
    topics, total = produced
    mine = outputs(topics, f"handback{next(_runs)}")
    group = f"g-handback{next(_runs)}"
    await setup_topics(broker, mine, PARTITIONS)

    async def hand_back(listener, assignment):  # type: ignore[no-untyped-def]
        revoked = asyncio.create_task(listener.on_partitions_revoked(assignment))
        await asyncio.sleep(0)  # queued behind the batch, ahead of the assignment
        await listener.on_partitions_assigned(assignment)
        await revoked

    worker, task = await held_in_a_batch(broker, mine, group, hand_back)
    try:
        await wait_committed(broker, group, mine, PARTITIONS, total, tasks=[task])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    recovered = await checkpoints(broker, mine.state, group)
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0


async def test_kill_minus_9_while_slices_are_summed_loses_and_duplicates_nothing(
    broker, produced, tmp_path
) -> None:
    """With an offline profile (its validation labels too) and ``slice_ms``, the input
    stages send slices, not predictions, and their labels summed: SIGKILL mid-stream,
    restart, and the decisions are replay's (by id), every input record counted exactly
    once in the recovered state, and re-sent slices recognised by the model stage."""
    from driftline.detectors.drift.reference import ReferenceBuilder  # noqa: PLC0415
    from driftline.detectors.intake.stage import LABEL_SUMS, LABELS  # noqa: PLC0415
    from driftline.detectors.intake.wire import decode_items  # noqa: PLC0415
    from driftline.detectors.pipeline import StagedPipeline  # noqa: PLC0415
    from driftline.detectors.settings import DetectorSettings  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415
    from driftline.streams.replay import Staged, replay  # noqa: PLC0415

    topics, total = produced
    mine = outputs(topics, f"slicecrash{next(_runs)}")
    await setup_topics(broker, mine, PARTITIONS)
    detectors = {**DETECTORS, "slice_ms": 2_000}
    settings = DetectorSettings(**detectors)
    builder = ReferenceBuilder(settings, 20_000)
    training = stream(StreamSpec(scenario="stationary", n_predictions=20_000, seed=99))
    labels = {e.request_id: e.label for e in training if not isinstance(e, Prediction)}
    for e in training:
        if isinstance(e, Prediction):
            builder.add(e.features, e.prediction, labels.get(e.request_id))
    profile = builder.build("training", SPEC.model_id)
    assert profile.performance is not None and profile.performance.task == "binary"
    profile_path = tmp_path / "profile.json"
    profile_path.write_bytes(orjson.dumps(profile.to_dict()))
    config = write_config(tmp_path / "w.toml", mine, "g-slicecrash", detectors)
    text = config.read_text().replace("[worker]\n", "[worker]\nmax_batch_records = 500\n")
    config.write_text(f'references = ["{profile_path}"]\n' + text)
    done = await kill_and_restart(broker, config, "g-slicecrash", mine, total, tmp_path)
    found = await decisions(broker, mine)
    native = replay(
        [encode(e) for e in stream(SPEC)],
        Staged(StagedPipeline(PARTITIONS, settings, {SPEC.model_id: profile}, {})),
    )
    assert ids(found) == {d.decision_id for d in native.decisions}
    # x0's shift (as skew against the offline profile when it comes early).
    assert any(d["kind"] in ("data_drift", "online_offline_gap") for d in found)
    recovered = await checkpoints(broker, mine.state, "g-slicecrash")
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0
    merged, resent = await merged_items(broker, mine.state, "g-slicecrash")
    kinds: Counter[int] = Counter()
    for value in await read_all(broker, mine.summaries):
        message = orjson.loads(value)
        if "i" in message:
            kinds.update(item.kind for item in decode_items(message["i"], SPEC.model_id))
    assert kinds[LABEL_SUMS] > 0 and kinds[LABELS] == 0
    print(
        f"killed at {done}/{total} committed; model stage merged {merged}, re-sent {resent}; "
        f"{kinds[LABEL_SUMS]} label sums sent"
    )
