"""Both stages in one process: an `Intake` per input partition, merged per model into one
`ModelEngine`. What ``driftline replay --partitions N`` runs, so a recorded stream gives
the decisions a worker gives on N-partition topics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from driftline.detectors.decision import Decision
from driftline.detectors.drift.reference import ReferenceProfile
from driftline.detectors.engine import ModelEngine
from driftline.detectors.intake.merge import ModelMerge
from driftline.detectors.intake.stage import Intake, Routed
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Event


class StagedPipeline:
    """``partitions`` intakes feeding one model stage through per-model merges.

    Parameters are those of `ModelEngine`, plus the number of input partitions.
    """

    def __init__(
        self,
        partitions: int,
        settings: DetectorSettings | None = None,
        profiles: Mapping[str, ReferenceProfile] | None = None,
        model_settings: Mapping[str, DetectorSettings] | None = None,
    ) -> None:
        self.engine = ModelEngine(settings, profiles, model_settings)
        self.intakes = [
            Intake(settings, model_settings, self.engine.profiles) for _ in range(partitions)
        ]
        self.merges: dict[str, ModelMerge] = {}

    @property
    def settings(self) -> DetectorSettings:
        return self.engine.settings

    def merge_for(self, model_id: str) -> ModelMerge:
        merge = self.merges.get(model_id)
        if merge is None:
            s = self.engine.settings_for(model_id)
            merge = self.merges[model_id] = ModelMerge(
                len(self.intakes), s.merge_lateness_ms, s.merge_max_buffered
            )
        return merge

    def process(self, parts: Sequence[Sequence[Event]]) -> list[Decision]:
        """One batch of events per input partition (each in arrival order). Every
        partition's items are merged before any is released, as the partitions were read
        side by side: the merges' event-time rule (`detectors.intake.merge`) would
        otherwise see the first partition a batch ahead of the others."""
        released: list[Routed] = []
        touched: dict[str, ModelMerge] = {}
        for p, (intake, events) in enumerate(zip(self.intakes, parts, strict=True)):
            if not events:
                continue
            for model_id, items in intake.process(events).items():
                merge = touched[model_id] = self.merge_for(model_id)
                released += merge.add(p, intake.watermarks[model_id], items, release=False)
        for merge in touched.values():
            released += merge.release()
        decisions = self.engine.process(released) if released else []
        self._hand_references()
        self._forget()
        return decisions

    def _hand_references(self) -> None:
        """References the model stage hands over reach every input stage (in a worker,
        through the references topic)."""
        for profile in self.engine.take_hand_over():
            for intake in self.intakes:
                intake.slicer.learn(profile)

    def flush(self) -> list[Decision]:
        """Release every item still waiting (the end of the stream)."""
        released = [item for merge in self.merges.values() for item in merge.flush()]
        return self.engine.process(released) if released else []

    def _forget(self) -> None:
        """Merges of models the model stage forgot, once nothing waits in them."""
        if len(self.merges) > self.engine.settings.max_models:
            known = self.engine.recent_models
            for model_id in [
                m for m, g in self.merges.items() if m not in known and not g.buffered
            ]:
                del self.merges[model_id]

    @property
    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for intake in self.intakes:
            for k, v in intake.counts.items():
                totals[k] = totals.get(k, 0) + v
        for merge in self.merges.values():
            for k, v in merge.counts.items():
                totals[k] = totals.get(k, 0) + v
        return {**totals, **self.engine.counts}

    @property
    def join_counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for intake in self.intakes:
            for k, v in intake.join.counts.items():
                totals[k] = totals.get(k, 0) + v
        return totals
