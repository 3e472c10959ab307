"""Worker throughput and latency on the embedded broker, beside a bare aiokafka loop.

1. Produce a seeded stream (predictions and outcomes, 10 numeric + 2 categorical
   features) into 4-partition topics.
2. Bare loop: aiokafka ``getmany`` over the same topics plus ``orjson.loads`` per record.
3. The worker (same process, fresh group) over the same records: records/s from its
   first batch to the model stage's last release (group join excluded), by the wall
   clock and by the process's CPU time (the CPU one is steadier on a noisy machine). The
   wall-clock span leaves out the time the process sat idle after the input stopped:
   the model stage's last release waits for the partitions' idle markers
   (``idle_after_ms``), latency at the end of a finite stream, reported apart. Then
   again with its model stage decoding every item from the summaries topic, as each
   member of a group of several workers does for the items the other members' input
   stages sent (one worker alone takes its own from memory).
   With ``--against REV``, commit REV's worker as well (7eb953a is the last one-stage
   worker, the "today's" of issue 9's throughput target), alternating with this tree's,
   each in a fresh process over the same records: the two figures side by side.
   With ``--slice-ms``, the worker again with that ``slice_ms`` and an offline profile
   with its validation labels (what a hot binary model is run with: its predictions and
   its labels summed per slice by the input stages), alone and decoding every item.
4. Paced run at half the worker's throughput on the paced traffic (four models, measured
   first as a backlog: it costs the worker more per record than one model's), with drift
   injected into several models: per-record produce-to-processed latency (p50/p99) and
   produce-to-decision latency of every decision (the decision is published in the
   batch that processes its triggering record), and what held the loop meanwhile: its
   batches, its checkpoint turns (taking a shard's state) and the cycle collector's
   runs. Then the bare loop reading the same paced producer at the same rate: the
   latency floor that producer, broker and client give on this machine (the three share
   its cores), beside the worker's.

    python benchmarks/worker_throughput.py [--predictions 150000] [--paced-seconds 20]
        [--compare-compression none zstd] [--against 7eb953a] [--slice-ms 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace

# The script's own folder is on sys.path.
import commits
import numpy as np
import orjson
import stage2_cost
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.detectors.drift.reference import ReferenceProfile
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import encode
from driftline.schemas.records import Event, Prediction
from driftline.streams.broker import EmbeddedBroker
from driftline.streams.config import Config, Topics
from driftline.streams.kafka import KafkaSettings, create_topics
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.traffic import StreamSpec, generate
from driftline.streams.worker import Worker, WorkerSettings
from driftline.streams.worker import worker as worker_module

PARTITIONS = 4
SETTINGS = DetectorSettings(warmup_events=3_000, window_events=2_000, label_warmup_events=1_000)


def topics(prefix: str) -> Topics:
    return Topics.prefixed(prefix)


async def produce(bootstrap: str, t: Topics, events: list[Event], rate: float | None = None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    started = time.monotonic()
    chunk = 200
    for i in range(0, len(events), chunk):
        for e in events[i : i + chunk]:
            topic = t.predictions if isinstance(e, Prediction) else t.outcomes
            await producer.send(topic, encode(e), key=e.request_id.encode())
        if rate:
            ahead = started + (i + chunk) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await producer.flush()
    await producer.stop()
    return len(events)


async def bare_paced(bootstrap: str, t: Topics, total: int) -> np.ndarray:
    """Produce-to-read latency (s) of every record for the bare loop (``getmany`` and
    ``orjson.loads``) reading topics as a paced producer fills them: the floor that
    producer, broker and client give on this machine at that rate."""
    consumer = await bare_consumer(bootstrap, t)
    latencies: list[float] = []
    while len(latencies) < total:
        batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
        for records in batch.values():
            for r in records:
                orjson.loads(r.value)
        now = time.time() * 1000
        latencies += [(now - r.timestamp) / 1000 for rs in batch.values() for r in rs]
    await consumer.stop()
    return np.array(latencies)


async def bare_consumer(bootstrap: str, t: Topics) -> AIOKafkaConsumer:
    """A started consumer of the input topics' partitions from their beginning (no group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    tps = [
        TopicPartition(topic, p) for topic in (t.predictions, t.outcomes) for p in range(PARTITIONS)
    ]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    return consumer


