"""Open Inference Protocol (KServe V2) tensors -> feature rows and predictions.

A tensor is ``{name, datatype, shape, data}``; ``data`` is row-major, flat or nested.
Rank 1 (``[N]``) is one value per row, rank 2 (``[N, F]``) F columns per row. Higher ranks
(images, sequences) are not tabular features and are refused with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from driftline.schemas.exceptions import DecodeError
from driftline.schemas.records import FeatureValue, PredictionValue

TENSOR_MISMATCH: Final = "tensor_mismatch"
"""A tensor's data does not match its shape or datatype."""
UNKNOWN_DATATYPE: Final = "unknown_datatype"
"""A tensor names a datatype the Open Inference Protocol does not define."""

INTEGER_TYPES: Final = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)
FLOAT_TYPES: Final = frozenset({"FP16", "FP32", "FP64", "BF16"})
DATATYPES: Final = INTEGER_TYPES | FLOAT_TYPES | {"BOOL", "BYTES"}
"""Every datatype of the protocol's tensor data types table."""

MAX_ROWS: Final = 100_000
"""Rows accepted from one request: a batch larger than this is a logging bug, and each
row becomes an event."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """One named input or output tensor, its data flattened row-major."""

    name: str
    """Tensor name (``input-0``, or a feature's name when each feature is a tensor)."""
    datatype: str
    """One of `DATATYPES`."""
    shape: tuple[int, ...]
    """Dimensions; the first is the batch (rows)."""
    data: Sequence[Any]
    """Values, flattened row-major."""

    @classmethod
    def from_json(cls, obj: object, where: str) -> Tensor:
        """A tensor from its JSON form, checked against its shape and datatype."""
        if not isinstance(obj, dict):
            raise DecodeError("schema_violation", f"{where} must be an object")
        name, datatype, shape = obj.get("name"), obj.get("datatype"), obj.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise DecodeError("schema_violation", f"{where} needs a string name and datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise DecodeError(
                "schema_violation", f"{where} {name!r}: shape must be a list of sizes"
            )
        if "data" not in obj:
            raise DecodeError("schema_violation", f"{where} {name!r} has no data")
        return cls.checked(name, datatype, tuple(shape), _flatten(obj["data"]), where)

    @classmethod
    def checked(
        cls, name: str, datatype: str, shape: tuple[int, ...], data: Sequence[Any], where: str
    ) -> Tensor:
        """A tensor whose data was checked against its shape and datatype."""
        if datatype not in DATATYPES:
            raise DecodeError(
                UNKNOWN_DATATYPE,
                f"{where} {name!r}: datatype {datatype!r} is not an Open Inference Protocol "
                "type (BOOL, INT*, UINT*, FP16/32/64, BYTES)",
            )
        if not shape or len(shape) > 2:
            raise DecodeError(
                TENSOR_MISMATCH,
                f"{where} {name!r}: shape {list(shape)} is not [rows] or [rows, columns]; "
                "only tabular inputs can be monitored",
            )
        if math.prod(shape) != len(data):
            raise DecodeError(
                TENSOR_MISMATCH,
                f"{where} {name!r}: shape {list(shape)} holds {math.prod(shape)} values, "
                f"data has {len(data)}",
            )
        if shape[0] > MAX_ROWS:
            raise DecodeError(TENSOR_MISMATCH, f"{where} {name!r}: {shape[0]} rows > {MAX_ROWS}")
        _check_types(name, datatype, data, where)
        return cls(name, datatype, shape, data)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def columns(self) -> int:
        return self.shape[1] if len(self.shape) == 2 else 1

    def row(self, i: int) -> Sequence[Any]:
        """The values of row ``i``."""
        c = self.columns
        return self.data[i * c : (i + 1) * c]


def _flatten(data: object) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


_NUMBER_TYPES: Final = frozenset({int, float})
_INTEGER_TYPES: Final = frozenset({int})


def _check_types(name: str, datatype: str, data: Sequence[Any], where: str) -> None:
    kinds = set(map(type, data))
    if datatype in INTEGER_TYPES and kinds <= _INTEGER_TYPES:
        return  # the common cases, at C speed (bool is its own type, not int, here)
    if (
        datatype in FLOAT_TYPES
        and kinds <= _NUMBER_TYPES
        and (float not in kinds or all(map(math.isfinite, data)))
    ):
        return
    if datatype == "BYTES":
        ok = all(isinstance(v, str) for v in data)
        expected = "strings"
    elif datatype == "BOOL":
        ok = all(isinstance(v, bool) for v in data)
        expected = "booleans"
    elif datatype in INTEGER_TYPES:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in data)
        expected = "integers"
    else:
        ok = all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in data
        )
        expected = "finite numbers"
    if not ok:
        raise DecodeError(
            TENSOR_MISMATCH, f"{where} {name!r}: datatype {datatype} needs {expected} as data"
        )


