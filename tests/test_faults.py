"""A network cut between the worker and the broker: a couple of log lines, not a flood,
and the worker resumes by itself with nothing lost."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.faults import ConnectionLog
from streams.metrics import Metrics
from streams.simulate import StreamSpec
from streams.worker import Worker, WorkerSettings

from .conftest import stream
from .kafka_helpers import (
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
)
from .tcp_proxy import TcpProxy
from .test_worker import SMALL

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
    import streams.worker  # noqa: PLC0415 (the module whose checkpoint writer is wrapped)

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
    real_write = streams.worker.write_checkpoint
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

    monkeypatch.setattr(streams.worker, "write_checkpoint", cut_mid_write)
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
