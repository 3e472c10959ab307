"""What detectors tell the decision policy: firing tests and per-window summaries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class BatchMeta:
    """Per-event context for a batch of one model version's events."""

    seq: np.ndarray
    """Arrival position of each event in the whole stream (orders signals)."""
    ts: np.ndarray
    """Event time of each event, epoch ms."""
    event_ids: Sequence[str | None]
    """Event id of each event (the trigger recorded in decisions); None for a slice of
    events (`detectors.drift.channel.Channel.update_slices`)."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def slice(self, start: int, stop: int) -> BatchMeta:
        return BatchMeta(self.seq[start:stop], self.ts[start:stop], self.event_ids[start:stop])


@dataclass(frozen=True, slots=True)
class Signal:
    """One test crossing its threshold: the raw material of a decision."""

    seq: int
    """Arrival position of the triggering event."""
    kind: str
    """Decision kind it supports: ``data_drift``, ``prediction_drift``, ``data_quality``,
    ``concept_drift`` or ``online_offline_gap``."""
    feature: str | None
    """Feature concerned (``prediction`` for prediction drift, None for performance)."""
    detector: str
    """Test that fired, e.g. ``cusum_mean_up`` or ``window_psi``."""
    statistic: str
    """Name of the statistic in ``value``."""
    value: float
    """The statistic when the test fired."""
    threshold: float
    """The threshold it crossed."""
    p_value: float | None
    """Nominal p-value where the test has one (window tests), else None."""
    effect: float
    """Effect size in ``effect_unit`` (shift in sd, variance ratio, PSI, rate...)."""
    effect_unit: str
    """Unit of ``effect``."""
    strength: float
    """Comparable across tests for ranking: information per event (KL rate) for sequential
    tests, PSI for window tests."""
    ts: int
    """Event time of the triggering event."""
    event_id: str | None
    """Id of the triggering event."""
    first_ts: int
    """Event time at which the evidence starts (change-point estimate)."""
    count: int
    """Events in the evidence window."""
    config: dict[str, Any] = field(default_factory=dict)
    """Detector configuration (design effect, threshold derivation)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Test-specific detail (category, rates...)."""
    test: str = ""
    """Identity of the sequential test that crossed (empty for window tests): its
    `Recovery` names the same, so the policy knows which test came back."""


@dataclass(frozen=True, slots=True)
class WindowReport:
    """End of a tumbling window of one channel: is the channel drifted in it?"""

    seq: int
    """Arrival position of the window's last event."""
    kind: str
    """``data_drift``, ``prediction_drift`` or ``concept_drift``."""
    drifted: bool
    """True when any feature's window test exceeded its effect floor."""
    ts: int
    """Event time of the window's last event."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """A latched sequential test finding its quantity back at the reference."""

    seq: int
    """Arrival position of the event at which the reverse test crossed."""
    kind: str
    """Kind of the test that had alarmed."""
    feature: str | None
    """Its feature (None for model-level tests)."""
    detector: str
    """Its detector name, as in the alarm's signal."""
    ts: int
    """Event time of that event, epoch ms."""
    count: int
    """Events between the alarm and the recovery."""
    test: str = ""
    """Identity of the test, as in the signal of its alarm."""
