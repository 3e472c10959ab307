"""What a foreign prediction log's records are turned into before they are paired."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from driftline.schemas.records import FeatureValue, PredictionValue


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as read, before any decoding."""

    topic: str
    """Topic it was read from (the original topic, also after re-keying)."""
    partition: int
    """Partition it was read from."""
    offset: int
    """Its offset there (with topic and partition: its identity, to recognise a re-send)."""
    timestamp: int
    """The record's timestamp, epoch ms: the event time of formats that carry none."""
    value: bytes
    """The message bytes."""
    key: bytes | None = None
    """The record key, if any (foreign logs often have none)."""
    headers: Mapping[str, bytes] = field(default_factory=dict)
    """Record headers by name (the last value wins when a name repeats)."""
    partitions: int = 0
    """Partitions of its topic, when known (0: unknown). Pairing waits for every
    partition of a source topic before it expires anything (see `detectors.versions.pairing`)."""

    @property
    def source_id(self) -> str:
        """``topic/partition/offset``: the same record read twice has the same id."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class RequestPart:
    """The request half of a logged inference: the inputs of one or more rows."""

    correlation_id: str
    """What the response and the outcomes name it by (``ce_id``, ``x-request-id``)."""
    model_id: str
    """Which model was asked."""
    ts: int
    """Event time of the request, epoch ms."""
    rows: Sequence[Mapping[str, FeatureValue]]
    """The inputs of each row of the request (one row unless the request was batched)."""
    role: str = "champion"
    """Deployment role (KServe's canary endpoint gives ``canary``)."""
    segment: Mapping[str, str] | None = None
    """Slice attributes the format carries (namespace, ...)."""
    trace: str | None = None
    """W3C ``traceparent`` of the request, where the log carries one."""


@dataclass(frozen=True, slots=True)
class ResponsePart:
    """The response half: one output per row, in the request's row order."""

    correlation_id: str
    """Same id as the request's."""
    model_id: str
    """Which model answered."""
    model_version: str | None
    """The version the response names, if it names one."""
    ts: int
    """Event time of the response, epoch ms."""
    predictions: Sequence[PredictionValue]
    """One output per row."""
    scores: Sequence[Mapping[str, float] | None]
    """Class probabilities per row, where the output was a probability vector."""
    trace: str | None = None
    """W3C ``traceparent`` of the response, where the log carries one."""
