"""The Open Inference Protocol's protobuf messages, built at import without ``protoc``.

Only the fields driftline reads are declared (field numbers from the protocol's
``grpc_predict_v2.proto``, package ``inference``); protobuf skips the others (the
``parameters`` maps, requested outputs) as unknown fields, so full messages parse.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

_CONTENTS = (
    ("bool_contents", 1, _F.TYPE_BOOL),
    ("int_contents", 2, _F.TYPE_INT32),
    ("int64_contents", 3, _F.TYPE_INT64),
    ("uint_contents", 4, _F.TYPE_UINT32),
    ("uint64_contents", 5, _F.TYPE_UINT64),
    ("fp32_contents", 6, _F.TYPE_FLOAT),
    ("fp64_contents", 7, _F.TYPE_DOUBLE),
    ("bytes_contents", 8, _F.TYPE_BYTES),
)
"""``InferTensorContents``: one repeated field per datatype family."""


def _field(
    message: Any, name: str, number: int, kind: int, repeated: bool = False, type_name: str = ""
) -> None:
    f = message.field.add()
    f.name, f.number, f.type = name, number, kind
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name


def _build() -> tuple[Any, Any, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="driftline_oip.proto", package="inference", syntax="proto3"
    )
    contents = proto.message_type.add(name="InferTensorContents")
    for name, number, kind in _CONTENTS:
        _field(contents, name, number, kind, repeated=True)
    for message_name, tensors, raw in (
        ("ModelInferRequest", ("inputs", 5, "InferInputTensor"), ("raw_input_contents", 7)),
        ("ModelInferResponse", ("outputs", 5, "InferOutputTensor"), ("raw_output_contents", 6)),
    ):
        message = proto.message_type.add(name=message_name)
        _field(message, "model_name", 1, _F.TYPE_STRING)
        _field(message, "model_version", 2, _F.TYPE_STRING)
        _field(message, "id", 3, _F.TYPE_STRING)
        tensor = message.nested_type.add(name=tensors[2])
        _field(tensor, "name", 1, _F.TYPE_STRING)
        _field(tensor, "datatype", 2, _F.TYPE_STRING)
        _field(tensor, "shape", 3, _F.TYPE_INT64, repeated=True)
        _field(tensor, "contents", 5, _F.TYPE_MESSAGE, type_name=".inference.InferTensorContents")
        _field(
            message,
            tensors[0],
            tensors[1],
            _F.TYPE_MESSAGE,
            repeated=True,
            type_name=f".inference.{message_name}.{tensors[2]}",
        )
        _field(message, raw[0], raw[1], _F.TYPE_BYTES, repeated=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
        for name in ("ModelInferRequest", "ModelInferResponse", "InferTensorContents")
    )


ModelInferRequest, ModelInferResponse, InferTensorContents = _build()
"""Message classes: parse with ``ModelInferRequest.FromString(raw)``."""
