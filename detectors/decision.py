"""The decision record published to the alert, retrain and rollback topics."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DECISION_TYPES = ("alert", "retrain", "rollback")
SEVERITIES = ("info", "warning", "critical")


def decision_id(*parts: object) -> str:
    """Deterministic id: the same evidence gives the same id (32 hex characters).

    >>> decision_id("m", "v1", "alert", "data_drift", "x0", "e-17")
    '418e245c5b700c9443ff5dbb780455e9'
    """
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Decision:
    """An alert, retrain or rollback decision with its evidence (see decision.schema.json)."""

    decision_id: str
    type: str
    kind: str
    model_id: str
    model_version: str
    severity: str
    features: tuple[str, ...]
    detector: dict[str, Any]
    evidence: dict[str, Any]
    impact: dict[str, Any]
    ts: int
    """Event time of the triggering event."""
    seq: int
    """Arrival position of the triggering event in the stream (not published)."""
    recommendation: str = ""
    segment: dict[str, str] | None = None
    from_version: str | None = None
    to_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, emitted_at: int) -> dict[str, Any]:
        """Wire form; ``emitted_at`` is wall time and not part of the id."""
        out: dict[str, Any] = {
            "decision_id": self.decision_id,
            "type": self.type,
            "kind": self.kind,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "severity": self.severity,
            "features": list(self.features),
            "segment": self.segment,
            "detector": self.detector,
            "evidence": self.evidence,
            "impact": self.impact,
            "ts": self.ts,
            "emitted_at": emitted_at,
            "recommendation": self.recommendation,
        }
        if self.from_version is not None:
            out["from_version"] = self.from_version
            out["to_version"] = self.to_version
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Trigger:
    """The event a decision was made on: its event time, its position in the model
    stage's merge order, and its id where one event (not a window) triggered it."""

    ts: int
    seq: int
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Impact:
    """How much of the model's traffic is concerned, and by how much."""

    traffic_share: float
    effect_size: float
    effect_unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "traffic_share": self.traffic_share,
            "effect_size": self.effect_size,
            "effect_unit": self.effect_unit,
        }


def build_decision(
    *,
    id_parts: tuple[object, ...],
    type_: str,
    kind: str,
    model_id: str,
    model_version: str,
    severity: str,
    detector: str,
    config: Mapping[str, Any],
    statistic: str,
    value: float,
    threshold: float,
    p_value: float | None,
    first_ts: int,
    count: int,
    reference: str,
    trigger: Trigger,
    impact: Impact,
    recommendation: str,
    details: Mapping[str, Any] | None = None,
    features: tuple[str, ...] = (),
    segment: dict[str, str] | None = None,
    rollback: tuple[str, str] | None = None,
) -> Decision:
    """The one place a decision is made (see decision.schema.json).

    ``config`` is the configuration the deciding test ran with, as the test reports it
    (not re-read from the settings, which may differ: a comparison splits its alpha);
    the evidence's window ends at the trigger; ``details`` are the evidence fields of
    this kind of decision beyond the common ones; ``rollback`` is (from, to) version.

    >>> d = build_decision(
    ...     id_parts=("m", "v2", "rollback", "canary_regression", "v1"),
    ...     type_="rollback", kind="canary_regression", model_id="m", model_version="v2",
    ...     severity="critical", detector="anytime_valid_mean_comparison",
    ...     config={"alpha": 0.005}, statistic="error_rate_difference", value=0.04,
    ...     threshold=0.0, p_value=None, first_ts=0, count=2_000,
    ...     reference="stable version v1", trigger=Trigger(90, 12, "e-12"),
    ...     impact=Impact(0.1, 0.04, "error_rate_difference"),
    ...     recommendation="Route traffic back to v1.", rollback=("v2", "v1"))
    >>> d.evidence["window"], d.evidence["trigger_event_id"], d.to_version
    ({'first_ts': 0, 'last_ts': 90, 'count': 2000}, 'e-12', 'v1')
    """
    if type_ not in DECISION_TYPES or severity not in SEVERITIES:
        raise ValueError(f"not a decision: type {type_!r}, severity {severity!r}")
    evidence: dict[str, Any] = {
        "statistic": statistic,
        "value": value,
        "threshold": threshold,
        "p_value": p_value,
        "window": {"first_ts": first_ts, "last_ts": trigger.ts, "count": count},
        "reference": reference,
    }
    if trigger.event_id is not None:
        evidence["trigger_event_id"] = trigger.event_id
    evidence.update(details or {})
    return Decision(
        decision_id=decision_id(*id_parts),
        type=type_,
        kind=kind,
        model_id=model_id,
        model_version=model_version,
        severity=severity,
        features=features,
        detector={"name": detector, "config": dict(config)},
        evidence=evidence,
        impact=impact.to_dict(),
        ts=trigger.ts,
        seq=trigger.seq,
        recommendation=recommendation,
        segment=segment,
        from_version=rollback[0] if rollback else None,
        to_version=rollback[1] if rollback else None,
    )
