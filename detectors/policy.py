"""From signals to decisions: one real change gives one decision, not a storm.

Per model version and decision kind the policy keeps an *episode*. The first signal of a
kind opens one and emits the alert; later signals of that kind join the open episode.
A sequential test that alarmed stays latched until its own reverse test finds the
quantity back at the reference (`detectors.stats.latch`), and an episode closes only when every
test it holds has recovered, at least ``cooldown_events`` have passed and the last
``recover_windows`` windows were clean: a change that persists is one episode however
long it lasts, and one that comes back after a real recovery is a new one. A drift on
inputs or predictions that stays for ``sustain_windows`` windows after its alert is
escalated once to ``retrain``; a rise in the error rate asks for retraining at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from driftline.detectors.decision import Decision, Impact, Trigger, build_decision
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import Recovery, Signal, WindowReport

SEVERITY = {
    "data_drift": "warning",
    "prediction_drift": "warning",
    "data_quality": "warning",
    "concept_drift": "critical",
    "online_offline_gap": "warning",
    "training_serving_skew": "warning",
}
"""Severity of the alert for each kind."""

RECOMMENDATION = {
    "data_drift": "Inputs moved away from the reference. Check the upstream feature pipeline "
    "for a change; if the shift is real, retrain on recent data.",
    "prediction_drift": "The model's output distribution moved. Check for a deployment or "
    "upstream change; confirm with labels before acting.",
    "data_quality": "Missing, wrongly typed or out-of-range values rose. Inspect the feature "
    "pipeline; retraining will not fix broken inputs.",
    "concept_drift": "Error rate rose on labelled traffic: retrain on recent labelled data "
    "and check for a changed relationship between inputs and outcomes.",
    "online_offline_gap": "Live accuracy is below the offline estimate: look for "
    "training-serving skew (feature computation, leakage in offline evaluation).",
    "training_serving_skew": "Live inputs differ from the training data since this version "
    "went live: compare how the named features are computed offline and online (units, "
    "defaults for missing values, joins, time windows) before retraining.",
}

RETRAIN_ON_ALERT = frozenset({"concept_drift"})
"""Kinds whose first signal also emits ``retrain``."""

ESCALATING = frozenset({"data_drift", "prediction_drift"})
"""Kinds escalated to ``retrain`` when sustained."""

REPORT_KIND = {
    "data_drift": "data_drift",
    "prediction_drift": "prediction_drift",
    "data_quality": "data_drift",
    "concept_drift": "concept_drift",
    "online_offline_gap": "concept_drift",
    "training_serving_skew": "data_drift",
}
"""Whose window reports pace each kind's episode (quality and gap have no windows of their
own: they follow the input windows and the labelled windows)."""

WINDOWED = frozenset({"data_drift", "prediction_drift", "concept_drift", "online_offline_gap"})
"""Kinds whose episodes stay drifted while their window reports say drifted (the window
tests of inputs, predictions and labelled accuracy; quality and skew follow their own
latched tests only)."""

PUBLISHED_KIND = {"training_serving_skew": "online_offline_gap"}
"""Internal kinds published under a contract kind: input drift against an offline profile
found right after a version goes live is training-serving skew, an online/offline gap."""


@dataclass(slots=True)
class Episode:
    """An open run of signals of one kind for one model version."""

    alert_id: str
    opened_seq: int
    features: dict[str, float] = field(default_factory=dict)
    signals: int = 0
    windows: int = 0
    drifted_streak: int = 0
    clean_streak: int = 0
    escalated: bool = False
    fresh: bool = False
    """A signal arrived since the last window report."""
    open_tests: list[str] = field(default_factory=list)
    """Latched sequential tests (`Signal.test`) that have not recovered yet."""


class DecisionPolicy:
    """Turns ordered signals and window reports of one model version into decisions."""

    def __init__(
        self, settings: DetectorSettings, model_id: str, model_version: str, reference: str
    ) -> None:
        self.settings = settings
        self.model_id = model_id
        self.model_version = model_version
        self.reference = reference
        self.episodes: dict[str, Episode] = {}
        self.opened: dict[str, int] = {}
        """Episodes opened so far per kind: the ordinal that identifies a decision."""
        self.suppressed = 0
        self.cooldown_windows = math.ceil(settings.cooldown_events / settings.window_events)

    def process(
        self, signals: list[Signal], reports: list[WindowReport | Recovery]
    ) -> list[Decision]:
        """Consume one batch worth of signals, window reports and recoveries, in arrival
        order (at one event: signals, then recoveries, then window reports)."""
        items: list[tuple[int, int, Any]] = [(s.seq, 0, s) for s in signals]
        merged: dict[tuple[int, str], WindowReport] = {}
        for r in reports:
            if isinstance(r, Recovery):
                items.append((r.seq, 1, r))
                continue
            seen = merged.get((r.seq, r.kind))
            if seen is None or (r.drifted and not seen.drifted):
                merged[(r.seq, r.kind)] = r
        items += [(r.seq, 2, r) for r in merged.values()]
        items.sort(key=lambda t: (t[0], t[1]))
        decisions: list[Decision] = []
        pending: list[Signal] = []
        for _, order, item in items:
            if order == 0:
                pending.append(item)
                continue
            decisions += self._flush(pending)
            pending = []
            if order == 1:
                self._recovered(item)
            else:
                decisions += self._report(item)
        decisions += self._flush(pending)
        return decisions

    def _recovered(self, recovery: Recovery) -> None:
        """A latched test is back at the reference: it no longer holds its episode open."""
        for episode in self.episodes.values():
            if recovery.test in episode.open_tests:
                episode.open_tests.remove(recovery.test)

    def _flush(self, pending: list[Signal]) -> list[Decision]:
        decisions: list[Decision] = []
        pending.sort(key=lambda s: (s.seq, s.kind, -s.strength, s.feature or "", s.detector))
        for _, group_iter in groupby(pending, key=lambda s: (s.seq, s.kind)):
            group = list(group_iter)
            decisions += self._signal_group(group)
        return decisions

    def _signal_group(self, group: list[Signal]) -> list[Decision]:
        kind = group[0].kind
        if kind == "data_drift" and "training_serving_skew" in self.episodes:
            kind = "training_serving_skew"  # the same shift, still open since go-live
        episode = self.episodes.get(kind)
        if episode is not None:
            for s in group:
                self._note(episode, s)
            self.suppressed += len(group)
            return []
        self.opened[kind] = self.opened.get(kind, 0) + 1
        alert = self._decision("alert", group, SEVERITY[kind])
        episode = Episode(alert_id=alert.decision_id, opened_seq=group[0].seq)
        for s in group:
            self._note(episode, s)
        self.episodes[kind] = episode
        out = [alert]
        if kind in RETRAIN_ON_ALERT:
            out.append(self._decision("retrain", group, "critical"))
            episode.escalated = True
        return out

    @staticmethod
    def _note(episode: Episode, s: Signal) -> None:
        name = s.feature or "performance"
        episode.features[name] = max(episode.features.get(name, 0.0), s.strength)
        episode.signals += 1
        episode.fresh = True
        if s.test and s.test not in episode.open_tests:
            episode.open_tests.append(s.test)

    def _report(self, report: WindowReport) -> list[Decision]:
        out = []
        for kind, episode in list(self.episodes.items()):
            if REPORT_KIND[kind] != report.kind:
                continue
            drifted = (
                episode.fresh
                or bool(episode.open_tests)
                or (report.drifted and REPORT_KIND[kind] == report.kind and kind in WINDOWED)
            )
            episode.fresh = False
            episode.windows += 1
            if drifted:
                episode.drifted_streak += 1
                episode.clean_streak = 0
            else:
                episode.clean_streak += 1
                episode.drifted_streak = 0
            if (
                kind in ESCALATING
                and not episode.escalated
                and episode.drifted_streak >= self.settings.sustain_windows
            ):
                episode.escalated = True
                out.append(self._escalation(kind, episode, report))
            if (
                episode.windows >= self.cooldown_windows
                and episode.clean_streak >= self.settings.recover_windows
            ):
                del self.episodes[kind]
        return out

    def _escalation(self, kind: str, episode: Episode, report: WindowReport) -> Decision:
        ranked = sorted(episode.features.items(), key=lambda kv: (-kv[1], kv[0]))
        window = self.settings.window_events
        return build_decision(
            id_parts=self._id_parts("retrain", kind),
            type_="retrain",
            kind=kind,
            model_id=self.model_id,
            model_version=self.model_version,
            severity="warning",
            features=tuple(name for name, _ in ranked),
            detector="sustained_drift",
            config={"sustain_windows": self.settings.sustain_windows, "window_events": window},
            statistic="drifted_windows",
            value=episode.drifted_streak,
            threshold=self.settings.sustain_windows,
            p_value=None,
            first_ts=report.ts,
            count=episode.drifted_streak * window,
            reference=self.reference,
            trigger=Trigger(report.ts, report.seq),
            details={
                "alert_id": episode.alert_id,
                "signals": [{"feature": n, "strength": v} for n, v in ranked],
            },
            impact=Impact(1.0, ranked[0][1] if ranked else 0.0, "kl_per_event"),
            recommendation=f"Drift sustained over {episode.drifted_streak} windows after the "
            "alert: retrain on recent data (features ranked by effect).",
        )

    def _id_parts(self, type_: str, kind: str) -> tuple[object, ...]:
        """Same model, version, type, kind and episode ordinal: same id. A restarted
        worker, another partition's shard or another batching that finds the same episode
        re-emits the same id, so consumers deduplicate on it."""
        return (self.model_id, self.model_version, type_, kind, self.opened.get(kind, 0))

    def _decision(self, type_: str, group: list[Signal], severity: str) -> Decision:
        top = group[0]
        features: list[str] = []
        for s in group:
            if s.feature is not None and s.feature not in features:
                features.append(s.feature)
        detectors = sorted({s.detector for s in group})
        share = 1.0
        if top.effect_unit == "frequency_ratio":
            share = float(top.extra.get("observed_share", 1.0))
        elif top.effect_unit in ("invalid_rate", "missing_rate"):
            share = float(top.effect)
        return build_decision(
            id_parts=self._id_parts(type_, top.kind),
            type_=type_,
            kind=PUBLISHED_KIND.get(top.kind, top.kind),
            model_id=self.model_id,
            model_version=self.model_version,
            severity=severity,
            features=tuple(features),
            detector=top.detector if len(detectors) == 1 else "+".join(detectors),
            config=top.config,
            statistic=top.statistic,
            value=top.value,
            threshold=top.threshold,
            p_value=top.p_value,
            first_ts=top.first_ts,
            count=top.count,
            reference=self.reference,
            trigger=Trigger(top.ts, top.seq, top.event_id),
            details={
                "comparison": top.kind if top.kind in PUBLISHED_KIND else None,
                "signals": [_signal_evidence(s) for s in group],
            },
            impact=Impact(round(min(max(share, 0.0), 1.0), 6), top.effect, top.effect_unit),
            recommendation=RECOMMENDATION[top.kind],
        )

    def state(self) -> dict[str, Any]:
        return {
            "suppressed": self.suppressed,
            "opened": dict(self.opened),
            "episodes": {
                k: {
                    "alert_id": e.alert_id,
                    "opened_seq": e.opened_seq,
                    "features": e.features,
                    "signals": e.signals,
                    "windows": e.windows,
                    "drifted_streak": e.drifted_streak,
                    "clean_streak": e.clean_streak,
                    "escalated": e.escalated,
                    "fresh": e.fresh,
                    "open_tests": list(e.open_tests),
                }
                for k, e in self.episodes.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.suppressed = state["suppressed"]
        self.opened = dict(state["opened"])
        self.episodes = {k: Episode(**v) for k, v in state["episodes"].items()}


def _signal_evidence(s: Signal) -> dict[str, Any]:
    return {
        "feature": s.feature,
        "detector": s.detector,
        "statistic": s.statistic,
        "value": s.value,
        "threshold": s.threshold,
        "p_value": s.p_value,
        "effect": s.effect,
        "effect_unit": s.effect_unit,
        "change_started_ts": s.first_ts,
        "events_since_change": s.count,
        **s.extra,
    }
