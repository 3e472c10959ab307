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

from detectors.comparison import PairedComparison, RateComparison
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
        """Canaries and challengers already judged (one decision per version)."""
        self.challengers: dict[str, tuple[str, PairedComparison]] = {}
        """Challenger or shadow version -> (champion it is paired with, comparison)."""

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

    def _rate_comparison(self) -> RateComparison:
        return RateComparison(
            tau=self.settings.comparison_tau,
            alpha=self.settings.rollback_alpha,
            margin=self.settings.rollback_margin,
            min_each=self.settings.comparison_min_labels,
            worse_only=True,
        )

    def _paired_comparison(self) -> PairedComparison:
        # Discordant pairs are a fraction of all pairs: a quarter of the labelled minimum.
        return PairedComparison(
            alpha=self.settings.rollback_alpha,
            prior=self.settings.paired_prior,
            min_discordant=self.settings.comparison_min_labels // 4,
        )

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
                comparison = self._rate_comparison()
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

    # -- champion vs challenger / shadow on the same requests ---------------------------

    def compare_pairs(
        self,
        versions: list[str],
        errors: np.ndarray,
        seqs: list[int],
        ts: list[int],
        event_ids: list[str],
    ) -> list[Decision]:
        """Labelled events in arrival order; those sharing an outcome (same ``seq``) and
        coming from the champion and a challenger or shadow form a pair."""
        champion = self.stable()
        if champion is None:
            return []
        groups: dict[int, dict[str, tuple[int, int]]] = {}
        for i, (version, seq) in enumerate(zip(versions, seqs, strict=True)):
            groups.setdefault(seq, {})[version] = (int(errors[i]), i)
        pairs: dict[str, list[tuple[bool, bool, int]]] = {}
        for group in groups.values():
            if champion not in group:
                continue
            champion_error, _ = group[champion]
            for version, (error, row) in group.items():
                info = self.versions.get(version)
                if info is None or info.role not in ("challenger", "shadow"):
                    continue
                pairs.setdefault(version, []).append((not error, not champion_error, row))
        decisions = []
        for candidate, rows in pairs.items():
            if candidate in self.decided:
                continue
            existing = self.challengers.get(candidate)
            if existing is not None and existing[0] == champion:
                comparison = existing[1]
            else:
                comparison = self._paired_comparison()
                self.challengers[candidate] = (champion, comparison)
            verdict = comparison.update(
                np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            )
            if verdict is None or not verdict.candidate_better:
                continue
            self.decided.add(candidate)
            row = rows[verdict.index][2]
            decisions.append(
                Decision(
                    decision_id=decision_id(
                        self.model_id, candidate, "alert", "challenger_better", champion
                    ),
                    type="alert",
                    kind="challenger_better",
                    model_id=self.model_id,
                    model_version=candidate,
                    severity="info",
                    features=(),
                    detector={
                        "name": "paired_discordance_e_process",
                        "config": {
                            "alpha": self.settings.rollback_alpha,
                            "prior": self.settings.paired_prior,
                        },
                    },
                    evidence={
                        "statistic": "e_value",
                        "value": verdict.e_value,
                        "threshold": 1 / self.settings.rollback_alpha,
                        "p_value": min(1.0, 1 / verdict.e_value),
                        "window": {
                            "first_ts": self.versions[candidate].first_ts,
                            "last_ts": ts[row],
                            "count": verdict.pairs,
                        },
                        "reference": f"champion version {champion} on the same requests",
                        "trigger_event_id": event_ids[row],
                        "candidate_only_right": verdict.candidate_only,
                        "champion_only_right": verdict.baseline_only,
                        "disagreement_rate": round(verdict.disagreement_rate, 6),
                    },
                    impact={
                        "traffic_share": 1.0,
                        "effect_size": round(
                            (verdict.candidate_only - verdict.baseline_only) / verdict.pairs, 6
                        ),
                        "effect_unit": "accuracy_difference",
                    },
                    ts=ts[row],
                    seq=seqs[row],
                    recommendation=f"{self.versions[candidate].role.capitalize()} {candidate} "
                    f"is more accurate than champion {champion} on the same requests: "
                    "consider promoting it.",
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
            "challengers": {k: [c, p.state()] for k, (c, p) in self.challengers.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.versions = {k: VersionInfo(*v) for k, v in state["versions"].items()}
        self.canaries = {}
        for canary, (stable, comparison_state) in state["canaries"].items():
            comparison = self._rate_comparison()
            comparison.restore(comparison_state)
            self.canaries[canary] = (stable, comparison)
        self.decided = set(state["decided"])
        self.challengers = {}
        for candidate, (champion, paired_state) in state.get("challengers", {}).items():
            paired = self._paired_comparison()
            paired.restore(paired_state)
            self.challengers[candidate] = (champion, paired)