async def bare_loop(bootstrap: str, t: Topics, total: int) -> tuple[float, float]:
    """Records per second of wall-clock time and of CPU time."""
    consumer = await bare_consumer(bootstrap, t)
    seen, first, first_cpu = 0, None, 0.0
    while seen < total:
        batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
        if batch and first is None:
            first, first_cpu = time.perf_counter(), time.process_time()
        for records in batch.values():
            for r in records:
                orjson.loads(r.value)
            seen += len(records)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    cpu = time.process_time() - first_cpu
    await consumer.stop()
    return total / elapsed, total / cpu


class TimedWorker(Worker):
    """The worker, recording when batches are processed and each record's latency."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.first: float | None = None
        self.last = 0.0
        """The last batch that did work in either stage."""
        self.input_last = 0.0
        """The last batch with input records: the rate by the clock ends here, not where
        the model stage's last release came (that waits for the partitions' idle markers,
        ``idle_after_ms`` after the input stops: latency at the end of a finite stream,
        not work)."""
        self.first_cpu = self.last_cpu = self.input_last_cpu = 0.0
        self.handled = 0
        self.latencies: list[float] = []
        self.batch_s: list[float] = []
        """Wall time of each batch that handled input records."""
        self.turns_s: list[float] = []
        """Wall time each checkpoint turn held the loop (taking the shards' state)."""

    def _snapshot(self, names):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return super()._snapshot(names)
        finally:
            self.turns_s.append(time.perf_counter() - started)

    def model_stage(self) -> tuple[int, int]:
        """Summaries messages the model stage consumed, and items still waiting in it."""
        consumed = sum(s.consumed for s in self.model_shards.values())
        waiting = sum(g.buffered for s in self.model_shards.values() for g in s.merges.values())
        return consumed, waiting

    async def _process(self, batch):  # type: ignore[no-untyped-def]
        before = sum(s.consumed for s in self.shards.values())
        model_before = self.model_stage()[0]
        started, started_cpu = time.perf_counter(), time.process_time()
        await super()._process(batch)
        done = sum(s.consumed for s in self.shards.values())
        if self.model_stage()[0] > model_before:
            self.last = time.perf_counter()  # the model stage's work counts too
            self.last_cpu = time.process_time()
        if done == before:
            return  # records of partitions still being restored: skipped, read again later
        if self.first is None:
            self.first, self.first_cpu = started, started_cpu
        self.handled += done - before
        self.batch_s.append(time.perf_counter() - started)
        now = time.time() * 1000
        summaries = self.topics.summaries
        for tp, records in batch.items():
            if tp.partition in self.shards and tp.topic != summaries:
                self.latencies += [(now - r.timestamp) / 1000 for r in records]
        self.last = self.input_last = time.perf_counter()
        self.last_cpu = self.input_last_cpu = time.process_time()

    @property
    def rates(self) -> tuple[float, float]:
        """Records per second of wall-clock time and of CPU time, from the first batch to
        the model stage's last release; the wall-clock span leaves out the time the
        process sat idle after the input stopped (waiting for idle markers), which is
        latency at the end of a finite stream, not throughput."""
        drain_cpu = self.last_cpu - self.input_last_cpu
        wall = self.input_last - (self.first or self.input_last) + drain_cpu
        return self.handled / wall, self.handled / (self.last_cpu - self.first_cpu)

    @property
    def drain_s(self) -> float:
        """From the last input batch to the model stage's last release."""
        return self.last - self.input_last


@contextlib.contextmanager
def collector_pauses() -> Iterator[list[float]]:
    """The wall time of every cycle-collector run while the block runs."""
    pauses: list[float] = []
    started = [0.0]

    def timed(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(timed)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timed)


async def run_worker(
    bootstrap: str,
    t: Topics,
    group: str,
    until: int,
    timeout_s: float,
    detectors: DetectorSettings = SETTINGS,
    compression: str | None = None,
    references: dict[str, ReferenceProfile] | None = None,
) -> TimedWorker:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)
    # Each run has its own summaries, state and output topics (the inputs are shared): a
    # new group reading a summaries topic an earlier run wrote would merge that run's
    # items as well, and count more work than its own.
    t = replace(Topics.prefixed(f"{group}.run"), predictions=t.predictions, outcomes=t.outcomes)
    await create_topics(kafka, t, PARTITIONS)
    if compression is not None:
        kafka = replace(kafka, compression_type=compression)
    settings = WorkerSettings(group_id=group, session_timeout_ms=6_000, heartbeat_interval_ms=500)
    config = replace(Config(), topics=t, detectors=detectors, references=references or {})
    worker = TimedWorker(config, kafka, settings)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout_s
    while worker.handled < until and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a count)
        await asyncio.sleep(0.05)
    # Then until the model stage has read everything sent to it and released it all.
    quiet_since, seen = time.monotonic(), worker.model_stage()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
        await asyncio.sleep(0.05)
        now_seen = worker.model_stage()
        if now_seen != seen or now_seen[1] > 0:
            quiet_since, seen = time.monotonic(), now_seen
    worker.stop()
    await task
    return worker


