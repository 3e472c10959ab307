"""Which key a foreign record is re-keyed by, so that a request, its response and the
outcomes of its rows meet on one partition."""

from __future__ import annotations

import re
from typing import Final

from driftline.schemas.decode import outcome_from_dict
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats import kserve, mapped, seldon
from driftline.schemas.formats.parts import SourceRecord
from driftline.schemas.formats.settings import InputSettings
from driftline.schemas.formats.values import json_body

ROW_SUFFIX: Final = re.compile(r"(?::\d+)+$")
"""Row suffixes of batched requests' request ids (``<id>:<row>``)."""


def correlation_key(request_id: str) -> str:
    """The partitioning key of a request id: the id without row suffixes.

    A batched request's rows are ``<id>:0``, ``<id>:1``...; their outcomes name those ids.
    Stripping every trailing ``:<digits>`` maps a row's id and its request's id to the same
    key whatever the id itself looks like (an id that already ends in ``:<digits>`` loses
    that part in both), so the request, its response and every row's outcome land on one
    partition.

    >>> correlation_key("4f1c:3")
    '4f1c'
    >>> correlation_key("order:12:0") == correlation_key("order:12")
    True
    """
    return ROW_SUFFIX.sub("", request_id)


def correlation_id(record: SourceRecord, settings: InputSettings, outcomes_topic: str) -> str:
    """The id a record correlates on: an outcome's ``request_id``, KServe's ``ce_id``,
    Seldon's ``x-request-id``, or the mapped request id.

    Raises
    ------
    DecodeError
        When the record has none (it can be neither paired nor joined).
    """
    if record.topic == outcomes_topic:
        obj = json_body(record.value, "outcome")
        if not isinstance(obj, dict):
            raise DecodeError("not_an_object", "an outcome must be a JSON object")
        return outcome_from_dict({"type": "outcome", **obj}).request_id
    if settings.format == "kserve":
        return kserve.correlation_of(record)
    if settings.format == "seldon":
        return seldon.correlation_of(record)
    return mapped.request_id_of(json_body(record.value, "mapped message"), settings)
