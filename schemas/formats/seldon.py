"""Seldon Core 2's model topics: Open Inference Protocol requests and responses.

The gateway writes a model's requests to ``<prefix>.<namespace>.model.<model>.inputs``
and its responses to ``...outputs`` (scheduler ``pkg/kafka``). Values are protobuf
``ModelInferRequest`` / ``ModelInferResponse`` by default; the ``seldon-infer-type``
header, when present, names the encoding (``json/...`` or ``proto/...``), and outputs
copy the input's headers, so the *topic* tells request from response. Request and
response are correlated by the ``x-request-id`` header. Messages carry no event time:
the record timestamp is used.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError as ProtobufDecodeError

from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats.oip_proto import ModelInferRequest, ModelInferResponse
from driftline.schemas.formats.parts import RequestPart, ResponsePart, SourceRecord
from driftline.schemas.formats.settings import InputSettings
from driftline.schemas.formats.tensors import (
    FLOAT_TYPES,
    TENSOR_MISMATCH,
    UNKNOWN_DATATYPE,
    Tensor,
    predictions_from_tensors,
    rows_from_tensors,
)
from driftline.schemas.formats.values import feature_row, json_body

INFER_TYPE_HEADER: Final = "seldon-infer-type"
REQUEST_ID_HEADER: Final = "x-request-id"
INVALID_PROTOBUF: Final = "invalid_protobuf"
"""A value that does not parse as the protobuf message its topic carries."""

_RAW_FORMATS: Final = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
"""``struct`` codes of raw (little-endian) tensor contents by datatype."""

_CONTENTS_FIELD: Final = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which ``InferTensorContents`` field holds each datatype."""


@dataclass(frozen=True, slots=True)
class SeldonTopic:
    """What a Seldon model topic's name says."""

    namespace: str
    model: str
    request: bool
    """True for ``.inputs`` (requests), False for ``.outputs`` (responses)."""

    @classmethod
    def parse(cls, topic: str, prefix: str) -> SeldonTopic | None:
        """``seldon.seldon-mesh.model.iris.inputs`` -> namespace, model, request; None for
        any other topic (pipelines, unrelated topics).

        >>> SeldonTopic.parse("seldon.seldon-mesh.model.iris.outputs", "seldon")
        SeldonTopic(namespace='seldon-mesh', model='iris', request=False)
        """
        match = re.fullmatch(rf"{re.escape(prefix)}\.([^.]+)\.model\.(.+)\.(inputs|outputs)", topic)
        if match is None:
            return None
        return cls(match[1], match[2], match[3] == "inputs")


def seldon_pattern(settings: InputSettings) -> str:
    """The regular expression of the model topics to subscribe to."""
    namespaces = (
        "|".join(re.escape(n) for n in settings.seldon_namespaces)
        if settings.seldon_namespaces
        else "[^.]+"
    )
    return rf"{re.escape(settings.seldon_prefix)}\.(?:{namespaces})\.model\..+\.(?:inputs|outputs)"


def correlation_of(record: SourceRecord) -> str:
    """The ``x-request-id`` header, which the gateway sets on requests and responses."""
    value = record.headers.get(REQUEST_ID_HEADER)
    if not value:
        raise DecodeError(
            "missing_correlation_id",
            "Seldon message without an x-request-id header: cannot pair request and response",
        )
    return value.decode("utf-8", "replace")