# Runs one worker over the bulk topics in a fresh process, with the code of the tree given
# (a commit unpacked, or this one), and prints its rates as JSON. Commits before the
# `driftline` namespace import their packages by their top-level names.
_PEER = """
import asyncio, json, os, sys, time
from dataclasses import replace
tree, bootstrap, predictions, outcomes, group, total = sys.argv[1:7]
if tree:
    sys.path[:0] = [tree, os.path.join(tree, "benchmarks")]
    from streams.config import Topics
    from streams.kafka import KafkaSettings, create_topics
    from streams.runtime import tune_gc
else:
    from driftline.streams.config import Topics
    from driftline.streams.kafka import KafkaSettings, create_topics
    from driftline.streams.runtime import tune_gc
import worker_throughput as bench

# CPU time from the batch that handled the first input records to the last batch that
# did work in either stage (`TimedWorker.last` moves then, in both trees' benchmarks):
# start-up, group join and the final checkpoint left out, as in the run in-process.
span = {"first": None, "last": 0.0}
_process = bench.TimedWorker._process

async def timed(self, batch):
    started, seen = time.process_time(), self.last
    await _process(self, batch)
    if span["first"] is None and self.handled:
        span["first"] = started
    if self.last != seen:
        span["last"] = time.process_time()

bench.TimedWorker._process = timed

async def main():
    tune_gc()
    t = replace(Topics.prefixed(group + ".run"), predictions=predictions, outcomes=outcomes)
    await create_topics(KafkaSettings(bootstrap_servers=bootstrap), t, bench.PARTITIONS)
    worker = await bench.run_worker(bootstrap, t, group, int(total), 300)
    cpu = span["last"] - span["first"]
    if hasattr(worker, "rates"):
        clock = worker.rates[0]
    else:
        clock = worker.handled / (worker.last - worker.first)
    print(json.dumps({"handled": worker.handled, "clock": clock, "cpu": worker.handled / cpu}))

asyncio.run(main())
"""


def peer_run(tree: str, bootstrap: str, t: Topics, group: str, total: int) -> dict[str, float]:
    """`_PEER` in a fresh process: records/s by the clock (`TimedWorker.rates`; the
    one-stage worker has no model stage to wait for) and per CPU second from its first
    batch to its last work (as `TimedWorker.rates` counts in-process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEER,
            tree,
            bootstrap,
            t.predictions,
            t.outcomes,
            group,
            str(total),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree or here,
        env={**os.environ, "PYTHONPATH": "" if tree else here},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def against(rev: str, rounds: int, bootstrap: str, t: Topics, total: int) -> None:
    """This tree's worker and commit ``rev``'s, alternating, each in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = unpack(rev, tmp)
        runs: dict[str, list[dict[str, float]]] = {rev: [], "this tree": []}
        for r in range(rounds):
            runs[rev].append(peer_run(tree, bootstrap, t, f"bench-against-{r}", total))
            runs["this tree"].append(peer_run("", bootstrap, t, f"bench-this-{r}", total))
    medians = {
        name: {k: statistics.median(run[k] for run in found) for k in ("clock", "cpu")}
        for name, found in runs.items()
    }
    for name, m in medians.items():
        print(
            f"{name:>12} (fresh process, median of {rounds}): {m['clock']:>9,.0f} records/s, "
            f"{m['cpu']:,.0f} per CPU s"
        )
    mine, theirs = medians["this tree"], medians[rev]
    print(
        f"this tree / {rev}: {mine['clock'] / theirs['clock']:.2f} by the clock, "
        f"{mine['cpu'] / theirs['cpu']:.2f} by CPU time"
    )


