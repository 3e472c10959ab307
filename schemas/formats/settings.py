"""``[input]``: which format the input topics hold and how to read it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from driftline.schemas.config_types import check_types
from driftline.schemas.exceptions import ConfigError

FORMATS: Final = ("driftline", "kserve", "seldon", "mapped")
"""Input formats: driftline's own contract, KServe's inference logger, Seldon Core 2's
model topics, and any JSON prediction log read through JSON pointers."""

MAPPING_FIELDS: Final = (
    "event_id",
    "request_id",
    "model_id",
    "model_version",
    "ts",
    "features",
    "prediction",
    "scores",
    "role",
    "segment",
    "action",
)
"""Fields of a prediction that ``[input.mapping]`` can point at."""

MAPPING_REQUIRED: Final = ("request_id", "features", "prediction")
"""What a mapped log must give; the rest has a default (see `InputSettings`)."""


@dataclass(frozen=True, slots=True)
class InputSettings:
    """How the worker and replay read their input (the ``[input]`` table)."""

    format: str = "driftline"
    """One of `FORMATS`. ``driftline`` (the default) is today's contract: predictions and
    outcomes topics co-partitioned by ``request_id``; the others are re-keyed first."""
    topics: Sequence[str] = ()
    """Topics holding the foreign log (``kserve``, ``mapped``). Empty: the predictions
    topic's name. Seldon topics are found by `seldon_prefix` instead."""
    seldon_prefix: str = "seldon"
    """Seldon Core 2's topic prefix: ``<prefix>.<namespace>.model.<model>.inputs``."""
    seldon_namespaces: Sequence[str] = ()
    """Namespaces to read (empty: every namespace; never assume ``default``)."""
    features: Sequence[str] = ()
    """Names of the columns of an unnamed ``[N, F]`` input tensor or V1 instance lists,
    in order. Without them columns are named ``<tensor>_<j>``."""
    prediction_output: str = ""
    """Name of the output tensor holding the prediction (empty: the first output)."""
    model_id: str = ""
    """Model id for a mapped log whose messages do not name one."""
    model_version: str = "unknown"
    """Version for responses (or mapped messages) that name none: KServe's V2 responses
    may carry ``model_version: null``. The KServe endpoint (``default``/``canary``) is
    used before this when the logger gives one."""
    mapping: Mapping[str, str] = field(default_factory=dict)
    """``[input.mapping]``: field name -> JSON pointer (RFC 6901) into a mapped message."""
    pair_ttl_ms: int = 600_000
    """How long (event time) a request waits for its response and a response for its
    request: 10 minutes. KServe logs the response only for HTTP 200, so some requests
    never get one; they expire after this and are counted, not errors. Responses are
    written milliseconds after their requests, so minutes are ample slack."""
    pair_lateness_ms: int = 3_600_000
    """Event time a source partition may lag the fastest one and still hold back the
    expiry of unpaired halves (1 hour: a backlog reads partitions at different speeds; a
    partition that stopped logging must not keep every unanswered request forever)."""
    max_pending_pairs: int = 200_000
    """Requests and responses waiting for their other half, per input partition, before
    the oldest expire early (bounds memory when a response topic stops)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(
                f"[input] format must be one of {', '.join(FORMATS)}, got {self.format!r}"
            )
        if min(self.pair_ttl_ms, self.max_pending_pairs, self.pair_lateness_ms) <= 0:
            raise ConfigError(
                "[input] pair_ttl_ms, pair_lateness_ms and max_pending_pairs must be positive"
            )
        unknown = set(self.mapping) - set(MAPPING_FIELDS)
        if unknown:
            raise ConfigError(
                f"[input.mapping] unknown field(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(MAPPING_FIELDS)}"
            )
        for name, pointer in self.mapping.items():
            if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
                raise ConfigError(
                    f"[input.mapping] {name} must be a JSON pointer such as '/{name}', "
                    f"got {pointer!r}"
                )
        if self.format == "mapped":
            missing = [f for f in MAPPING_REQUIRED if f not in self.mapping]
            if missing:
                raise ConfigError(
                    f"[input] format = 'mapped' needs [input.mapping] {', '.join(missing)} "
                    "(JSON pointers into your messages, e.g. request_id = '/id')"
                )
            if "model_id" not in self.mapping and not self.model_id:
                raise ConfigError(
                    "[input] format = 'mapped' needs [input.mapping] model_id or "
                    "[input] model_id (the model every message belongs to)"
                )
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.seldon_prefix):
            raise ConfigError(f"[input] seldon_prefix {self.seldon_prefix!r} is not a topic prefix")

    @property
    def foreign(self) -> bool:
        """Whether the input is re-keyed before the join (every format but driftline's)."""
        return self.format != "driftline"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InputSettings:
        """From the ``[input]`` table, naming unknown keys in the error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"[input] unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        check_types(cls, values, "[input]")
        data = dict(values)
        for name in ("topics", "features", "seldon_namespaces"):
            if isinstance(data.get(name), str):
                data[name] = tuple(p for p in data[name].split(",") if p)
            elif name in data:
                data[name] = tuple(data[name])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"[input] {exc}") from None
