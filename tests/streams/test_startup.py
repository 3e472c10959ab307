"""A broker that is not there yet at start-up: waited for, or one clear line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from driftline.streams.broker import EmbeddedBroker, free_port
from driftline.streams.kafka import BrokerUnavailable, KafkaSettings, wait_for_broker


def test_worker_without_a_broker_exits_with_one_line_naming_the_address(tmp_path) -> None:
    """No broker within startup_timeout_s: exit 2, one error line with the address, no
    traceback, and nothing left in the working directory."""
    port = free_port()
    exe = Path(sys.executable).parent / "driftline"
    env = {**os.environ, "DRIFTLINE_STARTUP_TIMEOUT_S": "1.5"}
    started = time.monotonic()
    result = subprocess.run(
        [str(exe), "worker", "--bootstrap-servers", f"127.0.0.1:{port}", "--no-idempotence"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"driftline: error: no Kafka broker answered at 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []


async def test_a_broker_that_comes_up_within_the_timeout_is_used() -> None:
    """The broker starts 2 s after the worker began waiting: the wait ends once it
    answers, well before the timeout."""
    port = free_port()
    broker = EmbeddedBroker(port)
    timer = threading.Timer(2.0, broker.start)
    timer.start()
    try:
        waited = await wait_for_broker(KafkaSettings(f"127.0.0.1:{port}"), timeout_s=30)
    finally:
        timer.join()
        broker.stop()
    assert 1.5 < waited < 15


async def test_the_wait_gives_up_after_the_timeout() -> None:
    """Nobody listens: BrokerUnavailable after about the timeout, naming the address."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port} within 1 s"):
        await wait_for_broker(KafkaSettings(f"127.0.0.1:{port}"), timeout_s=1)
    assert time.monotonic() - started < 5


async def test_worker_logs_json_lines_without_library_chatter(broker, tmp_path) -> None:
    """`driftline worker --log-format json`: every line it writes is one JSON object with
    time, level, logger and message; faust, mode and aiokafka say nothing at the default
    level; SIGTERM ends it with exit 0."""
    import json  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from tests.kafka_helpers import setup_topics, topics_for, write_config  # noqa: PLC0415

    topics = topics_for("logjson")
    await setup_topics(broker, topics, 1)
    config = write_config(tmp_path / "c.toml", topics, "g-logjson")
    exe = Path(sys.executable).parent / "driftline"
    env = {**os.environ, "DRIFTLINE_BOOTSTRAP_SERVERS": broker}
    child = subprocess.Popen(  # noqa: ASYNC220 (a child to signal; waited for in a thread)
        [str(exe), "worker", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    await asyncio.sleep(8)  # joins the group and takes its partitions
    child.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(child.communicate, timeout=60)
    lines = [line for line in (out + err).decode().splitlines() if line.strip()]
    assert child.returncode == 0, lines
    assert all(line.startswith("{") for line in lines), lines
    records = [json.loads(line) for line in lines]
    assert records and all(set(r) >= {"ts", "level", "logger", "message"} for r in records)
    assert any(r["logger"].startswith("driftline") for r in records)
    chatter = [r for r in records if r["logger"].split(".")[0] in {"faust", "mode", "aiokafka"}]
    assert all(r["level"] in {"warning", "error"} for r in chatter), chatter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def _worker_once(broker: str, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "driftline"
    return subprocess.run(
        [str(exe), "worker", "--bootstrap-servers", broker, *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def _topic_flags(prefix: str) -> list[str]:
    from driftline.streams.config import Topics  # noqa: PLC0415

    topics = Topics.prefixed(prefix)
    return [x for name in Topics.names() for x in (f"--{name}-topic", getattr(topics, name))]


def test_missing_topics_are_one_line_naming_them_and_the_fix(broker, tmp_path) -> None:
    """Topics that do not exist: exit 2 and one line naming them and `topics create`."""
    result = _worker_once(broker, tmp_path, "--no-idempotence", *_topic_flags("nosuch"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    assert "nosuch.predictions" in lines[0] and "driftline topics create" in lines[0]
    assert "Traceback" not in result.stderr


async def test_a_broker_without_idempotent_producers_is_one_line(broker, tmp_path) -> None:
    """The embedded broker has no idempotent producer: with enable_idempotence on (the
    default), exit 2 and one line that says how to go on."""
    from driftline.streams.config import Topics  # noqa: PLC0415
    from tests.kafka_helpers import setup_topics  # noqa: PLC0415

    await setup_topics(broker, Topics.prefixed("idem"), 1)
    result = await asyncio.to_thread(_worker_once, broker, tmp_path, *_topic_flags("idem"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    assert "refused an idempotent producer" in lines[0] and "--no-idempotence" in lines[0]


def test_a_foreign_format_names_its_missing_topics(broker, tmp_path) -> None:
    """With --input-format kserve the pre-flight check asks for the re-keyed topic and the
    log topic (not for what that format does not use)."""
    flags = _topic_flags("nosuch2")
    result = _worker_once(broker, tmp_path, "--no-idempotence", "--input-format", "kserve", *flags)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    assert "nosuch2.rekeyed" in lines[0] and "driftline topics create" in lines[0]
