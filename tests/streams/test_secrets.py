"""SASL passwords never appear in logs, metrics, checkpoints, decisions or error messages."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import urllib.request
import zlib
from dataclasses import replace
from pathlib import Path

from driftline.streams.broker import free_port
from driftline.streams.worker import Worker, WorkerSettings
from tests.kafka_helpers import (
    TEST_WORKER,
    config_for,
    kafka,
    produce,
    read_all,
    setup_topics,
    topics_for,
    wait_committed,
)
from tests.streams.worker.test_worker import SMALL

SECRET = "s3cr3t-Pa55-zz9"


def readable(raw: bytes) -> bytes:
    """A state-topic record as text: checkpoint chunks are zlib-compressed."""
    try:
        return zlib.decompress(raw)
    except zlib.error:
        return raw


def test_sasl_password_stays_out_of_the_cli_output(broker, tmp_path) -> None:
    """A SASL worker that cannot authenticate (the embedded broker has no SASL) and a
    bad setting next to the password: neither message shows it."""
    exe = Path(sys.executable).parent / "driftline"
    config = tmp_path / "w.toml"
    kafka_table = (
        '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
        f'sasl_username = "driftline"\nsasl_password = "{SECRET}"\n'
        "enable_idempotence = false\n"
    )
    outputs = []
    for extra in ("", 'sasl_colour = "red"\n'):
        config.write_text(kafka_table + extra)
        result = subprocess.run(
            [str(exe), "worker", "--config", str(config), "--bootstrap-servers", broker],
            capture_output=True,
            text=True,
            env={**os.environ, "DRIFTLINE_STARTUP_TIMEOUT_S": "2"},
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        outputs.append(result.stdout + result.stderr)
    assert "sasl_colour" in outputs[1]
    assert all(SECRET not in out for out in outputs), outputs


async def test_sasl_password_stays_out_of_logs_metrics_state_and_decisions(
    broker, make_stream, caplog
) -> None:
    """A worker configured with a password (unused on PLAINTEXT) runs a drifting stream:
    the password is in none of its log records, metrics, state, decisions, dead letters."""
    topics = topics_for("secret")
    await setup_topics(broker, topics, 1)
    events = list(make_stream(scenario="mean_shift", n_predictions=8_000, change_at=4_000, seed=5))
    total = sum((await produce(broker, topics, events, [(topics.predictions, b"{")])).values())
    settings = replace(kafka(broker), sasl_username="driftline", sasl_password=SECRET)
    assert SECRET not in repr(settings)
    port = free_port()
    worker_settings = WorkerSettings(group_id="g-secret", metrics_port=port, **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), settings, worker_settings)
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(worker.run())
    try:
        await wait_committed(broker, "g-secret", topics, 1, total, tasks=[task])
        url = f"http://127.0.0.1:{port}/metrics"
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    records = []
    for topic in (topics.state, topics.alerts, topics.retrain, topics.deadletter):
        records += await read_all(broker, topic)
    written = b"".join(readable(v) for v in records)
    assert b"data_drift" in written and b"driftline_records" in metrics
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records
    assert SECRET not in logged
    assert SECRET.encode() not in metrics
    assert SECRET.encode() not in written
