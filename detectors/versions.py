"""Which versions of a model are live, in which role, and how a canary compares.

Per model: every version's role (from its predictions), when it first and last served,
and its share of traffic. While a canary serves next to the stable champion, their
error rates on labelled traffic of the same period are compared with an anytime-valid
test (`detectors.comparison.RateComparison`); a significant regression emits one
``rollback`` decision (``from_version`` = canary, ``to_version`` = stable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.comparison import RateComparison
from detectors.decision import Decision, decision_id
from detectors.settings import DetectorSettings


@dataclass(slots=True)
class VersionInfo:
    """What is known about one version of a model."""

    role: str
    first_ts: int
    last_ts: int
    events: int = 0
    """Predictions served so far (cumulative, so shares do not depend on batching)."""


class ModelVersions:
    """Version registry and canary comparison of one model."""

    def __init__(self, model_id: str, settings: DetectorSettings) -> None:
        self.model_id = model_id
        self.settings = settings
        self.versions: dict[str, VersionInfo] = {}
        self.canaries: dict[str, tuple[str, RateComparison]] = {}
        """Canary version -> (stable version it is compared with, comparison)."""
        self.decided: set[str] = set()
        """Canaries already judged (one rollback per canary version)."""

    # -- registry ----------------------------------------------------------------------

    def observe(self, version: str, role: str, count: int, first_ts: int, last_ts: int) -> None:
        """A batch of ``count`` predictions of one version (all with this role)."""
        info = self.versions.get(version)
        if info is None:
            info = self.versions[version] = VersionInfo(role, first_ts, last_ts)
        info.role = role
        info.last_ts = max(info.last_ts, last_ts)
        info.events += count

    def stable(self) -> str | None:
        """The champion serving the most traffic (the rollback target)."""
        champions = [(v.events, name) for name, v in self.versions.items() if v.role == "champion"]
        return max(champions)[1] if champions else None

    # -- canary vs stable --------------------------------------------------------------

    def compare(
        self,
        versions: list[str],
        errors: np.ndarray,
        seqs: list[int],
        ts: list[int],
        event_ids: list[str],
    ) -> list[Decision]:
        """Labelled events of this model in arrival order (version and 0/1 error each)."""
        stable = self.stable()
        if stable is None:
            return []
        decisions = []
        live = [
            name
            for name, v in self.versions.items()
            if v.role == "canary" and name not in self.decided
        ]
        names = np.array(versions, dtype=object)
        for canary in live:
            mine = (names == canary) | (names == stable)
            if not mine.any():
                continue
            existing = self.canaries.get(canary)
            if existing is not None and existing[0] == stable:
                comparison = existing[1]
            else:
                comparison = RateComparison(
                    tau=self.settings.comparison_tau,
                    alpha=self.settings.rollback_alpha,
                    margin=self.settings.rollback_margin,
                    min_each=self.settings.comparison_min_labels,
                    worse_only=True,
                )
                self.canaries[canary] = (stable, comparison)
            rows = np.flatnonzero(mine)
            verdict = comparison.update(names[rows] == canary, errors[rows])
            if verdict is None:
                continue
            self.decided.add(canary)
            row = int(rows[verdict.index])
            info = self.versions[canary]
            decisions.append(
                Decision(
                    decision_id=decision_id(
                        self.model_id, canary, "rollback", "canary_regression", stable
                    ),
                    type="rollback",
                    kind="canary_regression",
                    model_id=self.model_id,
                    model_version=canary,
                    severity="critical",
                    features=(),
                    detector={
                        "name": "anytime_valid_rate_comparison",
                        "config": {
                            "alpha": self.settings.rollback_alpha,
                            "tau": self.settings.comparison_tau,
                            "margin": self.settings.rollback_margin,
                            "min_labels_each": self.settings.comparison_min_labels,
                        },
                    },
                    evidence={
                        "statistic": "error_rate_difference",
                        "value": round(verdict.difference, 6),
                        "threshold": self.settings.rollback_margin,
                        "p_value": None,
                        "confidence_interval": [round(verdict.lower, 6), round(verdict.upper, 6)],
                        "confidence": 1 - self.settings.rollback_alpha,
                        "window": {
                            "first_ts": info.first_ts,
                            "last_ts": ts[row],
                            "count": verdict.candidate_n + verdict.baseline_n,
                        },
                        "reference": f"stable version {stable}",
                        "trigger_event_id": event_ids[row],
                        "canary": {
                            "labelled": verdict.candidate_n,
                            "error_rate": round(verdict.candidate_rate, 6),
                        },
                        "stable": {
                            "labelled": verdict.baseline_n,
                            "error_rate": round(verdict.baseline_rate, 6),
                        },
                    },
                    impact={
                        "traffic_share": round(
                            info.events / (info.events + self.versions[stable].events), 6
                        ),
                        "effect_size": round(verdict.difference, 6),
                        "effect_unit": "error_rate_increase",
                    },
                    ts=ts[row],
                    seq=seqs[row],
                    recommendation=f"Canary {canary} makes more errors than {stable}: route its "
                    f"traffic back to {stable}.",
                    from_version=canary,
                    to_version=stable,
                )
            )
        return decisions

    def state(self) -> dict[str, Any]:
        return {
            "versions": {
                k: [v.role, v.first_ts, v.last_ts, v.events] for k, v in self.versions.items()
            },
            "canaries": {k: [s, c.state()] for k, (s, c) in self.canaries.items()},
            "decided": sorted(self.decided),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.versions = {k: VersionInfo(*v) for k, v in state["versions"].items()}
        self.canaries = {}
        for canary, (stable, comparison_state) in state["canaries"].items():
            comparison = RateComparison(
                tau=self.settings.comparison_tau,
                alpha=self.settings.rollback_alpha,
                margin=self.settings.rollback_margin,
                min_each=self.settings.comparison_min_labels,
                worse_only=True,
            )
            comparison.restore(comparison_state)
            self.canaries[canary] = (stable, comparison)
        self.decided = set(state["decided"])