def unpack(rev: str, into: str) -> str:
    """Commit ``rev`` of this repository as files under ``into``; exits with one line when
    it cannot be read or uses the `driftline` namespace (which the installed package
    would shadow)."""
    commits.unpack(rev, into)
    if os.path.exists(f"{into}/driftline") or not os.path.isfile(f"{into}/streams/config.py"):
        raise SystemExit(f"--against {rev}: only commits before the driftline namespace")
    return into


async def record_times(bootstrap: str, topic_names: list[str]) -> dict[str, tuple[int, dict]]:
    """event_id (or decision_id) -> (record timestamp ms, decoded value) over whole topics."""
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: dict[str, tuple[int, dict]] = {}
    idle = 0
    while idle < 3:
        batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
        idle = 0 if batch else idle + 1
        for records in batch.values():
            for r in records:
                value = orjson.loads(r.value)
                out[value.get("decision_id") or value["event_id"]] = (r.timestamp, value)
    await consumer.stop()
    return out


def paced_producer(bootstrap: str, t: Topics, n: int, rate: float) -> None:
    """Runs in its own process, so producing does not compete with the worker's loop."""
    asyncio.run(produce(bootstrap, t, fleet(n, 50), rate=rate))


def fleet(n: int, seed: int) -> list[Event]:
    models = [
        generate(
            StreamSpec(
                scenario="mean_shift",
                n_predictions=n,
                change_at=n // 2,
                seed=seed + i,
                model_id=f"model-{i}",
            )
        )
        for i in range(4)
    ]
    out: list[Event] = []
    for i in range(max(map(len, models))):
        out += [m[i] for m in models if i < len(m)]
    return out


