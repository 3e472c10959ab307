"""The same traffic as a KServe, Seldon Core 2 or mapped prediction log (simulation).

`to_foreign` turns driftline events (from `streams.simulation.traffic`) into the Kafka records
each platform would have written for them, and returns beside them the driftline events
those records stand for (request ids of batched rows renamed ``<id>:<row>``, predictions
whose response was never logged left out), so a test or a benchmark can hold the foreign
path to the native one. Used by ``driftline simulate --input-format`` and the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from msgspec import structs

from driftline.schemas.decode import encode
from driftline.schemas.formats import SourceRecord
from driftline.schemas.formats.kserve import REQUEST_TYPE as KSERVE_REQUEST
from driftline.schemas.formats.kserve import RESPONSE_TYPE as KSERVE_RESPONSE
from driftline.schemas.formats.oip_proto import ModelInferRequest, ModelInferResponse
from driftline.schemas.records import Event, Outcome, Prediction

MAPPING: Final = {
    "request_id": "/meta/id",
    "model_id": "/meta/model/name",
    "model_version": "/meta/model/version",
    "ts": "/meta/time",
    "features": "/inputs",
    "prediction": "/output/score",
    "segment": "/meta/tags",
}
"""``[input.mapping]`` of the mapped log `to_foreign` writes."""


@dataclass(frozen=True, slots=True)
class ForeignTraffic:
    """A foreign log and the driftline events it stands for."""

    records: list[SourceRecord]
    """Records in the order they were logged (outcomes on the outcomes topic)."""
    events: list[Event]
    """The same traffic in driftline's format, in the same order."""
    features: tuple[str, ...]
    """Names of the columns of the numeric input tensor (``[input] features``)."""
    traces: dict[str, str]
    """The W3C ``traceparent`` each request was logged with, by the request id its
    predictions have in `events`."""


def to_foreign(
    events: Sequence[Event],
    fmt: str,
    topic: str,
    outcomes_topic: str,
    batch_every: int = 7,
    batch_rows: int = 3,
    unanswered_every: int = 53,
    namespace: str = "seldon-mesh",
    seldon_prefix: str = "seldon",
) -> ForeignTraffic:
    """Rewrite ``events`` as ``fmt`` (``kserve``, ``seldon`` or ``mapped``) records.

    Every ``batch_every``-th request of KServe/Seldon carries ``batch_rows`` consecutive
    predictions of one model version; every ``unanswered_every``-th request gets no logged
    response (KServe logs responses only for HTTP 200). Numeric features go into one
    ``[N, F]`` FP64 tensor ``input-0`` and string features into one BYTES tensor each; a
    prediction with a missing (null) or boolean input is logged as a one-row request.
    Record timestamps are event times (Seldon carries no other)."""
    numeric = _numeric_names(events)
    renamed: dict[str, str] = {}
    dropped: set[str] = set()
    records: list[SourceRecord] = []
    native: list[Event] = []
    traces: dict[str, str] = {}
    pending: list[Prediction] = []
    requests = 0

    def flush() -> None:
        nonlocal requests
        if not pending:
            return
        requests += 1
        rows = list(pending)
        pending.clear()
        ce_id = rows[0].request_id if len(rows) == 1 else f"{rows[0].request_id}-b"
        ids = [ce_id] if len(rows) == 1 else [f"{ce_id}:{i}" for i in range(len(rows))]
        answered = requests % unanswered_every != 0
        for p, new_id in zip(rows, ids, strict=True):
            traces[new_id] = traceparent(ce_id)
            if answered:
                renamed[p.request_id] = new_id
                # A batched request has one event time: its first row's.
                native.append(structs.replace(p, event_id=new_id, request_id=new_id, ts=rows[0].ts))
            else:
                dropped.add(p.request_id)
        where = f"{seldon_prefix}.{namespace}" if fmt == "seldon" else topic
        records.extend(_records(fmt, rows, ce_id, numeric, answered, where))

    for event in events:
        if isinstance(event, Outcome):
            flush()
            if event.request_id in dropped:
                continue
            new_id = renamed.get(event.request_id, event.request_id)
            outcome = structs.replace(event, request_id=new_id)
            native.append(outcome)
            records.append(SourceRecord(outcomes_topic, 0, 0, outcome.ts, encode(outcome)))
            continue
        if fmt == "mapped":
            native.append(structs.replace(event, event_id=event.request_id))
            trace = traces[event.request_id] = traceparent(event.request_id)
            headers = {"traceparent": trace.encode()}
            records.append(SourceRecord(topic, 0, 0, event.ts, _mapped(event), None, headers))
            continue
        batchable = _tensor_ready(event, numeric)
        if pending and (
            not batchable
            or pending[0].model_version != event.model_version
            or pending[0].role != event.role
            or len(pending) >= batch_rows
        ):
            flush()
        pending.append(event)
        if not batchable or (requests + 1) % batch_every != 0:
            flush()
    flush()
    offsets: dict[str, int] = {}
    numbered = []
    for r in records:  # log offsets per topic, as one partition would give them
        offsets[r.topic] = offsets.get(r.topic, -1) + 1
        numbered.append(replace(r, offset=offsets[r.topic]))
    return ForeignTraffic(numbered, native, numeric, traces)


