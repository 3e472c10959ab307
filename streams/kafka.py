"""Kafka client options, topic creation and partitioning shared by worker, demo and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from driftline.detectors.drift.reference import ReferenceProfile
from driftline.detectors.settings import check_table
from driftline.schemas.exceptions import ConfigError, DriftlineError
from driftline.streams.config import Topics
from driftline.streams.faults import Silenced

log = logging.getLogger("driftline.kafka")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach the cluster. Every field has a ``DRIFTLINE_`` environment variable."""

    bootstrap_servers: str = "localhost:9092"
    """Comma-separated host:port list."""
    client_id: str = "driftline"
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with the SASL protocols."""
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    """Never shown: left out of ``repr`` (and so of every log line and error message that
    prints the settings)."""
    ssl_cafile: str | None = None
    """CA bundle that signed the brokers' certificates."""
    ssl_certfile: str | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: str | None = None
    max_request_size: int = 1_048_576
    """Largest record the producer sends (aiokafka's and Kafka's default, 1 MiB). Dead
    letters are cut to fit below it; raise it together with the broker's
    ``message.max.bytes``."""
    enable_idempotence: bool = True
    """Idempotent producer (no duplicates from producer retries). Real Kafka supports it;
    the embedded test broker does not, so tests and the demo switch it off."""
    compression_type: str = "none"
    """How the producer compresses what the worker writes: ``none``, ``gzip``, ``snappy``,
    ``lz4`` or ``zstd``. The summaries topic carries about two thirds of the input's
    bytes; lz4 takes them to under half, zstd to a quarter, but the worker compresses on
    its own CPU: `benchmarks/worker_throughput.py` measured it at 0.93 of its records per
    CPU second with zstd and 0.78 with lz4 (aiokafka writes lz4 at level 9). So none by
    default, Kafka's own producer default, where throughput is the worker's limit; input
    topics may use any of the five."""

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"{self.security_protocol} needs sasl_mechanism, one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(f"{self.security_protocol} needs sasl_username and sasl_password")

        if self.compression_type not in COMPRESSION_TYPES:
            raise ConfigError(
                f"compression_type must be one of {', '.join(COMPRESSION_TYPES)}, "
                f"got {self.compression_type!r}"
            )
        if self.max_request_size < MIN_REQUEST_SIZE:
            raise ConfigError(
                f"max_request_size must be at least {MIN_REQUEST_SIZE} bytes (a checkpoint chunk "
                f"must fit), got {self.max_request_size}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> KafkaSettings:
        check_table(cls, values, "kafka")
        return cls(**values)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka consumers, producers and admin clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    def producer_options(self) -> dict[str, Any]:
        return {
            **self.client_options(),
            "acks": "all",
            "enable_idempotence": self.enable_idempotence,
            "linger_ms": PRODUCER_LINGER_MS,
            "max_request_size": self.max_request_size,
            "compression_type": None if self.compression_type == "none" else self.compression_type,
        }


MIN_REQUEST_SIZE = 600_000
"""Smallest usable ``max_request_size``: a checkpoint chunk (512 KiB, see
`streams.checkpointing.store.CHUNK_BYTES`) with its key and headers must fit."""

PRODUCER_LINGER_MS = 5
"""Outputs are low-volume; a few milliseconds of batching costs little latency."""


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


STARTUP_RETRY_S = 0.5
"""First wait between attempts to reach a broker at start-up; doubled up to
`MAX_STARTUP_RETRY_S`."""

MAX_STARTUP_RETRY_S = 5.0
"""Longest wait between start-up attempts: a broker that comes up is used within five
seconds."""


class BrokerUnavailable(DriftlineError):
    """No broker answered at the bootstrap address within the start-up timeout."""


async def wait_for_broker(kafka: KafkaSettings, timeout_s: float) -> float:
    """Wait until a broker answers at ``kafka.bootstrap_servers``; returns the seconds
    waited. Raises `BrokerUnavailable` after ``timeout_s`` (one line naming the address).
    """
    with Silenced():
        return await _wait_for_broker(kafka, timeout_s)


async def _wait_for_broker(kafka: KafkaSettings, timeout_s: float) -> float:
    started = time.monotonic()
    backoff = STARTUP_RETRY_S
    warned = False
    while True:
        admin = AIOKafkaAdminClient(**kafka.client_options())
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            waited = time.monotonic() - started
            if waited + backoff > timeout_s:
                tls = (
                    f"; security_protocol is {kafka.security_protocol}: check that this "
                    "listener speaks it and that the TLS/SASL settings match the broker's"
                    if kafka.security_protocol != "PLAINTEXT"
                    else ""
                )
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {kafka.bootstrap_servers} within "
                    f"{timeout_s:g} s ({exc}); check bootstrap_servers and that the broker "
                    f"is up, or raise startup_timeout_s{tls}"
                ) from None
            if not warned:
                log.warning(
                    "no Kafka broker at %s yet; retrying for up to %g s",
                    kafka.bootstrap_servers,
                    timeout_s,
                )
                warned = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_STARTUP_RETRY_S)
            continue
        else:
            return time.monotonic() - started
        finally:
            await admin.close()


