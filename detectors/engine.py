"""The detector set of the model stage, and the single-partition pipeline.

`ModelEngine` is stage 2: it runs every model's monitors, version comparisons and
feedback-loop tests over the routed items of all input partitions (merged by
`detectors.intake.merge.ModelMerge`), so each model's tests run once, whatever the partition
count. `Engine` chains an `Intake` and a `ModelEngine` for one partition: what tests and
benchmarks call with plain events.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zlib import crc32

import numpy as np

from driftline.detectors.decision import Decision, decision_id
from driftline.detectors.drift.concept import LabelBatch, SummedLabels
from driftline.detectors.drift.reference import (
    ReferenceProfile,
    estimated_error,
    label_values,
    missing_share,
    positive,
)
from driftline.detectors.feedback.monitor import (
    INDEPENDENT,
    LABEL,
    PREDICTION,
    R_MODEL,
    FeedbackMonitor,
    Record,
    Tag,
    feedback_tag,
)
from driftline.detectors.intake.blocks import LabelBlock
from driftline.detectors.intake.labelsums import LabelSums
from driftline.detectors.intake.slices import SliceSummary
from driftline.detectors.intake.stage import LABEL_SUMS, LABELS, SUMMARY, Intake, Routed
from driftline.detectors.monitor import VersionMonitor
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.versions.maturity import Cohort
from driftline.detectors.versions.registry import ModelVersions, Rows
from driftline.schemas.records import Event, Outcome, Prediction


@dataclass(slots=True)
class _Sorted:
    """One batch of routed items, sorted by what reads them (`ModelEngine._sort`)."""

    preds: dict[tuple[str, str], tuple[list[Prediction], list[int]]] = field(default_factory=dict)
    """Predictions and their positions per (model, version)."""
    labels: dict[tuple[str, str], LabelBatch] = field(default_factory=dict)
    sums: dict[tuple[str, str], tuple[list[SliceSummary], list[int]]] = field(default_factory=dict)
    """Slices summed by the input stage and their positions per (model, version)."""
    label_sums: dict[str, tuple[list[LabelSums], list[int]]] = field(default_factory=dict)
    """Labels summed by the input stage and their positions per model."""
    loops: list[Record] = field(default_factory=list)
    """Records of the models that watch feedback loops, in order (most models have none)."""
    independent: dict[str, int] = field(default_factory=dict)
    """Last position of an independent outcome per model (they may create state)."""
    steps: dict[str, list[int]] = field(default_factory=dict)
    """Positions before which each model takes a step (`ModelEngine._sort`)."""


_NAN = math.nan

_SUMMED = (SUMMARY, LABELS, LABEL_SUMS)
"""Item kinds that stand for several events (what a model's step counts)."""

ENGINE_COUNTERS = ("evicted_versions", "evicted_models", "untested_slice_events")
"""``untested_slice_events``: predictions the input stage summed against another profile
than their version's monitor has (`detectors.monitor.VersionMonitor.process`)."""

BATCH_ITEMS = 8_192
"""Items the model stage takes at a time. Its per-batch work is vectorised, yet a batch of
35,000 items (what a worker's merge releases after a backlog) cost 8 % more per item than
batches of 4,096-8,192 (measured on a 200k-prediction stream; larger columns fit the
processor's caches less well, presumably)."""


class ModelEngine:
    """Routes items to per-version monitors and collects their decisions.

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
        self.monitors: dict[str, OrderedDict[str, VersionMonitor]] = {}
        self.seq = 0
        self.counts = dict.fromkeys(ENGINE_COUNTERS, 0)
        self.decision_counts: dict[str, int] = {}
        self.versions: dict[str, ModelVersions] = {}
        self.loops: dict[str, FeedbackMonitor] = {}
        self._feedback_off: set[str] = set()
        """Models seen whose feedback-loop detection is off (hot-path cache)."""
        self.recent_models: OrderedDict[str, None] = OrderedDict()
        """Models with state, least recently seen first (bounded by ``max_models``)."""
        self.hand_over: list[ReferenceProfile] = []
        """References to give the input stages since the caller last took them, of models
        tested per slice: warm-up references built, and the references of versions whose
        slices came summed against another. The input stages sum a version's slices
        against its reference once it reaches them (`detectors.intake.slices.Slicer.learn`;
        the caller empties the list)."""
        self.clocks: dict[str, list[int]] = {}
        """Per model: [event time of its next step, items since its last step, step_ms,
        step_items] (`DetectorSettings.step_ms`)."""

    def settings_for(self, model_id: str) -> DetectorSettings:
        return self.model_settings.get(model_id, self.settings)

    @property
    def labels_held(self) -> int:
        """Labelled predictions of every model waiting for their minute to mature
        (`ModelVersions.labels_held`)."""
        return sum(registry.labels_held for registry in self.versions.values())

    def take_hand_over(self) -> list[ReferenceProfile]:
        """The references to give the input stages since the last call (`hand_over`)."""
        found, self.hand_over = self.hand_over, []
        return found

    def warmup_references(self) -> list[ReferenceProfile]:
        """The warm-up references of every version monitored here whose model is tested
        per slice (to hand to the input stages again, after a restore)."""
        return [
            m.profile
            for model_id, versions in self.monitors.items()
            if self.settings_for(model_id).slice_ms > 0
            for m in versions.values()
            if m.profile is not None and not m.profile.offline
        ]

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

    def process(self, items: Sequence[Routed]) -> list[Decision]:
        """Feed a batch of routed items (predictions, joined and independent outcomes) in
        merge order; return new decisions. A large batch is taken `BATCH_ITEMS` at a
        time."""
        if len(items) > BATCH_ITEMS:
            return [
                d
                for start in range(0, len(items), BATCH_ITEMS)
                for d in self.process(items[start : start + BATCH_ITEMS])
            ]
        batch = self._sort(items)
        decisions = self._decide(batch)
        for d in decisions:
            name = f"{d.type}:{d.kind}"
            self.decision_counts[name] = self.decision_counts.get(name, 0) + 1
        self._remember_models(batch)
        return decisions

    def _sort(self, items: Sequence[Routed]) -> _Sorted:
        """Number the items in merge order and sort them by what reads them: predictions
        and labels per (model, version), feedback-loop records per model; note where
        each model's steps fall (by its merged event time, ``slot``)."""
        batch = _Sorted()
        last = self.seq - 1
        clocks = self.clocks
        # The last item's last position, read after the loop, is where the next batch starts.
        for seq, last, fresh, item in numbered(items, self.seq):  # noqa: B007
            kind = item.kind
            event = item.event
            if fresh:
                slot = item.slot
                clock = clocks.get(event.model_id)
                if clock is None:
                    clock = clocks[event.model_id] = self._clock(event.model_id, slot)
                elif slot >= clock[0] and clock[1] >= clock[3]:
                    batch.steps.setdefault(event.model_id, []).append(seq)
                    clock[0] = (slot // clock[2] + 1) * clock[2]
                    clock[1] = 0
                clock[1] += event.events if kind in _SUMMED else 1
            if kind == PREDICTION:
                self._sort_prediction(batch, event, seq, item.tag)
            elif kind == LABEL:
                self._sort_label(batch, item, seq)
            elif kind == SUMMARY:
                found = batch.sums.get((event.model_id, event.model_version))
                if found is None:
                    found = batch.sums[(event.model_id, event.model_version)] = ([], [])
                found[0].append(event)
                found[1].append(seq)
            elif kind == LABELS:
                self._sort_block(batch, event, seq)
            elif kind == LABEL_SUMS:
                held = batch.label_sums.get(event.model_id)
                if held is None:
                    held = batch.label_sums[event.model_id] = ([], [])
                held[0].append(event)
                held[1].append(seq)
            else:
                self._sort_independent(batch, event, seq)
        self.seq = last + 1
        return batch

    def _clock(self, model_id: str, slot: int, items: int = 0) -> list[int]:
        settings = self.settings_for(model_id)
        every = settings.step_ms
        return [(slot // every + 1) * every, items, every, settings.step_items]

    def _sort_prediction(
        self, batch: _Sorted, p: Prediction, seq: int, built: Tag | None = None
    ) -> None:
        """``built``: the feedback tag stage 1 made for the join, when the item came from
        this process (the same function of the same fields and words)."""
        model_id = p.model_id
        key = (model_id, p.model_version)
        bucket = batch.preds.get(key)
        if bucket is None:
            bucket = batch.preds[key] = ([], [])
        bucket[0].append(p)
        bucket[1].append(seq)
        # A tag stage 1 built says the model's feedback-loop detection is on (same settings).
        feedback = self.loops.get(model_id) if built is not None else None
        if feedback is None:
            if p.segment is None and p.action is None and not p.exploration:
                return
            if model_id in self._feedback_off:
                return
            feedback = self._watcher(model_id)
            if feedback is None:
                return
        mask = feedback.sample_mask
        if mask and crc32(p.request_id.encode()) & mask:  # not in the sample
            return
        action = p.action
        tag_key = built or feedback_tag(p.segment, action, p.exploration, feedback.no_action)
        registry = feedback.registry
        tag = registry.ids.get(tag_key)
        if tag is None:
            tag = registry.id(tag_key)
        found = action if type(action) is tuple else p.prediction
        batch.loops.append(
            (
                model_id,
                PREDICTION,
                seq,
                p.ts,
                p.event_id,
                tag,
                found if type(found) is tuple else None,
                None,
                p.ts,
            )
        )

    def _sort_label(self, batch: _Sorted, item: Routed, seq: int) -> None:
        event, j = item.event, item.label
        assert j is not None
        model_id = event.model_id
        # Only a tagged prediction's label counts (its model watches feedback loops).
        if j.tag is not None and (
            (feedback := self.loops.get(model_id) or self._watcher(model_id)) is not None
            and (not (mask := feedback.sample_mask) or not crc32(event.request_id.encode()) & mask)
        ):
            batch.loops.append(
                (
                    model_id,
                    LABEL,
                    seq,
                    event.ts,
                    event.event_id,
                    feedback.registry.id(j.tag),
                    j.prediction,
                    j.label,
                    j.prediction_ts,
                )
            )
        lab = _labels_of(batch, model_id, j.model_version)
        lab.predictions.append(j.prediction)
        lab.labels.append(j.label)
        lab.seqs.append(seq)
        lab.ts.append(event.ts)
        lab.event_ids.append(event.event_id)
        lab.prediction_ts.append(j.prediction_ts)

    @staticmethod
    def _sort_block(batch: _Sorted, block: LabelBlock, seq: int) -> None:
        """A block's labels join their versions' columns, a C-level step per column where
        they are of one version (most models); their outcomes take the positions from
        ``seq`` on, one each."""
        versions, outcomes = block.versions, block.outcomes
        n = len(versions)
        # One label per outcome (no challenger or shadow): consecutive positions.
        seqs = range(seq, seq + n) if outcomes[-1] == n - 1 else [seq + o for o in outcomes]
        sources = (
            block.predictions, block.labels, seqs, block.outcome_ts, block.event_ids,
            block.prediction_ts,
        )  # fmt: skip
        if versions.count(versions[0]) == n:
            _labels_of(batch, block.model_id, versions[0]).extend(sources)
            return
        # A champion and its challengers or shadows: each version its rows.
        rows: dict[str, list[int]] = {}
        for i, version in enumerate(versions):
            rows.setdefault(version, []).append(i)
        for version, found in rows.items():
            lab = _labels_of(batch, block.model_id, version)
            lab.extend([[source[i] for i in found] for source in sources])

    def _sort_independent(self, batch: _Sorted, outcome: Outcome, seq: int) -> None:
        model_id = outcome.model_id
        batch.independent[model_id] = seq
        feedback = self._watcher(model_id)
        if feedback is None or not feedback.sampled(outcome.request_id):
            return  # counted as an outcome; nothing else uses it
        segment = outcome.segment
        batch.loops.append(
            (
                model_id,
                INDEPENDENT,
                seq,
                outcome.ts,
                outcome.event_id,
                tuple(segment.items()) if segment else (),
                None,
                outcome.label,
                outcome.ts,
            )
        )

    def _decide(self, batch: _Sorted) -> list[Decision]:
        """Run the monitors, version comparisons and feedback-loop tests on a sorted
        batch; decisions in merge order."""
        decisions: list[Decision] = []
        for key in {**batch.preds, **batch.sums}:
            predictions, seqs = batch.preds.get(key, ([], []))
            monitor = self.monitor(*key)
            sliced = batch.sums.get(key)
            if sliced is None:
                decisions += monitor.process(predictions, seqs)
            else:
                untested = monitor.unmatched_events
                summed = list(zip(sliced[1], sliced[0], strict=True))
                decisions += monitor.process(predictions, seqs, summed=summed)
                self.counts["untested_slice_events"] += monitor.unmatched_events - untested
            if monitor.hand_over:
                monitor.hand_over = False
                if self.settings_for(key[0]).slice_ms > 0 and monitor.profile is not None:
                    self.hand_over.append(monitor.profile)
        rows = self._labelled_rows(batch.labels)
        served: dict[str, dict[str, tuple[list[Prediction], list[int]]]] = {}
        for (model_id, version), found in batch.preds.items():
            served.setdefault(model_id, {})[version] = found
        labels: dict[str, dict[str, LabelBatch]] = {}
        for (model_id, version), lab in batch.labels.items():
            labels.setdefault(model_id, {})[version] = lab
        sums: dict[str, dict[str, tuple[list[SliceSummary], list[int]]]] = {}
        for (model_id, version), got in batch.sums.items():
            sums.setdefault(model_id, {})[version] = got
        for model_id in {**served, **sums, **rows, **batch.label_sums}:
            decisions += self._versions(
                model_id,
                served.get(model_id, {}),
                rows.get(model_id),
                labels.get(model_id, {}),
                batch.steps.get(model_id, []),
                sums.get(model_id, {}),
                batch.label_sums.get(model_id),
            )
        if batch.loops:
            decisions += self._feedback_loops(batch.loops)
        if self.loops:
            decisions = [self._caution(d) for d in decisions]
        decisions.sort(key=lambda d: (d.seq, d.kind, d.type))
        return decisions

    def _versions(
        self,
        model_id: str,
        served: dict[str, tuple[list[Prediction], list[int]]],
        rows: Rows | None,
        labels: dict[str, LabelBatch],
        steps: list[int],
        sums: dict[str, tuple[list[SliceSummary], list[int]]] | None = None,
        label_sums: tuple[list[LabelSums], list[int]] | None = None,
    ) -> list[Decision]:
        """One model's version comparisons and concept monitors on a batch: its items
        between two steps at a time, and at each step what the step released (held labels
        and cohorts whose predictions matured, see `ModelVersions.step`). ``sums``: slices
        of predictions summed by the input stage, per version (counted as traffic);
        ``label_sums``: labels summed by the input stage, with their positions."""
        registry = self.model_versions(model_id)
        registry.begin_batch()
        decisions: list[Decision] = []
        # Labels the concept monitors read at once, gathered for one call per version
        # (a call costs mostly per call, and steps can be many in a batch).
        waiting: dict[str, list[LabelBatch]] = {}
        served_cuts = {v: _cuts(seqs, steps) for v, (_, seqs) in served.items()}
        row_cuts = _cuts(rows.seqs, steps) if rows is not None else []
        label_cuts = {v: _cuts(lab.seqs, steps) for v, lab in labels.items()}
        sums = sums or {}
        sum_cuts = {v: _cuts(seqs, steps) for v, (_, seqs) in sums.items()}
        summed_labels, summed_at = label_sums or ([], [])
        summed_cuts = _cuts(summed_at, steps)
        every = self.settings_for(model_id).slice_ms
        for g in range(len(steps) + 1):
            for version, (found, _) in sums.items():
                c = sum_cuts[version]
                for summary in found[c[g] : c[g + 1]]:
                    registry.observe_slice(version, summary, summary.number * every)
            part = {
                v: (p[c[g] : c[g + 1]], seqs[c[g] : c[g + 1]])
                for v, (p, seqs) in served.items()
                if (c := served_cuts[v])[g] < c[g + 1]
            }
            if part:
                decisions += self._served(registry, model_id, part)
            if rows is not None and row_cuts[g] < row_cuts[g + 1]:
                got = rows.part(row_cuts[g], row_cuts[g + 1])
                decisions += self._labelled(registry, registry.matured(got))
                registry.add_estimates(got)
                for version, lab in labels.items():
                    c = label_cuts[version]
                    if c[g] < c[g + 1]:
                        self._pairs(registry, version, lab, c[g], c[g + 1], waiting)
            for at in range(summed_cuts[g], summed_cuts[g + 1]):
                for version, rule in summed_labels[at].rules.items():
                    self.monitor(model_id, version).concept.note_sums(*rule)
                now, paired = registry.observe_label_sums(summed_labels[at], summed_at[at])
                decisions += paired + self._summed(registry, model_id, now)
            if g == len(steps):
                break
            decisions += self._labelled(registry, registry.step(steps[g]))
            released = registry.held_pairs.release(registry.horizon, registry.held.watermark)
            if released:
                decisions += self._concept_now(registry, model_id, waiting)
            for version, matured in released.items():
                made = self.monitor(model_id, version).process([], [], matured)
                decisions += [self._read_labels(d, registry.evidence) for d in made]
            decisions += registry.release_estimates()
            released_sums, paired = registry.release_label_sums()
            decisions += paired + self._summed(registry, model_id, released_sums, step=True)
        return decisions + self._concept_now(registry, model_id, waiting)

    def _summed(
        self,
        registry: ModelVersions,
        model_id: str,
        released: list[tuple[str, Cohort]],
        step: bool = False,
    ) -> list[Decision]:
        """Summed labels whose cohort may be read (`ModelVersions.observe_label_sums`),
        oldest first: through their versions' concept monitors (a held cohort part by
        part, `detectors.versions.maturity.Cohort.parts`), the versions' error
        history and a promoted champion's comparison. Decisions on labels read at once
        carry the label maturity of the step before their label, those a ``step``
        released the step's (as for labels one by one). A regression's version
        comparisons read no error (see `detectors.intake.labelsums`), its canaries'
        the other labelled metrics."""
        decisions: list[Decision] = []
        by_version: dict[str, list[SummedLabels]] = {}
        for version, cohort in released:
            rows = by_version.setdefault(version, [])
            parts = cohort.parts or [[cohort.n, cohort.total, cohort.last]]
            for n, total, (seq, ts, event_id) in parts:
                rows.append(SummedLabels(n, round(total), seq, ts, event_id))
            errors = self.monitor(model_id, version).concept.sums_rule[0] != "regression"
            decisions += registry.read_label_sums(version, cohort, errors)
        for version, found in by_version.items():
            made = self.monitor(model_id, version).process_sums(found)
            decisions += [
                self._read_labels(d, registry.evidence if step else registry.evidence_at(d.seq))
                for d in made
            ]
        return decisions

    def _served(
        self,
        registry: ModelVersions,
        model_id: str,
        served: dict[str, tuple[list[Prediction], list[int]]],
    ) -> list[Decision]:
        """Predictions between two steps: counted per version, and what live canaries are
        compared on before labels arrive."""
        for version, (p, _) in served.items():
            registry.observe(version, p[-1].role, np.fromiter((q.ts for q in p), np.int64, len(p)))
        if not registry.live_canaries():
            return []
        return registry.compare_canaries(self._prediction_rows(model_id, served), labelled=False)

    @staticmethod
    def _labelled(registry: ModelVersions, rows: Rows | None) -> list[Decision]:
        """Labelled rows the version comparisons may read (see `ModelVersions.matured`)."""
        if rows is None:
            return []
        registry.record_errors(rows)
        return (
            registry.compare_canaries(rows, labelled=True)
            + registry.compare_promotions(rows)
            + registry.compare_pairs(rows)
        )

    @staticmethod
    def _pairs(
        registry: ModelVersions,
        version: str,
        lab: LabelBatch,
        start: int,
        stop: int,
        waiting: dict[str, list[LabelBatch]],
    ) -> None:
        """A version's joined labels for its concept monitor: read at once (``waiting``)
        where the label delays do not depend on the outcome (horizon 0) and nothing is
        held, else held until a step releases them (`HeldPairs`)."""
        part = LabelBatch._make(column[start:stop] for column in lab)
        if registry.horizon == 0.0 and not registry.held_pairs.held:
            waiting.setdefault(version, []).append(part)
        else:
            registry.held_pairs.add(version, part)

    def _concept_now(
        self, registry: ModelVersions, model_id: str, waiting: dict[str, list[LabelBatch]]
    ) -> list[Decision]:
        """The labels ``waiting`` through their versions' concept monitors, each decision
        with the label maturity of the step before its label."""
        decisions: list[Decision] = []
        for version, parts in waiting.items():
            together = parts[0] if len(parts) == 1 else _joined(parts)
            made = self.monitor(model_id, version).process([], [], together)
            decisions += [self._read_labels(d, registry.evidence_at(d.seq)) for d in made]
        waiting.clear()
        return decisions

    def _remember_models(self, batch: _Sorted) -> None:
        """Mark the batch's models as seen (in order of their last event) and forget the
        least recently seen beyond ``max_models``. What survives is the most recently seen
        models, however the stream was cut into batches."""
        last = dict(batch.independent)
        for (model_id, _), (_, seqs) in itertools.chain(batch.preds.items(), batch.sums.items()):
            last[model_id] = max(last.get(model_id, -1), seqs[-1])
        for (model_id, _), lab in batch.labels.items():
            last[model_id] = max(last.get(model_id, -1), lab.seqs[-1])
        for model_id, (_, seqs) in batch.label_sums.items():
            last[model_id] = max(last.get(model_id, -1), seqs[-1])
        # Records are in merge order: a model's last one has its largest position.
        for model_id, seq in {record[0]: record[2] for record in batch.loops}.items():
            last[model_id] = max(last.get(model_id, -1), seq)
        recent = self.recent_models
        for model_id, _ in sorted(last.items(), key=lambda item: item[1]):
            recent[model_id] = None
            recent.move_to_end(model_id)
        while len(recent) > self.settings.max_models:
            self._forget(recent.popitem(last=False)[0])

    def _forget(self, model_id: str) -> None:
        """Drop every piece of state of one model (it starts afresh if it comes back)."""
        self.monitors.pop(model_id, None)
        self.versions.pop(model_id, None)
        self.loops.pop(model_id, None)
        self.clocks.pop(model_id, None)
        self._feedback_off.discard(model_id)
        self.counts["evicted_models"] += 1

    @staticmethod
    def _read_labels(decision: Decision, maturity: dict[str, Any]) -> Decision:
        """A decision made on labels (concept drift, live accuracy against the offline
        reference) says how they were read (``maturity``, `detectors.versions.maturity`)."""
        on_labels = decision.kind == "concept_drift" or (
            decision.kind == "online_offline_gap" and "online_error_rate" in decision.evidence
        )
        if not on_labels:
            return decision
        return replace(decision, evidence={**decision.evidence, "label_maturity": maturity})

    def _caution(self, decision: Decision) -> Decision:
        """A retrain decision for a model already flagged for a feedback loop says that
        retraining on the labels it gathered feeds the loop."""
        monitor = self.loops.get(decision.model_id)
        if decision.type != "retrain" or monitor is None or not monitor.decided:
            return decision
        return replace(
            decision,
            recommendation="Caution: a feedback loop was flagged on this model; retrain only "
            "on data it did not steer (exploration traffic, independent outcomes), or "
            "retraining feeds the loop. " + decision.recommendation,
            evidence={**decision.evidence, "feedback_loop_flagged": True},
        )

    def _watcher(self, model_id: str) -> FeedbackMonitor | None:
        """The model's feedback-loop monitor (created on first sight), or None when its
        feedback-loop detection is off (remembered per model)."""
        monitor = self.loops.get(model_id)
        if monitor is None and model_id not in self._feedback_off:
            if self.settings_for(model_id).feedback_enabled:
                monitor = self.feedback(model_id)
            else:
                self._feedback_off.add(model_id)
        return monitor

    def feedback(self, model_id: str) -> FeedbackMonitor:
        monitor = self.loops.get(model_id)
        if monitor is None:
            monitor = self.loops[model_id] = FeedbackMonitor(model_id, self.settings_for(model_id))
        return monitor

    def _feedback_loops(self, loops: list[Record]) -> list[Decision]:
        """Feed the feedback-loop monitors in arrival order; their decisions name the stable
        version, and a loop found within the window after a promotion also rolls it back."""
        touched = sorted({r[R_MODEL] for r in loops})
        by_model: dict[str, list[Record]] = {touched[0]: loops}
        if len(touched) > 1:
            by_model = {model_id: [] for model_id in touched}
            for record in loops:
                by_model[record[R_MODEL]].append(record)
        for model_id in touched:
            self.feedback(model_id).observe(by_model[model_id])
        decisions: list[Decision] = []
        for model_id in touched:
            registry = self.versions.get(model_id)
            for d in self.loops[model_id].take_decisions():
                stable = registry.champion_at(d.seq) if registry else None
                found = replace(d, model_version=stable or "")
                if registry is None or stable is None:
                    decisions.append(found)
                    continue
                retrains = _retrains(registry, d.evidence["history_first_ts"])
                if len(retrains) >= RETRAIN_CADENCE_VERSIONS:
                    # Successive versions of one training procedure carry the same loop:
                    # rolling back to the last one helps nothing.
                    decisions.append(_procedure(found, retrains))
                    continue
                decisions.append(found)
                if stable not in registry.promotions:
                    continue
                previous = registry.promotions[stable][0]
                before = registry.versions.get(previous)
                promoted_in_history = (
                    registry.versions[stable].first_ts >= d.evidence["history_first_ts"]
                )
                # The version rolled back to must predate the onset (its traffic ended in
                # the onset's bucket at the latest).
                onset_end = d.evidence["onset_ts"] + self.settings_for(model_id).feedback_bucket_ms
                if promoted_in_history and before is not None and before.last_ts < onset_end:
                    decisions.append(
                        replace(
                            found,
                            decision_id=decision_id(
                                model_id, stable, "rollback", "feedback_loop", d.decision_id
                            ),
                            type="rollback",
                            severity="critical",
                            from_version=stable,
                            to_version=previous,
                            recommendation=f"A feedback loop started after {stable} replaced "
                            f"{previous}: route traffic back to {previous}. " + d.recommendation,
                        )
                    )
        return decisions

    def model_versions(self, model_id: str) -> ModelVersions:
        versions = self.versions.get(model_id)
        if versions is None:
            versions = self.versions[model_id] = ModelVersions(
                model_id, self.settings_for(model_id)
            )
        return versions

    def _prediction_rows(
        self, model_id: str, served: dict[str, tuple[list[Prediction], list[int]]]
    ) -> Rows:
        """Label-free quantities of one model's predictions (per version), in arrival
        order."""
        settings = self.settings_for(model_id)
        threshold = settings.classification_threshold
        scored = settings.scores_are_probabilities
        found: list[tuple[int, str, float, float, float, int, str]] = []
        for version, (p, seqs) in served.items():
            task = self.monitor(model_id, version).concept.task
            for event, seq in zip(p, seqs, strict=True):
                found.append(
                    (
                        seq,
                        version,
                        estimated_error(task, event.prediction, event.scores, threshold)
                        if scored
                        else _NAN,
                        positive(task, event.prediction, threshold),
                        missing_share(event.features),
                        event.ts,
                        event.event_id,
                    )
                )
        return _rows(found, ("estimated_error", "positive_rate", "missing_rate"))

    def _labelled_rows(
        self,
        labels: dict[tuple[str, str], LabelBatch],
    ) -> dict[str, Rows]:
        """Per model, the labelled events of this batch in arrival order with their error,
        Brier score, label-free estimated error and outcome delay (NaN where not known)."""
        by_model: dict[str, list[Rows]] = {}
        for (model_id, version), lab in labels.items():
            settings = self.settings_for(model_id)
            error, scores, estimate, classes = label_values(
                self.monitor(model_id, version).concept.task,
                lab.predictions,
                lab.labels,
                settings.classification_threshold,
                settings.scores_are_probabilities,
            )
            t0 = np.array(lab.prediction_ts, dtype=np.int64)
            delay = np.maximum(np.array(lab.ts, dtype=np.int64) - t0, 1)
            by_model.setdefault(model_id, []).append(
                Rows(
                    versions=np.full(len(lab.seqs), version, dtype=object),
                    seqs=lab.seqs,
                    ts=lab.ts,
                    event_ids=lab.event_ids,
                    values={
                        "error_rate": error,
                        "brier_score": scores,
                        "estimated_error": estimate,
                        "outcome_latency": np.log10(delay / 1000.0),
                        "prediction_ts": t0.astype(np.float64),
                        "outcome_class": classes,
                    },
                )
            )
        return {model_id: _in_order(parts) for model_id, parts in by_model.items()}

    def state(self) -> dict[str, Any]:
        """JSON-compatible snapshot of everything; `restore` continues exactly from it."""
        return {
            "seq": self.seq,
            "counts": dict(self.counts),
            "decision_counts": dict(self.decision_counts),
            "monitors": [
                m.state() for versions in self.monitors.values() for m in versions.values()
            ],
            "versions": {k: v.state() for k, v in self.versions.items()},
            "feedback": {k: v.state() for k, v in self.loops.items()},
            "models": list(self.recent_models),
            "clocks": {k: clock[:2] for k, clock in self.clocks.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self.counts = {**dict.fromkeys(ENGINE_COUNTERS, 0), **state["counts"]}
        self.decision_counts = dict(state["decision_counts"])
        self.versions = {}
        # Checkpoints written before version comparisons and feedback loops have neither.
        for model_id, versions_state in state.get("versions", {}).items():
            self.model_versions(model_id).restore(versions_state)
        self.loops = {}
        for model_id, feedback_state in state.get("feedback", {}).items():
            self.feedback(model_id).restore(feedback_state)
        self.monitors = {}
        for ms in state["monitors"]:
            monitor = VersionMonitor.from_state(ms, self.settings_for(ms["model_id"]))
            self.monitors.setdefault(ms["model_id"], OrderedDict())[ms["model_version"]] = monitor
        # Checkpoints from before the model bound have no recency list.
        known = state.get("models") or [*self.monitors, *self.versions, *self.loops]
        self.recent_models = OrderedDict.fromkeys(known)
        # Checkpoints before steps have no clocks: a model's first item starts its clock.
        self.clocks = {}
        for model_id, (due, items) in state.get("clocks", {}).items():
            clock = self._clock(model_id, 0, items)
            clock[0] = due
            self.clocks[model_id] = clock


class Engine:
    """One input partition end to end: an `Intake` (dedupe, join) feeding a
    `ModelEngine`. What replay runs for one partition, and what tests call with events.

    Parameters are those of `ModelEngine`.
    """

    def __init__(
        self,
        settings: DetectorSettings | None = None,
        profiles: Mapping[str, ReferenceProfile] | None = None,
        model_settings: Mapping[str, DetectorSettings] | None = None,
    ) -> None:
        self.models = ModelEngine(settings, profiles, model_settings)
        self.intake = Intake(settings, model_settings, self.models.profiles)

    def process(self, events: Sequence[Event]) -> list[Decision]:
        """Feed a batch of decoded events in arrival order; return new decisions."""
        routed = self.intake.process(events)
        if len(routed) == 1:
            items = next(iter(routed.values()))
        else:
            items = sorted((i for found in routed.values() for i in found), key=_position)
        decisions = self.models.process(items)
        for profile in self.models.take_hand_over():
            self.intake.slicer.learn(profile)
        return decisions

    # The parts tests and tools read, under the names they had before the stages split.
    @property
    def settings(self) -> DetectorSettings:
        return self.models.settings

    @property
    def profiles(self) -> dict[str, ReferenceProfile]:
        return self.models.profiles

    @property
    def join(self) -> Any:
        return self.intake.join

    @property
    def counts(self) -> dict[str, int]:
        return {**self.intake.counts, **self.models.counts}

    @property
    def monitors(self) -> dict[str, OrderedDict[str, VersionMonitor]]:
        return self.models.monitors

    @property
    def versions(self) -> dict[str, ModelVersions]:
        return self.models.versions

    @property
    def loops(self) -> dict[str, FeedbackMonitor]:
        return self.models.loops

    @property
    def decision_counts(self) -> dict[str, int]:
        return self.models.decision_counts

    @property
    def recent_models(self) -> OrderedDict[str, None]:
        return self.models.recent_models

    def monitor(self, model_id: str, model_version: str) -> VersionMonitor:
        return self.models.monitor(model_id, model_version)

    def feedback(self, model_id: str) -> FeedbackMonitor:
        return self.models.feedback(model_id)

    def model_versions(self, model_id: str) -> ModelVersions:
        return self.models.model_versions(model_id)

    def state(self) -> dict[str, Any]:
        return {"intake": self.intake.state(), "models": self.models.state()}

    def restore(self, state: dict[str, Any]) -> None:
        if "intake" not in state:
            state = split_legacy_state(state)
        self.intake.restore(state["intake"])
        self.models.restore(state["models"])
        for profile in self.models.warmup_references():
            self.intake.slicer.learn(profile)


RETRAIN_CADENCE_VERSIONS = 2
"""Champion versions that replaced another within a feedback loop's history and make it a
retraining cadence: the loop comes from the procedure, not from one version."""


def _retrains(registry: ModelVersions, since: int) -> list[tuple[int, str]]:
    """(first event time, name) of the champion versions that replaced another since
    ``since`` (the model's first version replaced nothing)."""
    champions = sorted(
        (info.first_ts, name) for name, info in registry.versions.items() if info.role == "champion"
    )
    return [c for c in champions[1:] if c[0] >= since]


def _procedure(decision: Decision, retrains: list[tuple[int, str]]) -> Decision:
    """A feedback-loop alert on a model retrained on a cadence: name the versions and
    recommend changing the procedure instead of a rollback."""
    names = [name for _, name in retrains]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(retrains)]
    cadence_h = round(float(np.median(gaps)) / 3_600_000, 2) if gaps else None
    shown = ", ".join(names if len(names) <= 6 else [*names[:2], "...", *names[-3:]])
    return replace(
        decision,
        evidence={
            **decision.evidence,
            "versions_affected": names,
            "retrain_cadence_hours": cadence_h,
        },
        recommendation=f"{len(names)} versions ({shown}) were retrained by the same "
        f"procedure while the loop built up (about every {cadence_h} hours): a rollback to "
        "one of them keeps the loop. Change the procedure: train on an exploration slice "
        "or with inverse-propensity weights, and do not count unobserved outcomes (rejected "
        "applicants) as bad. " + decision.recommendation,
    )


def split_legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A one-stage engine state (checkpoint format 1, before the stages split) as the
    intake's and the model stage's states."""
    counts = state["counts"]
    intake = {
        "seq": 0,
        "seen": state["seen"],
        "counts": {
            k: counts.get(k, 0) for k in ("events", "predictions", "outcomes", "duplicates")
        },
        "join": state["join"],
        "watermarks": [],
        "tags": {},
    }
    models = {k: v for k, v in state.items() if k not in ("seen", "join")}
    models["counts"] = {k: counts.get(k, 0) for k in ENGINE_COUNTERS}
    return {"intake": intake, "models": models}


def _joined(parts: list[LabelBatch]) -> LabelBatch:
    """Label batches one after the other, a C-level pass per column."""
    chain = itertools.chain.from_iterable
    return LabelBatch._make(list(chain(column)) for column in zip(*parts, strict=True))


def numbered(items: Sequence[Routed], start: int) -> Iterator[tuple[int, int, bool, Routed]]:
    """The model stage's positions of ``items`` in merge order, from ``start``: per item
    its first and last position (a block of labels takes one per outcome) and whether it
    opens a new one (the labels one outcome gives, a champion's and a challenger's on one
    request, share its position: the paired comparisons match them by it)."""
    seq = start - 1
    previous: Event | None = None
    for item in items:
        kind, event = item.kind, item.event
        fresh = not (kind == LABEL and previous is not None and event.event_id == previous.event_id)
        if fresh:
            seq += 1
        first = seq
        if kind == LABELS:
            seq += event.positions - 1
        previous = event if kind == LABEL else None
        yield first, seq, fresh, item


def _labels_of(batch: _Sorted, model_id: str, version: str) -> LabelBatch:
    """The batch's label columns of a version (empty ones, the first time)."""
    lab = batch.labels.get((model_id, version))
    if lab is None:
        lab = batch.labels[(model_id, version)] = LabelBatch.empty()
    return lab


def _cuts(seqs: Sequence[int], steps: list[int]) -> list[int]:
    """Where positions ``seqs`` (ascending) are cut by ``steps``: the start of each part,
    then the end."""
    return [0, *(bisect_left(seqs, step) for step in steps), len(seqs)]


def _position(item: Routed) -> int:
    return item.seq


def _in_order(parts: list[Rows]) -> Rows:
    """One model's rows of every version, in arrival order (the labels one outcome gives
    share a position and keep their order)."""
    rows = Rows.join(parts)
    seqs = rows.seqs
    if len(parts) == 1 or all(a <= b for a, b in itertools.pairwise(seqs)):
        return rows
    return rows.take(np.argsort(np.array(seqs), kind="stable"))


def _rows(found: list[Any], names: tuple[str, ...]) -> Rows:
    """Columns of ``(seq, version, *values, ts, event_id)`` tuples in arrival order."""
    found.sort(key=lambda r: r[0])
    columns = list(zip(*found, strict=True))
    return Rows(
        versions=np.array(columns[1], dtype=object),
        seqs=list(columns[0]),
        ts=list(columns[-2]),
        event_ids=list(columns[-1]),
        values={name: np.array(columns[2 + i], dtype=np.float64) for i, name in enumerate(names)},
    )