async def main(args: argparse.Namespace) -> None:
    tune_gc()
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        kafka = KafkaSettings(bootstrap_servers=bs, enable_idempotence=False)
        bulk = topics("bulk")
        await create_topics(kafka, bulk, PARTITIONS)
        events = generate(
            StreamSpec(
                scenario="mean_shift",
                n_predictions=args.predictions,
                change_at=args.predictions // 2,
                seed=3,
            )
        )
        total = await produce(bs, bulk, events)
        input_bytes = sum(len(encode(e)) for e in events)
        print(f"{total:,} records ({input_bytes:,} bytes) in {PARTITIONS}-partition topics")
        bare, bare_cpu = await bare_loop(bs, bulk, total)
        worker = await run_worker(bs, bulk, "bench-bulk", total, 300)
        rate, rate_cpu = worker.rates
        print(
            f"bare aiokafka getmany + orjson: {bare:>9,.0f} records/s ({bare_cpu:,.0f} per CPU s)"
        )
        print(
            "worker (decode, both stages, checkpoints, outputs): "
            f"{rate:>9,.0f} records/s ({rate_cpu:,.0f} per CPU s)"
        )
        print(
            f"worker / bare: {rate / bare:.2f} by the clock, {rate_cpu / bare_cpu:.2f} by CPU time"
            "   target: the one-stage worker's ratio in the same run (--against 7eb953a), "
            "goal 0.50"
        )
        held = worker_module.LOCAL_ITEMS
        worker_module.LOCAL_ITEMS = 0  # every item decoded from the summaries topic
        try:
            decoding = await run_worker(bs, bulk, "bench-bulk-decoded", total, 300)
        finally:
            worker_module.LOCAL_ITEMS = held
        decoded_rate, decoded_cpu = decoding.rates
        print(
            "worker decoding every item (as in a group):          "
            f"{decoded_rate:>9,.0f} records/s ({decoded_cpu:,.0f} per CPU s; "
            f"{decoded_cpu / bare_cpu:.2f} of the bare loop by CPU time)"
        )
        sent = worker.metrics.summary_bytes._value.get()
        print(
            f"summaries topic: {sent:,.0f} bytes for {input_bytes:,} input bytes "
            f"({sent / input_bytes:.2f} of the input; compression_type "
            f"{worker.kafka.compression_type})"
        )
        print(
            f"the model stage's last release came {worker.drain_s:.1f} s after the last input "
            f"batch ({worker.last_cpu - worker.input_last_cpu:.2f} s of CPU: the rest waits for "
            "the partitions' idle markers, idle_after_ms once input stops)"
        )
        if args.against:
            await asyncio.to_thread(against, args.against, args.against_rounds, bs, bulk, total)
        for compression in args.compare_compression:
            peer = await run_worker(
                bs,
                bulk,
                f"bench-bulk-{compression}",
                total,
                300,
                compression=compression,
            )
            peer_rate, peer_cpu = peer.rates
            print(
                f"worker with compression_type {compression}: {peer_rate:>9,.0f} records/s "
                f"({peer_rate / rate:.2f} of the default's; by CPU time {peer_cpu / rate_cpu:.2f})"
            )

        if args.slice_ms:
            # An offline profile, so the input stages sum from the first prediction (with
            # a warm-up reference they send items until it reaches them, which in a
            # backlog read this fast is most of the stream).
            sliced_settings = replace(SETTINGS, slice_ms=args.slice_ms)
            profiles = {"credit-risk": stage2_cost.offline_profile(labelled=True)}
            for local, base, base_cpu in (
                (held, rate, rate_cpu),
                (0, decoded_rate, decoded_cpu),
            ):
                worker_module.LOCAL_ITEMS = local
                try:
                    sliced = await run_worker(
                        bs,
                        bulk,
                        f"bench-bulk-sliced{local}",
                        total,
                        300,
                        sliced_settings,
                        references=profiles,
                    )
                finally:
                    worker_module.LOCAL_ITEMS = held
                sliced_rate, sliced_cpu = sliced.rates
                sliced_bytes = sliced.metrics.summary_bytes._value.get()
                print(
                    f"worker with slice_ms {args.slice_ms}"
                    f"{'' if local else ', decoding every item'}: {sliced_rate:>9,.0f} "
                    f"records/s ({sliced_rate / base:.2f} of the same without slices, "
                    f"{sliced_rate / bare:.2f} of the bare loop; by CPU time "
                    f"{sliced_cpu / base_cpu:.2f} and {sliced_cpu / bare_cpu:.2f}); "
                    f"summaries topic {sliced_bytes / input_bytes:.2f} of the input's bytes"
                )

        # The paced run's traffic (four models) costs the worker more per record than the
        # one model above (a warm-up reference built per model; more, smaller batches per
        # model in the model stage): its pace is a fraction of the worker's throughput on
        # that traffic, measured here.
        fleet_topics = topics("fleet")
        await create_topics(kafka, fleet_topics, PARTITIONS)
        fleet_total = await produce(bs, fleet_topics, fleet(args.predictions // 4, 50))
        fleet_worker = await run_worker(bs, fleet_topics, "bench-fleet", fleet_total, 300)
        fleet_rate, fleet_cpu = fleet_worker.rates
        print(
            f"worker on the paced run's traffic (4 models): {fleet_rate:>9,.0f} records/s "
            f"({fleet_cpu:,.0f} per CPU s; {fleet_rate / rate:.2f} of one model's)"
        )

        # The paced worker starts as `driftline worker` does: the runs above and the stream
        # they read are dropped, and what is left is collected and frozen (`tune_gc`), so
        # that its cycle collector does not walk this process's leftovers (the workers
        # above stay referenced otherwise, with their state).
        del events, worker, decoding, fleet_worker
        peer = sliced = None
        tune_gc()
        paced = topics("paced")
        await create_topics(kafka, paced, PARTITIONS)
        target_rate = fleet_rate * args.paced_fraction
        n = int(target_rate * args.paced_seconds / 4 / 1.3)
        expected = len(fleet(n, 50))
        worker_task = asyncio.create_task(run_worker(bs, paced, "bench-paced", expected, 600))
        await asyncio.sleep(4)  # let the group join before traffic starts
        producer = multiprocessing.get_context("spawn").Process(
            target=paced_producer, args=(bs, paced, n, target_rate)
        )
        with collector_pauses() as pauses:
            producer.start()
            paced_worker = await worker_task
            producer.join()
        lat = np.array(paced_worker.latencies)
        print(
            f"\npaced at {target_rate:,.0f} records/s "
            f"({args.paced_fraction:.0%} of the worker's throughput on it) from a "
            f"separate process, {expected:,} records"
        )
        print(
            f"produce-to-processed latency: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
            f"p99 {np.percentile(lat, 99) * 1000:.0f} ms, max {lat.max() * 1000:.0f} ms"
        )
        batch_ms = np.array(paced_worker.batch_s) * 1000
        turns_ms = np.array(paced_worker.turns_s or [0.0]) * 1000
        print(
            f"what held the loop: batches p99 {np.percentile(batch_ms, 99):.0f} ms, longest "
            f"{batch_ms.max():.0f} ms; {len(turns_ms)} checkpoint turns, mean "
            f"{turns_ms.mean():.0f} ms, longest {turns_ms.max():.0f} ms; {len(pauses)} "
            f"collections, longest {max(pauses, default=0.0) * 1000:.0f} ms"
        )
        # The floor: the same producer at the same rate, read by the bare loop.
        floor_topics = topics("paced-bare")
        await create_topics(kafka, floor_topics, PARTITIONS)
        reading = asyncio.create_task(bare_paced(bs, floor_topics, expected))
        await asyncio.sleep(1)
        producer = multiprocessing.get_context("spawn").Process(
            target=paced_producer, args=(bs, floor_topics, n, target_rate)
        )
        producer.start()
        floor = await reading
        producer.join()
        print(
            f"the bare loop at the same rate (the floor of producer, broker and client): "
            f"p50 {np.percentile(floor, 50) * 1000:.0f} ms, p99 "
            f"{np.percentile(floor, 99) * 1000:.0f} ms; the worker's p99 is "
            f"{np.percentile(lat, 99) / np.percentile(floor, 99):.1f} times it"
        )
        inputs = await record_times(bs, [paced.predictions, paced.outcomes])
        decisions = await record_times(
            bs, [paced_worker.topics.alerts, paced_worker.topics.retrain]
        )
        decided = [
            (ts - inputs[d["evidence"]["trigger_event_id"]][0]) / 1000
            for ts, d in decisions.values()
            if d["evidence"].get("trigger_event_id") in inputs
        ]
        if decided:
            print(
                f"produce-to-decision latency ({len(decided)} decisions): "
                f"p50 {statistics.median(decided) * 1000:.0f} ms, "
                f"max {max(decided) * 1000:.0f} ms   target p99 < 1000 ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", type=int, default=150_000)
    parser.add_argument("--paced-seconds", type=float, default=20)
    parser.add_argument(
        "--compare-compression",
        nargs="*",
        default=[],
        metavar="TYPE",
        help="also run the worker over the same records with these compression_type values",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run commit REV's worker over the same records (e.g. 7eb953a, the last "
        "one-stage worker), alternating with this tree's, each in a fresh process",
    )
    parser.add_argument("--against-rounds", type=int, default=2)
    parser.add_argument(
        "--slice-ms",
        type=int,
        default=0,
        help="also run the worker with this slice_ms (the hot-model set-up: predictions "
        "summed per slice in the input stages once a version's warm-up reference reaches "
        "them, labels in blocks)",
    )
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.5,
        help="paced rate as a fraction of the measured worker throughput",
    )
    asyncio.run(main(parser.parse_args()))
