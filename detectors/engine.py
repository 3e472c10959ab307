"""The whole detector set over a stream of events: dedupe, join, route, decide.

`Engine` is what replay and the stream worker both call, so the same events in the same
order give the same decisions whether they come from a file or from Kafka.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from detectors.decision import Decision
from detectors.join import Joined, OutcomeJoin, Pending
from detectors.monitor import VersionMonitor
from detectors.reference import ReferenceProfile
from detectors.settings import DetectorSettings
from schemas.records import Event, Prediction

ENGINE_COUNTERS = ("events", "predictions", "outcomes", "duplicates", "evicted_versions")


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
        self.join = OutcomeJoin(self.settings.join_ttl_ms, self.settings.join_max_pending)
        self.monitors: dict[str, OrderedDict[str, VersionMonitor]] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.seq = 0
        self.counts = dict.fromkeys(ENGINE_COUNTERS, 0)
        self.decision_counts: dict[str, int] = {}

    def settings_for(self, model_id: str) -> DetectorSettings:
        return self.model_settings.get(model_id, self.settings)

    def monitor(self, model_id: str, model_version: str) -> VersionMonitor:
        """The monitor of a version, created on first sight."""
        versions = self.monitors.setdefault(model_id, OrderedDict())
        monitor = versions.get(model_version)
        if monitor is None:
            profile = self.profiles.get(f"{model_id}@{model_version}") or self.profiles.get(model_id)
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
        order: dict[tuple[str, str], None] = {}
        seen = self.seen
        horizon = self.settings.dedupe_horizon
        counts = self.counts
        join = self.join

        def add_labels(joined: list[Joined], seq: int, ts: int, event_id: str) -> None:
            for j in joined:
                key = (j.model_id, j.model_version)
                order.setdefault(key, None)
                bucket = labels.setdefault(key, ([], [], [], []))
                bucket[0].append((j.prediction, j.label))
                bucket[1].append(seq)
                bucket[2].append(ts)
                bucket[3].append(event_id)

        for event in events:
            seq = self.seq
            self.seq += 1
            counts["events"] += 1
            event_id = event.event_id
            if event_id in seen:
                counts["duplicates"] += 1
                continue
            seen[event_id] = None
            if len(seen) > horizon:
                seen.popitem(last=False)
            if type(event) is Prediction:
                counts["predictions"] += 1
                key = (event.model_id, event.model_version)
                order.setdefault(key, None)
                bucket_p = preds.get(key)
                if bucket_p is None:
                    bucket_p = preds[key] = ([], [])
                bucket_p[0].append(event)
                bucket_p[1].append(seq)
                joined = join.add_prediction(
                    event.request_id,
                    Pending(event.model_id, event.model_version, event.prediction, event.ts),
                )
            else:
                counts["outcomes"] += 1
                joined = join.add_outcome(event.request_id, event.model_id, event.label, event.ts)
            if joined:
                add_labels(joined, seq, event.ts, event_id)

        decisions: list[Decision] = []
        for key in order:
            p, s = preds.get(key, ([], []))
            lab = labels.get(key, ([], [], [], []))
            decisions += self.monitor(*key).process(p, s, *lab)
        decisions.sort(key=lambda d: (d.seq, d.kind, d.type))
        for d in decisions:
            name = f"{d.type}:{d.kind}"
            self.decision_counts[name] = self.decision_counts.get(name, 0) + 1
        return decisions

    def state(self) -> dict[str, Any]:
        """JSON-compatible snapshot of everything; `restore` continues exactly from it."""
        return {
            "seq": self.seq,
            "seen": list(self.seen),
            "counts": dict(self.counts),
            "decision_counts": dict(self.decision_counts),
            "join": self.join.state(),
            "monitors": [m.state() for versions in self.monitors.values() for m in versions.values()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self.seen = OrderedDict.fromkeys(state["seen"])
        self.counts = dict(state["counts"])
        self.decision_counts = dict(state["decision_counts"])
        self.join.restore(state["join"])
        self.monitors = {}
        for ms in state["monitors"]:
            monitor = VersionMonitor.from_state(ms, self.settings_for(ms["model_id"]))
            self.monitors.setdefault(ms["model_id"], OrderedDict())[ms["model_version"]] = monitor
