"""Typed, immutable records decoded from the wire format (see the JSON Schema files beside)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FeatureValue = float | int | str | bool | None
"""A feature as served: a number, a string, a bool, or null for missing."""

PredictionValue = float | int | str | tuple[str, ...]
"""A score or regression value, a class label, or ranked item ids."""

ROLES = ("champion", "challenger", "shadow", "canary")
"""Deployment roles a prediction may carry; ``champion`` when absent."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prediction served by a model."""

    event_id: str
    """Unique id of the event; a repeated id is a duplicate."""
    request_id: str
    """Join key with the outcome (and the Kafka message key)."""
    model_id: str
    """Which model served the request."""
    model_version: str
    """Which deployed version served it."""
    ts: int
    """Event time, epoch milliseconds (RFC 3339 input is converted)."""
    features: Mapping[str, FeatureValue]
    """Model inputs as served; None marks a missing value."""
    prediction: PredictionValue
    """The model's output."""
    scores: Mapping[str, float] | None = None
    """Class probabilities, when the model exposes them."""
    role: str = "champion"
    """Deployment role of this version."""
    segment: Mapping[str, str] | None = None
    """Slice attributes (region, device, cohort...)."""
    action: object = None
    """What the system did because of the prediction."""
    exploration: bool = False
    """True when the request was served by a randomised or holdout slice."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The observed ground truth for an earlier prediction."""

    event_id: str
    """Unique id of the event."""
    request_id: str
    """The prediction this outcome resolves."""
    model_id: str
    """Which model the prediction came from."""
    ts: int
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
