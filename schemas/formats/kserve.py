"""KServe's inference logger: CloudEvents on Kafka, binary or structured mode.

What the logger writes (kserve ``pkg/logger``): one CloudEvent for the request and, for
HTTP 200 only, one for the response, sharing ``id`` (the incoming ``Ce-Id`` or a fresh
UUID). ``type`` is ``org.kubeflow.serving.inference.request`` or ``.response``; the
extensions ``inferenceservicename``, ``namespace``, ``component``, ``endpoint``
(``default`` or ``canary``) and ``metadata`` ride along. Through a Knative Kafka sink
the attributes arrive as ``ce_*`` headers (binary mode) with the body as the value, or
as one JSON envelope with ``data`` (structured mode, ``application/cloudevents+json``).
Bodies are V1 (``instances`` / ``predictions``) or V2, the Open Inference Protocol
(``inputs`` / ``outputs`` tensors).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final

from driftline.schemas.decode import parse_ts
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats.parts import RequestPart, ResponsePart, SourceRecord
from driftline.schemas.formats.settings import InputSettings
from driftline.schemas.formats.tensors import (
    TENSOR_MISMATCH,
    Tensor,
    predictions_from_tensors,
    rows_from_tensors,
)
from driftline.schemas.formats.values import feature_row, json_body
from driftline.schemas.records import PredictionValue

REQUEST_TYPE: Final = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE: Final = "org.kubeflow.serving.inference.response"
STRUCTURED: Final = "application/cloudevents+json"
MISSING_ID: Final = "missing_correlation_id"
ATTRIBUTES: Final = (
    "id",
    "type",
    "inferenceservicename",
    "endpoint",
    "time",
    "recordedtime",
    "traceparent",
)
"""The CloudEvent attributes read (binary mode decodes only these headers)."""


def envelope(record: SourceRecord) -> tuple[dict[str, Any], Any]:
    """The CloudEvent's attributes (without the ``ce_`` prefix) and its body, from either
    mode."""
    content_type = record.headers.get("content-type", b"").decode("utf-8", "replace")
    if "ce_specversion" in record.headers or not content_type.startswith(STRUCTURED):
        headers = record.headers
        attributes = {
            name: raw.decode("utf-8", "replace")
            for name in ATTRIBUTES
            if (raw := headers.get("ce_" + name)) is not None
        }
        return attributes, None
    event = json_body(record.value, "structured CloudEvent")
    if not isinstance(event, dict):
        raise DecodeError("not_an_object", "a structured CloudEvent must be a JSON object")
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    if "data" in event:
        return attributes, event["data"]
    if "data_base64" in event:
        try:
            raw = base64.b64decode(event["data_base64"], validate=True)
        except (ValueError, TypeError):
            raise DecodeError("schema_violation", "data_base64 is not base64") from None
        return attributes, json_body(raw, "CloudEvent data")
    raise DecodeError("schema_violation", "the structured CloudEvent has no data")


def correlation_of(record: SourceRecord) -> str:
    """The id request, response and outcomes share: the CloudEvent ``id``."""
    attributes, _ = envelope(record)
    ce_id = attributes.get("id")
    if not isinstance(ce_id, str) or not ce_id:
        raise DecodeError(
            MISSING_ID, "KServe event without ce_id: request and response cannot be paired"
        )
    return ce_id


def read_kserve(record: SourceRecord, settings: InputSettings) -> RequestPart | ResponsePart:
    """One logged request or response.

    Raises
    ------
    DecodeError
        ``missing_correlation_id`` without an id; ``schema_violation`` for an event that is
        not an inference request or response, or lacks the service name;
        ``tensor_mismatch`` / ``unknown_datatype`` for tensors that do not hold what they say.
    """
    attributes, body = envelope(record)
    ce_id = attributes.get("id")
    if not isinstance(ce_id, str) or not ce_id:
        raise DecodeError(
            MISSING_ID, "KServe event without ce_id: request and response cannot be paired"
        )
    kind = attributes.get("type")
    if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise DecodeError(
            "schema_violation",
            f"ce_type {kind!r} is neither {REQUEST_TYPE} nor {RESPONSE_TYPE}",
        )
    model_id = attributes.get("inferenceservicename")
    if not isinstance(model_id, str) or not model_id:
        raise DecodeError("schema_violation", "ce_inferenceservicename (the model) is missing")
    if body is None:
        body = json_body(record.value, "KServe body")
    if not isinstance(body, dict):
        raise DecodeError("not_an_object", "a KServe body must be a JSON object")
    ts = _event_time(attributes, record)
    endpoint = attributes.get("endpoint")
    # The CloudEvents distributed-tracing extension (ce_traceparent in binary mode).
    trace = attributes.get("traceparent")
    trace = trace if isinstance(trace, str) and trace else None
    if kind == REQUEST_TYPE:
        role = "canary" if endpoint == "canary" else "champion"
        rows = _request_rows(body, settings)
        return RequestPart(ce_id, model_id, ts, rows, role, None, trace)
    version = body.get("model_version")
    if not isinstance(version, str) or not version:
        version = endpoint if isinstance(endpoint, str) and endpoint else None
    predictions, scores = _response_values(body, settings)
    return ResponsePart(ce_id, model_id, version, ts, predictions, scores, trace)


def _event_time(attributes: Mapping[str, Any], record: SourceRecord) -> int:
    """``time`` (set by the logger's CloudEvents client), else ``recordedtime``, else the
    Kafka record's timestamp."""
    for name in ("time", "recordedtime"):
        value = attributes.get(name)
        if value:
            return parse_ts(value, f"ce_{name}")
    return record.timestamp


def _request_rows(body: dict[str, Any], settings: InputSettings) -> list[dict[str, Any]]:
    if "inputs" in body and isinstance(body["inputs"], list):
        tensors = [Tensor.from_json(t, "input") for t in body["inputs"]]
        rows = rows_from_tensors(tensors, settings.features)
    elif "instances" in body:
        rows = _instances(body["instances"], settings)
    else:
        raise DecodeError(
            "schema_violation", "a KServe request body needs 'inputs' (V2) or 'instances' (V1)"
        )
    return [feature_row(row) for row in rows]


def _instances(instances: object, settings: InputSettings) -> list[dict[str, Any]]:
    """V1 rows: objects of name -> value, or lists named by ``[input] features``."""
    if not isinstance(instances, list) or not instances:
        raise DecodeError("schema_violation", "instances must be a non-empty array")
    rows: list[dict[str, Any]] = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            rows.append(instance)
        elif isinstance(instance, list):
            names = settings.features
            if names and len(names) != len(instance):
                raise DecodeError(
                    TENSOR_MISMATCH,
                    f"instances[{i}] has {len(instance)} values, [input] features names "
                    f"{len(names)}",
                )
            rows.append(
                {(names[j] if names else f"instance_{j}"): v for j, v in enumerate(instance)}
            )
        else:
            rows.append({(settings.features or ["instance"])[0]: instance})
    return rows


def _response_values(
    body: dict[str, Any], settings: InputSettings
) -> tuple[list[PredictionValue], list[Any]]:
    if "outputs" in body and isinstance(body["outputs"], list):
        tensors = [Tensor.from_json(t, "output") for t in body["outputs"]]
        return predictions_from_tensors(tensors, settings.prediction_output)
    if "predictions" in body and isinstance(body["predictions"], list):
        predictions: list[PredictionValue] = []
        scores: list[Any] = []
        for i, value in enumerate(body["predictions"]):
            if (
                isinstance(value, list)
                and len(value) > 1
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            ):
                row = [float(v) for v in value]
                scores.append({str(k): v for k, v in enumerate(row)})
                predictions.append(
                    row[1] if len(row) == 2 else str(max(range(len(row)), key=row.__getitem__))
                )
            elif isinstance(value, list) and len(value) == 1:
                predictions.append(value[0])
                scores.append(None)
            elif isinstance(value, int | float | str) and not isinstance(value, bool):
                predictions.append(value)
                scores.append(None)
            else:
                raise DecodeError(
                    "schema_violation", f"predictions[{i}] is not a number, label or score list"
                )
        return predictions, scores
    raise DecodeError(
        "schema_violation", "a KServe response body needs 'outputs' (V2) or 'predictions' (V1)"
    )