def read_seldon(record: SourceRecord, settings: InputSettings) -> RequestPart | ResponsePart:
    """One request (``.inputs`` topic) or response (``.outputs``)."""
    topic = SeldonTopic.parse(record.topic, settings.seldon_prefix)
    if topic is None:
        raise DecodeError(
            "wrong_topic",
            f"{record.topic!r} is not a Seldon model topic "
            f"({settings.seldon_prefix}.<namespace>.model.<model>.inputs|outputs)",
        )
    request_id = correlation_of(record)
    encoding = record.headers.get(INFER_TYPE_HEADER, b"proto/").decode("utf-8", "replace")
    if encoding.startswith("json/"):
        body = json_body(record.value, "Seldon JSON message")
        if not isinstance(body, dict):
            raise DecodeError("not_an_object", "a Seldon JSON message must be an object")
        key = "inputs" if topic.request else "outputs"
        if not isinstance(body.get(key), list):
            raise DecodeError("schema_violation", f"a Seldon {key[:-1]} message needs {key!r}")
        tensors = [Tensor.from_json(t, key[:-1]) for t in body[key]]
        version = body.get("model_version")
    else:
        tensors, version = _from_protobuf(record.value, topic.request)
    trace = record.headers.get("traceparent")
    trace_text = trace.decode("ascii", "replace") if trace else None
    if topic.request:
        rows = [feature_row(r) for r in rows_from_tensors(tensors, settings.features)]
        return RequestPart(request_id, topic.model, record.timestamp, rows, trace=trace_text)
    predictions, scores = predictions_from_tensors(tensors, settings.prediction_output)
    return ResponsePart(
        request_id,
        topic.model,
        version if isinstance(version, str) and version else None,
        record.timestamp,
        predictions,
        scores,
        trace_text,
    )


def _from_protobuf(raw: bytes, request: bool) -> tuple[list[Tensor], str]:
    kind = ModelInferRequest if request else ModelInferResponse
    try:
        message: Any = kind.FromString(raw)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            INVALID_PROTOBUF, f"not a {kind.__name__} (truncated or not protobuf): {exc}"
        ) from None
    declared = list(message.inputs if request else message.outputs)
    raw_contents: Sequence[bytes] = (
        message.raw_input_contents if request else message.raw_output_contents
    )
    if raw_contents and len(raw_contents) != len(declared):
        raise DecodeError(
            TENSOR_MISMATCH,
            f"{len(declared)} tensors but {len(raw_contents)} raw contents",
        )
    tensors = []
    for i, t in enumerate(declared):
        shape = tuple(int(d) for d in t.shape)
        where = "input" if request else "output"
        if raw_contents:
            data = _raw_values(t.name, t.datatype, raw_contents[i])
        else:
            field = _CONTENTS_FIELD.get(t.datatype)
            if field is None:
                raise DecodeError(UNKNOWN_DATATYPE, f"{where} {t.name!r}: datatype {t.datatype!r}")
            data = list(getattr(t.contents, field))
            if t.datatype == "BYTES":
                data = [_text(t.name, v) for v in data]
            elif t.datatype in FLOAT_TYPES:
                data = [float(v) for v in data]
        tensors.append(Tensor.checked(t.name, t.datatype, shape, data, where))
    return tensors, str(message.model_version)


def _raw_values(name: str, datatype: str, raw: bytes) -> list[Any]:
    """Values of raw contents: little-endian fixed-size values, or for BYTES a 4-byte
    little-endian length before each element."""
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise DecodeError(TENSOR_MISMATCH, f"{name!r}: raw BYTES cut inside a length")
            (size,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + size > len(raw):
                raise DecodeError(TENSOR_MISMATCH, f"{name!r}: raw BYTES element runs past the end")
            values.append(_text(name, raw[at : at + size]))
            at += size
        return values
    code = _RAW_FORMATS.get(datatype)
    if code is None:
        raise DecodeError(UNKNOWN_DATATYPE, f"{name!r}: datatype {datatype!r}")
    size = struct.calcsize(code)
    if len(raw) % size:
        raise DecodeError(
            TENSOR_MISMATCH, f"{name!r}: {len(raw)} raw bytes are not whole {datatype} values"
        )
    values = list(struct.unpack(f"<{len(raw) // size}{code}", raw))
    return [float(v) for v in values] if datatype in FLOAT_TYPES else values


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(TENSOR_MISMATCH, f"{name!r}: BYTES element is not UTF-8 text") from None