async def preflight(kafka: KafkaSettings, topics: Sequence[str]) -> None:
    """What a worker needs of the broker, checked before anything starts, so that a
    mistake ends with one line saying what to do: every topic the worker reads or writes
    exists, and an idempotent producer is accepted when ``enable_idempotence`` is on."""
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = sorted(set(topics) - existing)
    if missing:
        raise ConfigError(
            f"topic(s) {', '.join(missing)} do not exist on {kafka.bootstrap_servers}; "
            "create them with 'driftline topics create' (same flags or --config)"
        )
    if not kafka.enable_idempotence:
        return
    producer = AIOKafkaProducer(**kafka.producer_options())
    try:
        with Silenced(everything=True):
            await producer.start()
    except KafkaError as exc:
        raise ConfigError(
            f"the broker at {kafka.bootstrap_servers} refused an idempotent producer "
            f"({type(exc).__name__}: {exc}); use a broker that supports idempotent "
            "producers, or set enable_idempotence = false (--no-idempotence; a retried "
            "send may then publish a decision twice, which consumers dedupe by decision_id)"
        ) from None
    finally:
        await producer.stop()


async def create_topics(
    kafka: KafkaSettings,
    topics: Topics,
    partitions: int,
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic driftline uses; existing ones are left alone. Returns the new ones.

    Input, summaries, re-keyed, dead-letter and decision topics get ``partitions``
    partitions (the re-keyed topic is used only by foreign input formats, and its
    partition count is stage 1's parallelism there); the state and references topics get
    one partition with ``cleanup.policy=compact`` (only the latest checkpoint per key
    matters).
    """
    if partitions < 1:
        raise ConfigError(f"partitions must be at least 1, got {partitions}")
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, replication_factor)
            for name in (
                topics.predictions,
                topics.outcomes,
                topics.deadletter,
                topics.alerts,
                topics.retrain,
                topics.rollback,
                topics.summaries,
                topics.rekeyed,
            )
        ]
        wanted += [
            NewTopic(name, 1, replication_factor, topic_configs={"cleanup.policy": "compact"})
            for name in (topics.state, topics.references)
        ]
        new = [t for t in wanted if t.name not in existing]
        if new:
            # Another process may create them between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()


async def publish_profile(
    kafka: KafkaSettings, topic: str, key: str, profile: ReferenceProfile
) -> None:
    """Send a reference profile to the references topic, keyed by model (or model@version)."""
    producer = AIOKafkaProducer(**kafka.producer_options())
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps(profile.to_dict()), key=key.encode())
    finally:
        await producer.stop()


async def read_to_highwater(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout_ms: int
) -> AsyncIterator[list[ConsumerRecord]]:
    """The records of the assigned partitions ``tps`` from their positions to their high
    watermarks, a fetch at a time. The end is taken from the fetch responses' high
    watermark, never from ``end_offsets()`` (which some Kafka-compatible brokers answer
    wrongly: tansu gives the newest record batch's first offset + 1)."""
    while True:
        batch = await consumer.getmany(*tps, timeout_ms=timeout_ms)
        for tp in tps:
            if batch.get(tp):
                yield batch[tp]
        if batch:
            continue
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                break
        else:
            return