def rows_from_tensors(
    tensors: Sequence[Tensor], feature_names: Sequence[str]
) -> list[dict[str, FeatureValue]]:
    """Feature rows from input tensors.

    The one ``[N, F]`` tensor (F > 1) of a request takes its column names from
    ``feature_names`` when it lists F names, else ``<tensor>_<j>``; each ``[N]`` or
    ``[N, 1]`` tensor is one feature named after the tensor. All tensors must agree on N.

    >>> t = Tensor.checked("input-0", "FP32", (2, 2), [1.0, 2.0, 3.0, 4.0], "input")
    >>> rows_from_tensors([t], ["age", "income"])
    [{'age': 1.0, 'income': 2.0}, {'age': 3.0, 'income': 4.0}]
    >>> rows_from_tensors([t], [])
    [{'input-0_0': 1.0, 'input-0_1': 2.0}, {'input-0_0': 3.0, 'input-0_1': 4.0}]
    """
    if not tensors:
        raise DecodeError("schema_violation", "the request has no input tensors")
    n = tensors[0].rows
    if any(t.rows != n for t in tensors):
        raise DecodeError(
            TENSOR_MISMATCH,
            "input tensors disagree on the number of rows: "
            + ", ".join(f"{t.name} {t.rows}" for t in tensors),
        )
    columns: list[tuple[str, Tensor, int]] = []
    wide = [t for t in tensors if t.columns > 1]
    for t in tensors:
        if t.columns == 1:
            columns.append((t.name, t, 0))
        elif len(wide) == 1 and len(feature_names) == t.columns:
            columns += [(feature_names[j], t, j) for j in range(t.columns)]
        else:
            columns += [(f"{t.name}_{j}", t, j) for j in range(t.columns)]
    return [{name: t.data[i * t.columns + j] for name, t, j in columns} for i in range(n)]


def predictions_from_tensors(
    tensors: Sequence[Tensor], output: str
) -> tuple[list[PredictionValue], list[Mapping[str, float] | None]]:
    """One prediction per row from the output tensor named ``output`` (or the first).

    ``[N]`` or ``[N, 1]``: the value itself. ``[N, K]`` with K > 1 is a probability vector:
    its scores by class index, and the prediction is the probability of class 1 when K is 2
    (a binary score) or the most probable class index (as a string) otherwise.

    >>> t = Tensor.checked("probs", "FP64", (1, 2), [0.25, 0.75], "output")
    >>> predictions_from_tensors([t], "")
    ([0.75], [{'0': 0.25, '1': 0.75}])
    """
    chosen = [t for t in tensors if t.name == output] if output else list(tensors[:1])
    if not chosen:
        names = ", ".join(t.name for t in tensors) or "none"
        raise DecodeError(
            "schema_violation", f"the response has no output {output!r} (outputs: {names})"
        )
    t = chosen[0]
    if t.columns == 1:
        values = list(t.data)
        if t.datatype == "BOOL":
            values = [int(v) for v in values]
        return values, [None] * t.rows
    if t.datatype in ("BYTES", "BOOL"):
        raise DecodeError(
            TENSOR_MISMATCH,
            f"output {t.name!r}: a [rows, {t.columns}] {t.datatype} tensor is not a score vector",
        )
    predictions: list[PredictionValue] = []
    scores: list[Mapping[str, float] | None] = []
    for i in range(t.rows):
        row = [float(v) for v in t.row(i)]
        scores.append({str(k): v for k, v in enumerate(row)})
        predictions.append(
            row[1] if t.columns == 2 else str(max(range(len(row)), key=row.__getitem__))
        )
    return predictions, scores
