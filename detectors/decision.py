"""The decision record published to the alert, retrain and rollback topics."""

from __future__ import annotations

import hashlib
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
