"""One line when the broker goes away, one when it is back: not one error per retry.

aiokafka logs every failed fetch, metadata refresh, heartbeat and connect attempt while a
broker is unreachable (about 70 lines a second here), and recovers by itself. That flood
hides the errors that matter. `ConnectionLog` is a logging filter on aiokafka's loggers:
the first connection fault of an outage becomes one warning of ours, the rest are
counted (``driftline_broker_connection_errors_total``) and dropped, and when records flow
again, or no fault was seen for `RECOVERED_AFTER_S`, one line says how long the outage
lasted and how many retries it took. Every other aiokafka record passes untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NotCoordinatorForGroupError,
    RequestTimedOutError,
)

log = logging.getLogger("driftline.broker")

RECOVERED_AFTER_S: Final = 5.0
"""An outage is over once this long has passed without a connection fault (on an idle
topic no records arrive to say so). aiokafka retries every 100 ms or so while a broker is
away, so five quiet seconds mean it answers again."""

CONNECTION_ERRORS: Final = (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    KafkaTimeoutError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
    ConnectionError,
    asyncio.TimeoutError,
)
"""Errors that mean "the broker is not reachable now", whatever aiokafka was doing."""

CONNECTION_MESSAGES: Final = (
    "Unable connect to",
    "Unable to update metadata from",
    "Heartbeat session expired",
    "Failed fetch messages from",
    "Failed fetch offsets from",
    "Heartbeat send request failed",
    "Group Coordinator Request failed",
    "Coordinator dead",
    "Marking the coordinator dead",
)
"""Message templates aiokafka logs for the same faults when the error is not an argument."""


class Backoff:
    """Pauses between attempts at something that can pass (a broker away, a leader
    election): doubling from ``first_s`` up to ``longest_s``, until ``timeout_s`` after
    the first attempt.

    >>> b = Backoff(timeout_s=60, first_s=0.1, longest_s=0.3)
    >>> [b.next_pause() for _ in range(4)], b.expired
    ([0.1, 0.2, 0.3, 0.3], False)
    """

    def __init__(self, timeout_s: float, first_s: float, longest_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.pause = first_s
        self.longest_s = longest_s

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def next_pause(self) -> float:
        """How long to wait before the next attempt (each call doubles the next one)."""
        pause, self.pause = self.pause, min(self.pause * 2, self.longest_s)
        return pause


class ConnectionLog(logging.Filter):
    """Collapses aiokafka's connection-fault records into one line per outage.

    Parameters
    ----------
    on_fault
        Called for every connection-fault record (a metrics counter).
    on_outage
        Called once when an outage starts.
    """

    def __init__(
        self,
        on_fault: Callable[[], None] | None = None,
        on_outage: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_fault = on_fault
        self.on_outage = on_outage
        self.down_since: float | None = None
        self.last_fault = 0.0
        self.faults = 0
        self.loggers: list[logging.Logger] = []

    def install(self) -> None:
        """Attach to every aiokafka logger (filters do not apply to child loggers)."""
        self.loggers = aiokafka_loggers()
        for logger in self.loggers:
            logger.addFilter(self)

    def remove(self) -> None:
        for logger in self.loggers:
            logger.removeFilter(self)
        self.loggers = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not is_connection_fault(record):
            return True
        now = time.monotonic()
        self.last_fault = now
        self.faults += 1
        if self.on_fault is not None:
            self.on_fault()
        if self.down_since is None:
            self.down_since = now
            self.faults = 1
            if self.on_outage is not None:
                self.on_outage()
            log.warning(
                "lost the connection to the Kafka broker (%s); retrying, one line when it is back",
                record.getMessage(),
            )
        return False

    def tick(self, records_arrived: bool) -> None:
        """Called by the worker loop: closes an outage once the broker answers again."""
        if self.down_since is None:
            return
        now = time.monotonic()
        if records_arrived or now - self.last_fault >= RECOVERED_AFTER_S:
            log.warning(
                "connection to the Kafka broker is back after %.1f s (%d failed attempts)",
                (self.last_fault if not records_arrived else now) - self.down_since,
                self.faults,
            )
            self.down_since = None
            self.faults = 0


class Silenced(logging.Filter):
    """Drops aiokafka's connection-fault records (with ``everything``, all its warnings
    and errors) while a caller reports them itself (the start-up wait for a broker, the
    pre-flight checks)."""

    def __init__(self, everything: bool = False) -> None:
        super().__init__()
        self.everything = everything
        self.loggers: list[logging.Logger] = []

    def __enter__(self) -> Silenced:
        self.loggers = aiokafka_loggers()
        for logger in self.loggers:
            logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        return not self.everything and not is_connection_fault(record)


def aiokafka_loggers() -> list[logging.Logger]:
    """aiokafka's logger and all of its children (filters do not apply to children)."""
    names = {n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"}
    return [logging.getLogger(n) for n in ["aiokafka", *sorted(names - {"aiokafka"})]]


def is_connection_fault(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    if any(isinstance(a, CONNECTION_ERRORS) for a in args):
        return True
    if record.exc_info and isinstance(record.exc_info[1], CONNECTION_ERRORS):
        return True
    template = str(record.msg)
    return template.startswith(CONNECTION_MESSAGES)
