"""Foreign prediction logs -> driftline events, after re-keying (stage 1's decoder).

Records arrive here from the re-keyed topic, every half of a request and every outcome
of one correlation id on one partition. Outcomes are driftline's own contract; the
foreign records are read by their format (`schemas.formats`) and paired
(`detectors.versions.pairing.Pairing`) into predictions, one per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson
from aiokafka import ConsumerRecord

from driftline.detectors.versions.pairing import Pairing
from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.decode import decode
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats import (
    InputSettings,
    RequestPart,
    ResponsePart,
    SourceRecord,
    read_kserve,
    read_mapped,
    read_seldon,
)
from driftline.schemas.records import Event

SOURCE_HEADER: Final = "driftline-source"
"""Header the re-key stage adds: the original topic, partition, offset (JSON)."""

_READERS: Final[dict[str, Callable[[SourceRecord, InputSettings], Any]]] = {
    "kserve": read_kserve,
    "seldon": read_seldon,
}


def source_header(record: SourceRecord, partitions: int) -> bytes:
    """The `SOURCE_HEADER` value naming where a re-keyed record came from (and how many
    partitions its topic has)."""
    return orjson.dumps([record.topic, record.partition, record.offset, partitions])


def original(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    value: bytes | None,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> SourceRecord:
    """The record as it was before re-keying (its source header read back), so that dead
    letters and re-send detection name the original topic, partition and offset."""
    named = {name.lower(): v for name, v in headers}
    source = named.pop(SOURCE_HEADER, None)
    partitions = 0
    if source is not None:
        # An unreadable header keeps the re-keyed coordinates.
        with contextlib.suppress(orjson.JSONDecodeError, ValueError, TypeError):
            topic, partition, offset, partitions = orjson.loads(source)
    return SourceRecord(topic, partition, offset, timestamp, value or b"", key, named, partitions)


class Read(NamedTuple):
    """What one batch of re-keyed records gave."""

    events: list[Event]
    sources: list[SourceRecord]
    """The record that completed each event (the response, for a paired prediction)."""
    letters: list[DeadLetter]
    """Dead letters of records of this batch."""
    expired: list[DeadLetter]
    """Dead letters of records read earlier: responses that waited for their request in
    vain (counted as processed when they were read)."""
    traces: list[str | None]
    """W3C ``traceparent`` of each event's request (or record), where there is one."""


class ForeignIntake:
    """Reads one partition's re-keyed records into events, pairing requests and responses."""

    def __init__(self, settings: InputSettings, outcomes_topic: str, max_bytes: int) -> None:
        self.settings = settings
        self.outcomes_topic = outcomes_topic
        self.max_bytes = max_bytes
        self.pairing = Pairing(
            settings.pair_ttl_ms,
            settings.max_pending_pairs,
            settings.model_version,
            lateness_ms=settings.pair_lateness_ms,
        )

    def read(self, records: Sequence[SourceRecord]) -> Read:
        """Events with the record that completed each, and dead letters for the rest."""
        events: list[Event] = []
        sources: list[SourceRecord] = []
        letters: list[DeadLetter] = []
        expired: list[DeadLetter] = []
        traces: list[str | None] = []
        fmt = self.settings.format
        for record in records:
            try:
                if len(record.value) > self.max_bytes:
                    raise DecodeError(
                        "too_large", f"message is {len(record.value)} bytes, limit {self.max_bytes}"
                    )
                if record.topic == self.outcomes_topic:
                    events.append(decode(record.value, "outcome", max_bytes=self.max_bytes))
                    sources.append(record)
                    traces.append(_header_trace(record))
                    continue
                if fmt == "mapped":
                    events.append(read_mapped(record, self.settings))
                    sources.append(record)
                    traces.append(_header_trace(record))
                    continue
                part: RequestPart | ResponsePart = _READERS[fmt](record, self.settings)
            except DecodeError as exc:
                letters.append(letter(exc.reason, exc.message, record))
                continue
            predictions, unpaired = self.pairing.add(part, record)
            events += predictions
            sources += [record] * len(predictions)
            traces += [self.pairing.last_trace] * len(predictions)
            for u in unpaired:
                mine = u.record.source_id == record.source_id
                (letters if mine else expired).append(letter(u.reason, u.message, u.record))
        return Read(events, sources, letters, expired, traces)

    def state(self) -> dict[str, Any]:
        return self.pairing.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.pairing.restore(state)


def _header_trace(record: SourceRecord) -> str | None:
    found = record.headers.get("traceparent") or record.headers.get("ce_traceparent")
    return found.decode("ascii", "replace") if found else None


def letter(reason: str, message: str, record: SourceRecord | ConsumerRecord) -> DeadLetter:
    """A dead letter of a record as read (a re-keyed record's names its original
    topic, partition and offset)."""
    headers = record.headers
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return DeadLetter(
        reason,
        message,
        record.topic,
        record.partition,
        record.offset,
        record.value or b"",
        record.key,
        tuple(pairs),
    )
