"""Pairing a logged request with its logged response, in bounded memory.

Platforms that log inference as two records (KServe's logger, Seldon Core 2) write the
inputs and the outputs apart; a prediction needs both. Each half waits here, by its
correlation id, for the other, for ``ttl_ms`` of event time. Halves come from several
source partitions, which a backlog reads at different speeds, so the clock that expires
them is the *slowest* source's event time (each source's latest), as a merge watermark
is, and it does not move until every partition of a source topic has been heard from
(when the record says how many there are); a source more than ``lateness_ms`` behind the
fastest stops holding the others back. A partition that never carries anything leaves
expiry to the ``max_pending`` bound. A request whose response
never comes expires and is counted (KServe logs responses for HTTP 200 only: not an
error); a response whose request never comes is handed back to be dead-lettered. A
record read twice (a re-send after a crash) is recognised by its source id and counted,
never paired twice.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from driftline.schemas.decode import prediction_from_dict
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats.parts import RequestPart, ResponsePart, SourceRecord
from driftline.schemas.formats.tensors import TENSOR_MISMATCH
from driftline.schemas.records import Prediction

RESPONSE_WITHOUT_REQUEST: Final = "response_without_request"
"""Dead-letter reason of a response whose request did not arrive within the TTL."""

PAIR_COUNTERS: Final = ("paired", "unanswered", "unmatched_responses", "duplicate_parts")
"""What the pairing counts: requests paired with their response; requests that expired
without one; responses that expired without their request (dead-lettered); records
read a second time."""


@dataclass(frozen=True, slots=True)
class Unpaired:
    """A response that gave up waiting for its request, or a pair that does not fit
    together: the record to dead-letter and why."""

    reason: str
    message: str
    record: SourceRecord


class Pairing:
    """Requests and responses meet here by correlation id.

    >>> from driftline.schemas.formats.parts import RequestPart, ResponsePart, SourceRecord
    >>> pairing = Pairing(ttl_ms=1_000, max_pending=10)
    >>> src = SourceRecord("t", 0, 0, 1_700_000_000_000, b"{}")
    >>> pairing.add(RequestPart("r1", "m", 1_700_000_000_000, [{"x": 1.0}, {"x": 2.0}]), src)
    ([], [])
    >>> out, _ = pairing.add(
    ...     ResponsePart("r1", "m", "v1", 1_700_000_000_005, [0.2, 0.9], [None, None]),
    ...     SourceRecord("t", 0, 1, 1_700_000_000_005, b"{}"))
    >>> [(p.request_id, p.features["x"], p.prediction) for p in out]
    [('r1:0', 1.0, 0.2), ('r1:1', 2.0, 0.9)]
    """

    def __init__(
        self,
        ttl_ms: int,
        max_pending: int,
        default_version: str = "unknown",
        memory: int = 200_000,
        lateness_ms: int = 3_600_000,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.lateness_ms = lateness_ms
        self.sources: dict[str, int] = {}
        """Latest event time per source partition (``topic/partition``)."""
        self.topics: dict[str, int] = {}
        """Partition count per source topic, where records told it."""
        self.max_pending = max_pending
        self.default_version = default_version
        self.memory = memory
        self.requests: OrderedDict[str, RequestPart] = OrderedDict()
        self.responses: OrderedDict[str, tuple[ResponsePart, SourceRecord]] = OrderedDict()
        self.seen: OrderedDict[str, None] = OrderedDict()
        """Source ids of recently read parts (bounded), to recognise re-sends."""
        self.watermark = 0
        self.counts = dict.fromkeys(PAIR_COUNTERS, 0)
        self.last_trace: str | None = None
        """Trace context of the last pair completed (the request's, else the response's)."""

    @property
    def size(self) -> int:
        return len(self.requests) + len(self.responses)

    def add(
        self, part: RequestPart | ResponsePart, source: SourceRecord
    ) -> tuple[list[Prediction], list[Unpaired]]:
        """Add one half; returns the predictions of a completed pair and whatever was
        given up on (responses that expired unpaired, pairs that do not fit)."""
        if source.source_id in self.seen:
            self.counts["duplicate_parts"] += 1
            return [], []
        self.seen[source.source_id] = None
        while len(self.seen) > self.memory:
            self.seen.popitem(last=False)
        unpaired: list[Unpaired] = []
        where = f"{source.topic}/{source.partition}"
        if source.partitions:
            self.topics[source.topic] = source.partitions
        if part.ts > self.sources.get(where, -1):
            self.sources[where] = part.ts
        if part.ts >= self.sources[where] and len(self.sources) >= sum(self.topics.values()):
            lead = max(self.sources.values())
            watermark = min(t for t in self.sources.values() if t >= lead - self.lateness_ms)
            if watermark > self.watermark:
                self.watermark = watermark
                unpaired += self._expire(watermark - self.ttl_ms)
        key = part.correlation_id
        predictions: list[Prediction] = []
        if isinstance(part, RequestPart):
            waiting = self.responses.pop(key, None)
            if waiting is None:
                self.requests[key] = part
            else:
                predictions, problem = self._pair(part, *waiting)
                unpaired += problem
        else:
            request = self.requests.pop(key, None)
            if request is None:
                self.responses[key] = (part, source)
            else:
                predictions, problem = self._pair(request, part, source)
                unpaired += problem
        unpaired += self._evict()
        return predictions, unpaired

    def _pair(
        self, request: RequestPart, response: ResponsePart, source: SourceRecord
    ) -> tuple[list[Prediction], list[Unpaired]]:
        if len(request.rows) != len(response.predictions):
            message = (
                f"request {request.correlation_id!r} has {len(request.rows)} rows but its "
                f"response {len(response.predictions)} outputs"
            )
            return [], [Unpaired(TENSOR_MISMATCH, message, source)]
        version = response.model_version or self.default_version
        many = len(request.rows) > 1
        out: list[Prediction] = []
        try:
            for i, row in enumerate(request.rows):
                request_id = f"{request.correlation_id}:{i}" if many else request.correlation_id
                obj: dict[str, Any] = {
                    "event_id": request_id,
                    "request_id": request_id,
                    "model_id": request.model_id,
                    "model_version": version,
                    "ts": request.ts,
                    "features": row,
                    "prediction": response.predictions[i],
                    "role": request.role,
                }
                if response.scores[i] is not None:
                    obj["scores"] = response.scores[i]
                if request.segment:
                    obj["segment"] = request.segment
                out.append(prediction_from_dict(obj))
        except DecodeError as exc:
            return [], [Unpaired(exc.reason, exc.message, source)]
        self.counts["paired"] += 1
        self.last_trace = request.trace or response.trace
        return out, []

    def _expire(self, horizon: int) -> list[Unpaired]:
        while self.requests and next(iter(self.requests.values())).ts < horizon:
            self.requests.popitem(last=False)
            self.counts["unanswered"] += 1
        out = []
        while self.responses and next(iter(self.responses.values()))[0].ts < horizon:
            out.append(self._unmatched(*self.responses.popitem(last=False)))
        return out

    def _evict(self) -> list[Unpaired]:
        while len(self.requests) > self.max_pending:
            self.requests.popitem(last=False)
            self.counts["unanswered"] += 1
        out = []
        while len(self.responses) > self.max_pending:
            out.append(self._unmatched(*self.responses.popitem(last=False)))
        return out

    def _unmatched(self, key: str, entry: tuple[ResponsePart, SourceRecord]) -> Unpaired:
        self.counts["unmatched_responses"] += 1
        message = (
            f"response {key!r} of model {entry[0].model_id!r}: its request did not arrive "
            f"within pair_ttl_ms={self.ttl_ms} (was the request logged to another topic?)"
        )
        return Unpaired(RESPONSE_WITHOUT_REQUEST, message, entry[1])

    # -- checkpoints -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "requests": [
                [r.correlation_id, r.model_id, r.ts, list(r.rows), r.role, r.segment, r.trace]
                for r in self.requests.values()
            ],
            "responses": [
                [
                    p.correlation_id,
                    p.model_id,
                    p.model_version,
                    p.ts,
                    list(p.predictions),
                    list(p.scores),
                    _record_state(s),
                    p.trace,
                ]
                for p, s in self.responses.values()
            ],
            "seen": list(self.seen),
            "watermark": self.watermark,
            "sources": dict(self.sources),
            "topics": dict(self.topics),
            "counts": dict(self.counts),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.requests = OrderedDict(
            (r[0], RequestPart(r[0], r[1], r[2], r[3], r[4], r[5], *r[6:7]))
            for r in state["requests"]
        )
        self.responses = OrderedDict(
            (p[0], (ResponsePart(p[0], p[1], p[2], p[3], p[4], p[5], *p[7:8]), _record_from(p[6])))
            for p in state["responses"]
        )
        self.seen = OrderedDict.fromkeys(state["seen"])
        self.watermark = state["watermark"]
        self.sources = dict(state.get("sources", {}))
        self.topics = dict(state.get("topics", {}))
        self.counts = {**dict.fromkeys(PAIR_COUNTERS, 0), **state["counts"]}


def _record_state(record: SourceRecord) -> list[Any]:
    key = base64.b64encode(record.key).decode() if record.key is not None else None
    return [
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        base64.b64encode(record.value).decode(),
        key,
    ]


def _record_from(row: Sequence[Any]) -> SourceRecord:
    key = base64.b64decode(row[5]) if row[5] is not None else None
    return SourceRecord(row[0], row[1], row[2], row[3], base64.b64decode(row[4]), key)
