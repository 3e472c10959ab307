"""The whole detector set over a stream of events: dedupe, join, route, decide.

`Engine` is what replay and the stream worker both call, so the same events in the same
order give the same decisions whether they come from a file or from Kafka.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.decision import Decision
from detectors.join import OutcomeJoin
from detectors.monitor import VersionMonitor
from detectors.reference import ReferenceProfile, infer_task, prediction_error
from detectors.settings import DetectorSettings
from detectors.versions import ModelVersions
from schemas.records import Event, Outcome, Prediction

ENGINE_COUNTERS = ("events", "predictions", "outcomes", "duplicates", "evicted_versions")


class RecentIds:
    """Remembers at least the last ``horizon`` ids, at most twice that, in O(1) per id.

    Two generations of sets: when the current one holds ``horizon`` ids it becomes the
    previous one and a new current one starts.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.current: set[str] = set()
        self.previous: set[str] = set()

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already remembered (a duplicate)."""
        if key in self.current or key in self.previous:
            return False
        self.current.add(key)
        if len(self.current) >= self.horizon:
            self.rotate()
        return True

    def rotate(self) -> None:
        """The current generation becomes the previous one; the oldest is forgotten."""
        self.previous = self.current
        self.current = set()

    def state(self) -> list[list[str]]:
        return [list(self.previous), list(self.current)]

    def restore(self, state: list[list[str]]) -> None:
        self.previous = set(state[0])
        self.current = set(state[1])


class Engine:
    """Routes events to per-version monitors and collects their decisions.

    Parameters
    ----------
    settings
        Default detector settings.
    profiles
        Reference profiles keyed by ``model_id`` (all versions) or ``model_id@version``.
    model_settings
        Per-model overrides of ``settings``.
    """

    def __init__(
        self,
        settings: DetectorSettings | None = None,
        profiles: Mapping[str, ReferenceProfile] | None = None,
        model_settings: Mapping[str, DetectorSettings] | None = None,
    ) -> None:
        self.settings = settings or DetectorSettings()
        self.profiles = dict(profiles or {})
        self.model_settings = dict(model_settings or {})
        self.join = OutcomeJoin(
            self.settings.join_ttl_ms, self.settings.join_max_pending, self.settings.join_memory
        )
        self.monitors: dict[str, OrderedDict[str, VersionMonitor]] = {}
        self.seen = RecentIds(self.settings.dedupe_horizon)
        self.seq = 0
        self.counts = dict.fromkeys(ENGINE_COUNTERS, 0)
        self.decision_counts: dict[str, int] = {}
        self.versions: dict[str, ModelVersions] = {}

    def settings_for(self, model_id: str) -> DetectorSettings:
        return self.model_settings.get(model_id, self.settings)

    def monitor(self, model_id: str, model_version: str) -> VersionMonitor:
        """The monitor of a version, created on first sight."""
        versions = self.monitors.setdefault(model_id, OrderedDict())
        monitor = versions.get(model_version)
        if monitor is None:
            profile = self.profiles.get(f"{model_id}@{model_version}") or self.profiles.get(
                model_id
            )
            settings = self.settings_for(model_id)
            monitor = VersionMonitor(model_id, model_version, settings, profile)
            versions[model_version] = monitor
            while len(versions) > settings.max_versions_per_model:
                versions.popitem(last=False)
                self.counts["evicted_versions"] += 1
        else:
            versions.move_to_end(model_version)
        return monitor

    def process(self, events: Sequence[Event]) -> list[Decision]:
        """Feed a batch of decoded events in arrival order; return new decisions."""
        preds: dict[tuple[str, str], tuple[list[Prediction], list[int]]] = {}
        labels: dict[tuple[str, str], tuple[list[Any], list[int], list[int], list[str]]] = {}
        counts = self.counts
        join = self.join
        seen = self.seen
        current, previous, horizon = seen.current, seen.previous, seen.horizon
        duplicates = n_predictions = 0
        for seq, event in enumerate(events, start=self.seq):
            event_id = event.event_id
            if event_id in current or event_id in previous:
                duplicates += 1
                continue
            current.add(event_id)
            if len(current) >= horizon:
                seen.rotate()
                current, previous = seen.current, seen.previous
            if type(event) is Prediction:
                n_predictions += 1
                key = (event.model_id, event.model_version)
                bucket = preds.get(key)
                if bucket is None:
                    bucket = preds[key] = ([], [])
                bucket[0].append(event)
                bucket[1].append(seq)
                joined = join.add_prediction(
                    event.request_id,
                    (event.model_id, event.model_version, event.prediction, event.ts),
                )
            else:
                outcome: Outcome = event  # type: ignore[assignment]
                joined = join.add_outcome(
                    outcome.request_id, outcome.model_id, outcome.label, outcome.ts
                )
            for j in joined:
                lab = labels.get((j.model_id, j.model_version))
                if lab is None:
                    lab = labels[(j.model_id, j.model_version)] = ([], [], [], [])
                lab[0].append((j.prediction, j.label))
                lab[1].append(seq)
                lab[2].append(event.ts)
                lab[3].append(event_id)
        self.seq += len(events)
        counts["events"] += len(events)
        counts["duplicates"] += duplicates
        counts["predictions"] += n_predictions
        counts["outcomes"] += len(events) - duplicates - n_predictions

        decisions: list[Decision] = []
        empty_labels: tuple[list[Any], list[int], list[int], list[str]] = ([], [], [], [])
        for key in {**preds, **labels}:
            p, s = preds.get(key, ([], []))
            decisions += self.monitor(*key).process(p, s, *labels.get(key, empty_labels))
        for (model_id, version), (p, _) in preds.items():
            self.model_versions(model_id).observe(version, p[-1].role, len(p), p[0].ts, p[-1].ts)
        decisions += self._compare_versions(labels)
        decisions.sort(key=lambda d: (d.seq, d.kind, d.type))
        for d in decisions:
            name = f"{d.type}:{d.kind}"
            self.decision_counts[name] = self.decision_counts.get(name, 0) + 1
        return decisions

    def model_versions(self, model_id: str) -> ModelVersions:
        versions = self.versions.get(model_id)
        if versions is None:
            versions = self.versions[model_id] = ModelVersions(
                model_id, self.settings_for(model_id)
            )
        return versions

    def _compare_versions(
        self, labels: dict[tuple[str, str], tuple[list[Any], list[int], list[int], list[str]]]
    ) -> list[Decision]:
        """Canary-vs-stable comparisons on this batch's labelled events, per model."""
        by_model: dict[str, list[tuple[int, str, int, int, str]]] = {}
        for (model_id, version), (pairs, seqs, ts, ids) in labels.items():
            task = self.monitor(model_id, version).concept.task
            threshold = self.settings_for(model_id).classification_threshold
            rows = by_model.setdefault(model_id, [])
            for (prediction, label), seq, t, event_id in zip(pairs, seqs, ts, ids, strict=True):
                error = prediction_error(
                    task or infer_task([prediction], [label]) or "",
                    prediction,
                    label,
                    threshold,
                    None,
                )
                if error is not None:
                    rows.append((seq, version, error, t, event_id))
        decisions: list[Decision] = []
        for model_id, rows in by_model.items():
            versions = self.versions.get(model_id)
            if versions is None or not rows:
                continue
            rows.sort(key=lambda r: r[0])
            columns = (
                [r[1] for r in rows],
                np.array([r[2] for r in rows]),
                [r[0] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            )
            decisions += versions.compare(*columns)
            decisions += versions.compare_pairs(*columns)
        return decisions

    def state(self) -> dict[str, Any]:
        """JSON-compatible snapshot of everything; `restore` continues exactly from it."""
        return {
            "seq": self.seq,
            "seen": self.seen.state(),
            "counts": dict(self.counts),
            "decision_counts": dict(self.decision_counts),
            "join": self.join.state(),
            "monitors": [
                m.state() for versions in self.monitors.values() for m in versions.values()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self.seen.restore(state["seen"])
        self.counts = dict(state["counts"])
        self.decision_counts = dict(state["decision_counts"])
        self.join.restore(state["join"])
        self.versions = {}
        for model_id, versions_state in state.get("versions", {}).items():
            self.model_versions(model_id).restore(versions_state)
        self.monitors = {}
        for ms in state["monitors"]:
            monitor = VersionMonitor.from_state(ms, self.settings_for(ms["model_id"]))
            self.monitors.setdefault(ms["model_id"], OrderedDict())[ms["model_version"]] = monitor
