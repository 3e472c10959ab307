"""Typed, immutable records decoded from the wire format (see the JSON Schema files beside).

The records are msgspec Structs: one is built in about 0.2 us (a frozen dataclass took
2.5 us, setting its slots one by one 1.5), and msgspec's typed JSON decoder reads a
message straight into one, checking the constraints its fields' types carry (non-empty
ids, the timestamp range, probabilities in [0, 1], at most `MAX_FEATURES` features): see
`schemas.decode`. Built in code, a record is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final, Literal

import msgspec

FeatureValue = float | int | str | bool | None
"""A feature as served: a number, a string, a bool, or null for missing."""

PredictionValue = float | int | str | tuple[str, ...]
"""A score or regression value, a class label, or ranked item ids."""

ActionValue = str | int | bool | float | tuple[str, ...] | None
"""What a system did because of a prediction: a decision, an amount, a flag, ranked ids."""

Role = Literal["champion", "challenger", "shadow", "canary"]
ROLES: Final = ("champion", "challenger", "shadow", "canary")
"""Deployment roles a prediction may carry; ``champion`` when absent (`Role` as a tuple;
a test holds the two together)."""

MAX_FEATURES: Final = 10_000
"""A prediction with more inputs than this is almost certainly a serialisation bug."""

MIN_TS_MS: Final = 946_684_800_000
"""2000-01-01T00:00:00Z. Earlier epoch-ms values are nearly always seconds sent as ms."""

MAX_TS_MS: Final = 4_102_444_800_000
"""2100-01-01T00:00:00Z: later values are nearly always microseconds or nanoseconds."""

_Id = Annotated[str, msgspec.Meta(min_length=1)]
_Ts = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]
_Probability = (
    Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | Annotated[int, msgspec.Meta(ge=0, le=1)]
)
_Features = Annotated[Mapping[str, FeatureValue], msgspec.Meta(max_length=MAX_FEATURES)]


# gc=False: records are not tracked by the cycle collector. They hold what JSON decodes
# to (no record can reach itself), and tens of thousands of them are alive in a worker at
# once (items waiting in merges, joins, batches): tracked, every young collection
# counted them and the older ones walked them all. On the paced worker benchmark the
# collections fell from 56-58 to 36-38 a run and the longest from 264-320 to 130-194 ms
# (with the join's waiting predictions as tuples as well: 34-36, and 117-134 ms).


class Prediction(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="prediction"):
    """One prediction served by a model."""

    event_id: _Id
    """Unique id of the event; a repeated id is a duplicate."""
    request_id: _Id
    """Join key with the outcome (and the Kafka message key)."""
    model_id: _Id
    """Which model served the request."""
    model_version: _Id
    """Which deployed version served it."""
    ts: _Ts
    """Event time, epoch milliseconds (RFC 3339 input is converted)."""
    features: _Features
    """Model inputs as served; None marks a missing value."""
    prediction: PredictionValue
    """The model's output."""
    scores: Mapping[str, _Probability] | None = None
    """Class probabilities, when the model exposes them."""
    role: Role = "champion"
    """Deployment role of this version."""
    segment: Mapping[str, str] | None = None
    """Slice attributes (region, device, cohort...)."""
    action: ActionValue = None
    """What the system did because of the prediction."""
    exploration: bool = False
    """True when the request was served by a randomised or holdout slice."""


class Outcome(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="outcome"):
    """The observed ground truth for an earlier prediction."""

    event_id: _Id
    """Unique id of the event."""
    request_id: _Id
    """The prediction this outcome resolves."""
    model_id: _Id
    """Which model the prediction came from."""
    ts: _Ts
    """When the outcome was observed, epoch milliseconds."""
    label: float | int | str | bool | None
    """Ground truth; None means nothing was observed."""
    segment: Mapping[str, str] | None = None
    """Slice attributes of an independent outcome (where it was observed)."""
    independent: bool = False
    """Observed without any action of the model (a citizen report, a randomised audit):
    not joined with a prediction; the reference feedback-loop detection compares the
    model's own allocation with."""


Event = Prediction | Outcome
