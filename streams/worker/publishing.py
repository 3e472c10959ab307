"""Delivery of the worker's outputs (decisions, dead letters), with retries and a clear stop.

Outputs are queued on the producer as they are made and confirmed together before each
checkpoint (flush, state, commit): the input offsets a checkpoint covers are never
written before every output of that input has been acknowledged by the broker. A refusal
that can pass (a broker away, a leader moving, a delivery timeout) is retried with
backoff for up to ``publish_timeout_s``; one that cannot (a message too large, a topic
that is not there, authorisation refused) raises `PublishError` with one line that says
what to do, and the worker stops without checkpointing past it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.exceptions import PublishError
from driftline.streams.faults import Backoff

RETRY_BACKOFF_S = 0.1
"""First wait before a retry; doubled after each failed attempt."""

MAX_RETRY_BACKOFF_S = 5.0
"""Longest wait between retries: a broker that is back is used within five seconds."""


def retryable(exc: BaseException) -> bool:
    """Whether a producer error can pass by itself. aiokafka does not mark its delivery
    timeout retriable, but a timed-out delivery is exactly what a broker outage gives."""
    return isinstance(exc, KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
    )


@dataclass(slots=True)
class _Queued:
    topic: str
    value: bytes
    key: bytes | None
    future: asyncio.Future[Any]
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_ms: int | None = None


async def send_dead_letters(
    publisher: Publisher, topic: str, letters: list[DeadLetter], budget: int, now_ms: int
) -> None:
    """Queue dead letters, each cut to fit ``budget`` bytes with its key (see
    `DeadLetter.to_json`): a dead letter must always be deliverable."""
    for dead in letters:
        value = dead.to_json(now_ms, budget - len(dead.key or b""))
        await publisher.send(topic, value, dead.key)


class Publisher:
    """Sends outputs through one producer and confirms their delivery in order.

    Parameters
    ----------
    producer
        A started producer (``acks=all``; idempotent on real Kafka).
    timeout_s
        How long a retryable refusal is retried before the worker gives up on it.
    on_retry
        Called once per retry (a metrics counter).
    """

    def __init__(self, producer: AIOKafkaProducer, timeout_s: float, on_retry: Any = None) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.on_retry = on_retry
        self.queued: list[_Queued] = []

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one output (to the key's partition, or to ``partition``; with the record
        timestamp ``timestamp_ms`` when given, else the producer's clock); its delivery is
        awaited by `confirm`."""
        future = await self._send(topic, value, key, partition, headers, timestamp_ms)
        self.queued.append(_Queued(topic, value, key, future, partition, headers, timestamp_ms))

    def take(self) -> list[_Queued]:
        """The outputs queued so far, handed to the caller to `confirm`: a checkpoint taken
        now confirms these while later outputs queue anew."""
        queued, self.queued = self.queued, []
        return queued

    async def confirm(self, queued: list[_Queued] | None = None) -> None:
        """Wait until the outputs ``queued`` (by default every output queued) are
        acknowledged, re-sending retryable failures.

        Raises `PublishError` when an output cannot be delivered.
        """
        await self.producer.flush()
        for item in self.take() if queued is None else queued:
            backoff = Backoff(self.timeout_s, RETRY_BACKOFF_S, MAX_RETRY_BACKOFF_S)
            while True:
                try:
                    await item.future
                    break
                except KafkaError as exc:
                    self._give_up_unless_retryable(exc, item.topic, item.value, backoff)
                    await self._wait(backoff.next_pause())
                    item.future = await self._send(
                        item.topic,
                        item.value,
                        item.key,
                        item.partition,
                        item.headers,
                        item.timestamp_ms,
                    )

    async def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        backoff = Backoff(self.timeout_s, RETRY_BACKOFF_S, MAX_RETRY_BACKOFF_S)
        while True:
            try:
                return await self.producer.send(
                    topic,
                    value,
                    key=key,
                    partition=partition,
                    headers=headers,
                    timestamp_ms=timestamp_ms,
                )
            except KafkaError as exc:
                self._give_up_unless_retryable(exc, topic, value, backoff)
                await self._wait(backoff.next_pause())

    async def _wait(self, seconds: float) -> None:
        if self.on_retry is not None:
            self.on_retry()
        await asyncio.sleep(seconds)

    def _give_up_unless_retryable(
        self, exc: KafkaError, topic: str, value: bytes, backoff: Backoff
    ) -> None:
        if not retryable(exc):
            raise PublishError(
                f"cannot publish {len(value):,} bytes to {topic!r}: {type(exc).__name__}: "
                f"{exc}; fix the topic or its limits (max_request_size, message.max.bytes, "
                "ACLs) and restart: nothing past the last checkpoint was committed"
            ) from exc
        if backoff.expired:
            raise PublishError(
                f"cannot publish to {topic!r}: still failing after {self.timeout_s:g} s "
                f"({type(exc).__name__}: {exc}); check the broker, then restart: nothing "
                "past the last checkpoint was committed"
            ) from exc
