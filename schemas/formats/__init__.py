"""Prediction logs as model-serving platforms write them, read without a translator.

Each format turns one Kafka record (`SourceRecord`) into what driftline's own contract
carries: `RequestPart` and `ResponsePart` for platforms that log a request and its
response as two records (KServe's inference logger, Seldon Core 2), or a whole
`schemas.records.Prediction` for a log that has both in one message (``mapped``).
Everything that cannot be read raises `schemas.exceptions.DecodeError` with a reason
from `schemas.decode.REASONS`, so it is dead-lettered like any other bad input.
"""

from __future__ import annotations

from driftline.schemas.formats.correlation import correlation_key
from driftline.schemas.formats.kserve import read_kserve
from driftline.schemas.formats.mapped import read_mapped, resolve_pointer
from driftline.schemas.formats.parts import RequestPart, ResponsePart, SourceRecord
from driftline.schemas.formats.seldon import SeldonTopic, read_seldon, seldon_pattern
from driftline.schemas.formats.settings import FORMATS, InputSettings
from driftline.schemas.formats.tensors import Tensor, rows_from_tensors

__all__ = [
    "FORMATS",
    "InputSettings",
    "RequestPart",
    "ResponsePart",
    "SeldonTopic",
    "SourceRecord",
    "Tensor",
    "correlation_key",
    "read_kserve",
    "read_mapped",
    "read_seldon",
    "resolve_pointer",
    "rows_from_tensors",
    "seldon_pattern",
]
