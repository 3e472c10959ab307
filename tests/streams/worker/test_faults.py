"""A network cut between the worker and the broker: a couple of log lines, not a flood,
and the worker resumes by itself with nothing lost."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from driftline.schemas.decode import encode
from driftline.streams.broker import EmbeddedBroker, free_port
from driftline.streams.cli import main
from driftline.streams.faults import ConnectionLog
from driftline.streams.metrics import Metrics
from driftline.streams.simulation.traffic import StreamSpec
from driftline.streams.worker import Worker, WorkerSettings
from tests import ROOT
from tests.conftest import stream
from tests.kafka_helpers import (
    TEST_WORKER,
    checkpoints,
    committed,
    config_for,
    decisions,
    kafka,
    produce,
    setup_topics,
    topics_for,
    wait_committed,
    write_config,
)
from tests.streams.worker.test_worker import SMALL
from tests.tcp_proxy import TcpProxy

CUT_S = 8.0
"""Longer than the test session timeout (6 s): the group forgets the worker meanwhile."""

SPEC = StreamSpec(scenario="mean_shift", n_predictions=8_000, change_at=4_000, seed=23)


@pytest.fixture
def proxied_broker():
    """A broker of its own that advertises a proxy's port, and that proxy's ports."""
    proxy_port = free_port()
    with EmbeddedBroker(advertised_port=proxy_port) as broker:
        yield broker.port, proxy_port


async def start_proxy(proxied_broker) -> tuple[TcpProxy, str]:
    """The proxy in front of the broker, started, and the bootstrap address through it."""
    broker_port, proxy_port = proxied_broker
    proxy = TcpProxy(proxy_port, broker_port)
    await proxy.start()
    return proxy, f"127.0.0.1:{proxy_port}"


async def test_a_network_cut_logs_one_line_each_way_and_loses_nothing(
    proxied_broker, caplog
) -> None:
    """Cut for 8 s mid-stream, then restored: the worker logs one warning when the
    connection goes and one when it is back (aiokafka's per-retry errors are counted,
    not shown), resumes by itself and accounts for every record."""
    proxy, bootstrap = await start_proxy(proxied_broker)
    topics = topics_for("cut")
    events = list(stream(SPEC))
    half = len(events) // 2
    await setup_topics(bootstrap, topics, 1)
    first = sum((await produce(bootstrap, topics, events[:half])).values())
    metrics = Metrics()
    settings = WorkerSettings(group_id="g-cut", **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), kafka(bootstrap), settings, metrics)
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(worker.run())
    try:
        await wait_committed(bootstrap, "g-cut", topics, 1, first, tasks=[task])
        caplog.clear()
        await proxy.cut()
        await asyncio.sleep(CUT_S)
        await proxy.restore()
        total = first + sum((await produce(bootstrap, topics, events[half:])).values())
        await wait_committed(bootstrap, "g-cut", topics, 1, total, timeout_s=90, tasks=[task])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    lost = [r for r in shown if r.getMessage().startswith("lost the connection")]
    back = [r for r in shown if "is back after" in r.getMessage()]
    client_lines = [r for r in shown if r.name.startswith("aiokafka")]
    assert (len(lost), len(back)) == (1, 1), [r.getMessage() for r in shown]
    assert len(client_lines) <= 5, [r.getMessage() for r in client_lines]
    errors = metrics.registry.get_sample_value("driftline_broker_connection_errors_total")
    assert errors is not None and errors > len(client_lines)
    assert metrics.registry.get_sample_value("driftline_broker_outages_total") == 1
    print(f"outage: {back[0].getMessage()}; {errors:.0f} client errors counted, not logged")
    (cp,) = (await checkpoints(bootstrap, topics.state, "g-cut")).values()
    counts = cp.state["intake"]["counts"]
    dead = sum(cp.state["dead_letters"].values())
    assert cp.state["consumed"] == total
    assert counts["predictions"] + counts["outcomes"] + counts["duplicates"] + dead == total
    assert await committed(bootstrap, "g-cut", topics, 1) == total
    await proxy.stop()


def test_other_client_errors_pass_through() -> None:
    """Only connection faults are collapsed: any other aiokafka error is shown."""
    filt = ConnectionLog()
    other = logging.LogRecord(
        "aiokafka.consumer", logging.ERROR, "", 0, "Topic %s bad", ("t",), None
    )
    fault = logging.LogRecord(
        "aiokafka.client",
        logging.ERROR,
        "",
        0,
        "Unable connect to node with id %s: %s",
        (1, "x"),
        None,
    )
    assert filt.filter(other) is True
    assert filt.filter(fault) is False
    assert filt.filter(fault) is False
    assert (filt.faults, filt.down_since is not None) == (2, True)
    filt.tick(records_arrived=True)
    assert filt.down_since is None


async def test_a_cut_during_a_checkpoint_write_resumes_with_nothing_lost(
    proxied_broker, monkeypatch
) -> None:
    """The network goes while a checkpoint is being written (after its outputs were
    confirmed, before its state records are acknowledged) and comes back 8 s later: the
    write completes or is superseded, the worker resumes by itself, and the state covers
    every record once."""
    # The module whose checkpoint writer is wrapped:
    from driftline.streams.worker import worker as worker_module  # noqa: PLC0415

    proxy, bootstrap = await start_proxy(proxied_broker)
    topics = topics_for("cutcp")
    events = list(stream(SPEC))
    await setup_topics(bootstrap, topics, 1)
    total = sum((await produce(bootstrap, topics, events)).values())
    reference = replace(
        topics_for("cutcp-ref"), predictions=topics.predictions, outcomes=topics.outcomes
    )
    await setup_topics(bootstrap, reference, 1)
    plain = Worker(
        config_for(reference, SMALL),
        kafka(bootstrap),
        WorkerSettings(group_id="g-cutcp-ref", max_batch_records=500, **TEST_WORKER),
    )
    plain_task = asyncio.create_task(plain.run())
    try:
        await wait_committed(bootstrap, "g-cutcp-ref", reference, 1, total, tasks=[plain_task])
    finally:
        plain.stop()
        await asyncio.wait_for(plain_task, 30)
    expected = {d["decision_id"] for d in await decisions(bootstrap, reference)}
    assert expected
    mine = replace(
        topics_for("cutcp-run"), predictions=topics.predictions, outcomes=topics.outcomes
    )
    await setup_topics(bootstrap, mine, 1)
    real_write = worker_module.write_checkpoint
    writes = 0
    restored = asyncio.Event()

    async def restore_later() -> None:
        await asyncio.sleep(CUT_S)
        await proxy.restore()
        restored.set()

    async def cut_mid_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        if writes == 1:
            await proxy.cut()
            asyncio.get_running_loop().create_task(restore_later())
        return await real_write(*args, **kwargs)

    monkeypatch.setattr(worker_module, "write_checkpoint", cut_mid_write)
    settings = WorkerSettings(group_id="g-cutcp", max_batch_records=500, **TEST_WORKER)
    worker = Worker(config_for(mine, SMALL), kafka(bootstrap), settings)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(restored.wait(), 60)
        await wait_committed(bootstrap, "g-cutcp", mine, 1, total, timeout_s=90, tasks=[task])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert writes >= 1
    assert {d["decision_id"] for d in await decisions(bootstrap, mine)} == expected
    (cp,) = (await checkpoints(bootstrap, mine.state, "g-cutcp")).values()
    counts = cp.state["intake"]["counts"]
    assert cp.state["consumed"] == total
    assert counts["predictions"] + counts["outcomes"] + counts["duplicates"] == total
    await proxy.stop()


BROKER_NAME = "broker.driftline.test"
"""The name the broker advertises: each process resolves it to its own proxy."""
ROUTES = {"test": "127.0.0.1", "a": "127.0.0.2", "b": "127.0.0.3"}
"""A loopback address per process: the test's clients and each worker have their own
proxy, all on one port (the advertised one), so one route can be cut alone."""
TWO_SPEC = StreamSpec(scenario="mean_shift", n_predictions=24_000, change_at=8_000, seed=43)
TWO_DETECTORS = {"warmup_events": 3_000, "window_events": 2_000, "label_warmup_events": 1_000}
ACQUIRED = re.compile(r"partition (\d+): (?:restored|new shard)")


def acquired(log: Path, since: int) -> set[int]:
    """Input partitions a worker took (restored or new) after byte ``since`` of its log."""
    return {int(p) for p in ACQUIRED.findall(log.read_bytes()[since:].decode(errors="replace"))}


def start_routed_worker(route: str, port: int, config: Path, log: Path) -> subprocess.Popen:
    """A ``driftline worker`` process that reaches the broker through its own proxy."""
    env = {
        **os.environ,
        "DRIFTLINE_BOOTSTRAP_SERVERS": f"{BROKER_NAME}:{port}",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.resolve_as",
                BROKER_NAME,
                ROUTES[route],
                "worker",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def exit_code(run: subprocess.Popen, timeout_s: float) -> int | None:
    """The process's exit code, waiting without blocking the event loop (None: still
    running after ``timeout_s``, then killed)."""
    for _ in range(int(timeout_s / 0.1)):
        if run.poll() is not None:
            return run.returncode
        await asyncio.sleep(0.1)
    run.kill()
    return None


async def wait_for(condition, timeout_s: float, what: str, runs=()) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        for run in runs:
            assert run.poll() is None, f"a worker exited ({run.returncode}) while {what}"
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.2)


async def test_one_of_two_workers_cut_off_hands_over_and_takes_back(tmp_path, monkeypatch) -> None:
    """Two worker processes on 4 partitions, each with its own network route to the
    broker. Worker a's route is cut mid-stream for longer than the session timeout: its
    partitions move to worker b; the route comes back and a rejoins and takes partitions
    back. Decision ids equal an uninterrupted run's (replay's, which equals the
    worker's: tests/streams/worker/test_recovery.py), every record is counted once, and both exit 0.
    The state trimmer runs every second meanwhile (refused by this broker; harmless)."""
    events = list(stream(TWO_SPEC))
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_bytes(b"".join(encode(e) + b"\n" for e in events))
    replay_config = tmp_path / "replay.toml"
    replay_config.write_text(
        "[detectors]\n" + "".join(f"{k} = {v}\n" for k, v in TWO_DETECTORS.items())
    )
    out = tmp_path / "replay.jsonl"
    args = ["replay", str(recorded), "--partitions", "4", "--config", str(replay_config)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    expected = {orjson.loads(line)["decision_id"] for line in out.read_bytes().splitlines()}
    assert expected

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real(ROUTES["test"] if host == BROKER_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = free_port()
    with EmbeddedBroker(advertised_port=port, advertised_host=BROKER_NAME) as broker:
        proxies = {name: TcpProxy(port, broker.port, addr) for name, addr in ROUTES.items()}
        for proxy in proxies.values():
            await proxy.start()
        bootstrap = f"{BROKER_NAME}:{port}"
        topics = topics_for("cut2")
        await setup_topics(bootstrap, topics, 4)
        half = len(events) // 2
        first = sum((await produce(bootstrap, topics, events[:half])).values())
        config = write_config(tmp_path / "w.toml", topics, "g-cut2", TWO_DETECTORS)
        config.write_text(
            config.read_text().replace(
                "[worker]\n", "[worker]\nmax_batch_records = 500\nstate_trim_interval_s = 1\n"
            )
        )
        logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
        runs = {name: start_routed_worker(name, port, config, logs[name]) for name in logs}
        try:
            await wait_for(
                lambda: all(acquired(log, 0) for log in logs.values()),
                60,
                "both workers took partitions",
                runs.values(),
            )
            while await committed(bootstrap, "g-cut2", topics, 4) < first * 0.3:
                await wait_for(lambda: True, 1, "", runs.values())
                await asyncio.sleep(0.2)
            marks = {name: log.stat().st_size for name, log in logs.items()}
            await proxies["a"].cut()
            await wait_for(
                lambda: acquired(logs["b"], marks["b"]) == {0, 1, 2, 3},
                60,
                "worker b took every partition",
                runs.values(),
            )
            cut_for = TEST_WORKER["session_timeout_ms"] / 1000 * 1.5
            await asyncio.sleep(cut_for)
            back = logs["a"].stat().st_size
            await proxies["a"].restore()
            total = first + sum((await produce(bootstrap, topics, events[half:])).values())
            await wait_for(
                lambda: acquired(logs["a"], back),
                90,
                "worker a took partitions back",
                runs.values(),
            )
            try:
                await wait_committed(bootstrap, "g-cut2", topics, 4, total, timeout_s=120)
            except AssertionError:
                for name, log in logs.items():
                    print(f"--- worker {name}'s log (tail) ---\n{log.read_text()[-6000:]}")
                raise
            found = await decisions(bootstrap, topics)
            recovered = await checkpoints(bootstrap, topics.state, "g-cut2")
        finally:
            for run in runs.values():
                run.send_signal(signal.SIGTERM)
            # Waited for without blocking: their route to the broker is this event loop.
            codes = {name: await exit_code(run, 60) for name, run in runs.items()}
            for proxy in proxies.values():
                await proxy.stop()
    assert codes == {"a": 0, "b": 0}, logs["a"].read_text()[-3000:]
    assert {d["decision_id"] for d in found} == expected
    assert sum(c.state["consumed"] for c in recovered.values()) == total
    assert sum(c.state["intake"]["counts"]["duplicates"] for c in recovered.values()) == 0
    text = logs["a"].read_text()
    assert "lost the connection to the Kafka broker" in text
    assert "is back after" in text
    print(
        f"a lost its route for {cut_for:.0f} s; b took {sorted(acquired(logs['b'], marks['b']))}, "
        f"a took back {sorted(acquired(logs['a'], back))}"
    )