def traceparent(request_id: str) -> str:
    """A W3C trace context for a request, derived from its id (sampled)."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()
    return f"00-{digest[:32]}-{digest[32:48]}-01"


def _numeric_names(events: Sequence[Event]) -> tuple[str, ...]:
    for event in events:
        if isinstance(event, Prediction):
            return tuple(
                n
                for n, v in event.features.items()
                if isinstance(v, float | int) and not isinstance(v, bool)
            )
    return ()


def _tensor_ready(p: Prediction, numeric: tuple[str, ...]) -> bool:
    values = p.features
    return (
        isinstance(p.prediction, float | int)
        and p.scores is None
        and p.segment is None
        and p.action is None
        and all(
            isinstance(values.get(n), float | int) and not isinstance(values.get(n), bool)
            for n in numeric
        )
        and all(isinstance(v, str) for n, v in values.items() if n not in numeric)
    )


def _rfc3339(ts: int) -> str:
    return (
        datetime.fromtimestamp(ts / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _tensors(rows: list[Prediction], numeric: tuple[str, ...]) -> list[dict[str, Any]]:
    tensors = [
        {
            "name": "input-0",
            "shape": [len(rows), len(numeric)],
            "datatype": "FP64",
            "data": [[float(p.features[n]) for n in numeric] for p in rows],  # type: ignore[arg-type]
        }
    ]
    for name in rows[0].features:
        if name not in numeric:
            tensors.append(
                {
                    "name": name,
                    "shape": [len(rows)],
                    "datatype": "BYTES",
                    "data": [p.features[name] for p in rows],
                }
            )
    return tensors


def _records(
    fmt: str,
    rows: list[Prediction],
    ce_id: str,
    numeric: tuple[str, ...],
    answered: bool,
    topic: str,
) -> list[SourceRecord]:
    """The records of one request; ``topic`` is the log topic, or for Seldon the
    ``<prefix>.<namespace>`` its model topics start with."""
    first = rows[0]
    tensor_ready = _tensor_ready(first, numeric)
    outputs = [
        {
            "name": "output-0",
            "shape": [len(rows)],
            "datatype": "FP64",
            "data": [float(p.prediction) for p in rows],  # type: ignore[arg-type]
        }
    ]
    if fmt == "kserve":
        n = len(ce_id)
        structured = n % 5 == 0  # some events in structured mode
        if tensor_ready:
            request: dict[str, Any] = {"id": ce_id, "inputs": _tensors(rows, numeric)}
        else:
            request = {"instances": [dict(p.features) for p in rows]}
        response = {
            "id": ce_id,
            "model_name": first.model_id,
            "model_version": first.model_version,
            "outputs": outputs,
        }
        endpoint = "canary" if first.role == "canary" else "default"
        out = [_cloudevent(topic, first, ce_id, KSERVE_REQUEST, request, endpoint, structured)]
        if answered:
            out.append(
                _cloudevent(topic, first, ce_id, KSERVE_RESPONSE, response, endpoint, structured)
            )
        return out
    if fmt == "seldon":
        base = f"{topic}.model.{first.model_id}"
        as_json = len(ce_id) % 3 == 0
        request_headers = {
            "x-request-id": ce_id.encode(),
            "traceparent": traceparent(ce_id).encode(),
        }
        if as_json:
            request_headers["seldon-infer-type"] = b"json/inferModelRequest"
            request_value = orjson.dumps(
                {"id": ce_id, "model_name": first.model_id, "inputs": _tensors(rows, numeric)}
            )
            response_value = orjson.dumps(
                {
                    "id": ce_id,
                    "model_name": first.model_id,
                    "model_version": first.model_version,
                    "outputs": outputs,
                }
            )
        else:
            request_value = _proto_request(first.model_id, ce_id, _tensors(rows, numeric))
            response_value = _proto_response(first, ce_id, outputs)
        key = f"0.{first.model_id}.{ce_id}".encode()
        out = [SourceRecord(f"{base}.inputs", 0, 0, first.ts, request_value, key, request_headers)]
        if answered:  # outputs copy the input's headers
            out.append(
                SourceRecord(
                    f"{base}.outputs", 0, 0, first.ts, response_value, key, request_headers
                )
            )
        return out
    raise ValueError(f"unknown format {fmt!r}; known: kserve, seldon, mapped")


def _cloudevent(
    topic: str,
    p: Prediction,
    ce_id: str,
    kind: str,
    body: dict[str, Any],
    endpoint: str,
    structured: bool,
) -> SourceRecord:
    attributes = {
        "specversion": "1.0",
        "id": ce_id,
        "type": kind,
        "source": f"http://localhost:9081/{p.model_id}-predictor-00001-deployment-7c9f",
        "time": _rfc3339(p.ts),
        "inferenceservicename": p.model_id,
        "namespace": "models",
        "component": "predictor",
        "endpoint": endpoint,
        "metadata": "{}",
        "traceparent": traceparent(ce_id),
    }
    if structured:
        envelope = {**attributes, "datacontenttype": "application/json", "data": body}
        headers = {"content-type": b"application/cloudevents+json"}
        return SourceRecord(topic, 0, 0, p.ts, orjson.dumps(envelope), None, headers)
    headers = {f"ce_{k}": v.encode() for k, v in attributes.items()}
    headers["content-type"] = b"application/json"
    return SourceRecord(topic, 0, 0, p.ts, orjson.dumps(body), None, headers)


def _fill(tensor: Any, spec: dict[str, Any]) -> None:
    tensor.name, tensor.datatype = spec["name"], spec["datatype"]
    tensor.shape.extend(spec["shape"])
    flat = [v for row in spec["data"] for v in (row if isinstance(row, list) else [row])]
    if spec["datatype"] == "BYTES":
        tensor.contents.bytes_contents.extend(v.encode() for v in flat)
    else:
        tensor.contents.fp64_contents.extend(flat)


def _proto_request(model: str, ce_id: str, tensors: list[dict[str, Any]]) -> bytes:
    message: Any = ModelInferRequest(model_name=model, id=ce_id)
    for spec in tensors:
        _fill(message.inputs.add(), spec)
    return bytes(message.SerializeToString())


def _proto_response(p: Prediction, ce_id: str, outputs: list[dict[str, Any]]) -> bytes:
    message: Any = ModelInferResponse(
        model_name=p.model_id, model_version=p.model_version, id=ce_id
    )
    for spec in outputs:
        _fill(message.outputs.add(), spec)
    return bytes(message.SerializeToString())


def _mapped(p: Prediction) -> bytes:
    body: dict[str, Any] = {
        "meta": {
            "id": p.request_id,
            "model": {"name": p.model_id, "version": p.model_version},
            "time": _rfc3339(p.ts),
        },
        "inputs": dict(p.features),
        "output": {
            "score": p.prediction if not isinstance(p.prediction, tuple) else list(p.prediction)
        },
    }
    if p.segment:
        body["meta"]["tags"] = dict(p.segment)
    return orjson.dumps(body)
