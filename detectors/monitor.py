"""Everything watched for one model version: warm-up, channels, concept, policy."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from driftline.detectors.decision import Decision
from driftline.detectors.drift import concept as concept_module
from driftline.detectors.drift.categorical import CategoricalChannel
from driftline.detectors.drift.channel import Channel
from driftline.detectors.drift.concept import ConceptMonitor, LabelBatch, SummedLabels
from driftline.detectors.drift.numeric import NumericChannel
from driftline.detectors.drift.reference import (
    ReferenceBuilder,
    ReferenceProfile,
    fingerprint,
    from_wire,
    to_wire,
)
from driftline.detectors.policy import DecisionPolicy
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta, Recovery, Signal, WindowReport
from driftline.schemas.records import Prediction

if TYPE_CHECKING:
    from driftline.detectors.intake.slices import SliceSummary

_NUMERIC_TYPES = frozenset({int, float, type(None)})


def numeric_matrix(features: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """(n_events, n_features) float matrix; missing and wrongly typed values are NaN."""
    if not names:
        return np.empty((len(features), 0))
    rows = value_rows(features, names)
    if not set(map(type, chain.from_iterable(rows))) <= _NUMERIC_TYPES:
        rows = [
            tuple(v if type(v) is int or type(v) is float else None for v in row) for row in rows
        ]
    return np.array(rows, dtype=np.float64).reshape(len(features), len(names))


def numeric_column(values: list[Any]) -> np.ndarray:
    """(n_events, 1) float matrix of one value per event; non-numbers are NaN."""
    if not set(map(type, values)) <= _NUMERIC_TYPES:
        values = [v if type(v) is int or type(v) is float else None for v in values]
    return np.array(values, dtype=np.float64).reshape(len(values), 1)


def value_rows(
    features: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The named values of every event as tuples (None where absent); C-speed when present."""
    getter = itemgetter(*names) if len(names) > 1 else (lambda f: (f[names[0]],))
    try:
        return list(map(getter, features))
    except KeyError:
        return [tuple(map(f.get, names)) for f in features]


class ChannelSet(NamedTuple):
    """The drift channels a reference profile gives a version, in a fixed order (the
    order of a `SliceSummary`'s parts)."""

    numeric: NumericChannel | None
    categorical: CategoricalChannel | None
    pred_numeric: NumericChannel | None
    pred_categorical: CategoricalChannel | None

    @classmethod
    def of(cls, profile: ReferenceProfile, settings: DetectorSettings) -> ChannelSet:
        return cls(
            NumericChannel("data_drift", profile.numeric, settings) if profile.numeric else None,
            CategoricalChannel("data_drift", profile.categorical, settings)
            if profile.categorical
            else None,
            NumericChannel("prediction_drift", {"prediction": profile.prediction_numeric}, settings)
            if profile.prediction_numeric
            else None,
            CategoricalChannel(
                "prediction_drift", {"prediction": profile.prediction_categorical}, settings
            )
            if profile.prediction_categorical
            else None,
        )

    @property
    def present(self) -> list[Channel]:
        return [c for c in self if c is not None]

    def prepare(self, predictions: Sequence[Prediction]) -> list[tuple[int, Channel, Any]]:
        """Each present channel, with its position in the set and what its tests read of
        ``predictions`` (values scored against the reference, bucket codes...)."""
        out: list[tuple[int, Channel, Any]] = []
        features = [p.features for p in predictions]
        if self.numeric is not None:
            matrix = numeric_matrix(features, self.numeric.names)
            out.append((0, self.numeric, self.numeric.prepare(matrix)))
        if self.categorical is not None:
            columns = list(zip(*value_rows(features, self.categorical.names), strict=True))
            if not columns:
                columns = [() for _ in self.categorical.names]
            out.append((1, self.categorical, self.categorical.prepare(columns)))
        if self.pred_numeric is not None:
            values = numeric_column([p.prediction for p in predictions])
            out.append((2, self.pred_numeric, self.pred_numeric.prepare(values)))
        if self.pred_categorical is not None:
            column = [
                p.prediction[0]
                if isinstance(p.prediction, tuple) and p.prediction
                else p.prediction
                for p in predictions
            ]
            out.append((3, self.pred_categorical, self.pred_categorical.prepare([column])))
        return out


class VersionMonitor:
    """Detectors and decision policy of one (model, version).

    Without a reference profile, the first ``warmup_events`` predictions become the
    reference; monitoring starts with the next event.
    """

    def __init__(
        self,
        model_id: str,
        model_version: str,
        settings: DetectorSettings,
        profile: ReferenceProfile | None,
    ) -> None:
        self.model_id = model_id
        self.model_version = model_version
        self.settings = settings
        self.events = 0
        self.builder: ReferenceBuilder | None = None
        self.profile: ReferenceProfile | None = None
        self.channels: list[Channel] = []
        self.concept = ConceptMonitor(
            settings,
            profile.performance if profile else None,
            offline=profile.offline if profile else False,
        )
        self.policy: DecisionPolicy | None = None
        self.fingerprint: str | None = None
        """Of the profile, once a summed slice asks (`process`)."""
        self.hand_over = False
        """Whether the input stages should be given this version's reference: the last
        `process` built it (the warm-up's), or slices came summed against another one
        (`detectors.engine.ModelEngine.hand_over`)."""
        self.unmatched_events = 0
        """Events of slices summed against another profile: counted, not tested."""
        if profile is None:
            self.builder = ReferenceBuilder(settings, settings.warmup_events)
        else:
            self._activate(profile)

    @property
    def active(self) -> bool:
        return self.profile is not None

    @property
    def reference_label(self) -> str:
        if self.profile is None:
            return "none"
        if self.profile.offline:
            return f"profile:{self.profile.name}"
        return f"warmup:{self.profile.count} events"

    def _activate(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        s = self.settings
        found = ChannelSet.of(profile, s)
        self.numeric, self.categorical, self.pred_numeric, self.pred_categorical = found
        self.channel_set = found
        self.channels = found.present
        self.n_tests = sum(c.n_tests for c in self.channels) + concept_module.n_tests(s)
        arl = s.false_alarm_budget_events * self.n_tests
        for channel in self.channels:
            channel.calibrate(arl)
        self.concept.calibrate(arl)
        self.policy = DecisionPolicy(s, self.model_id, self.model_version, self.reference_label)

    def process(
        self,
        predictions: list[Prediction],
        seqs: list[int],
        labelled: LabelBatch | None = None,
        summed: Sequence[tuple[int, SliceSummary]] = (),
    ) -> list[Decision]:
        """One batch of this version's predictions, slices of its predictions summed by
        the input stage (``summed``, with their merge positions) and newly joined labels.

        A slice summed against another profile than this version's (one published while
        the version was already monitored) cannot be tested here: its events are counted
        (`unmatched_events`), not tested, and the version's own profile is handed to the
        input stages (`hand_over`), which sum against it from then on."""
        signals: list[Signal] = []
        reports: list[WindowReport | Recovery] = []
        start = 0
        if self.builder is not None:
            start = self._warm(predictions)
        if summed:
            summed = self._matched(summed)
        if self.active and (start < len(predictions) or summed):
            self._observe(predictions[start:], seqs[start:], signals, reports, summed)
            if self.profile is not None and self.profile.offline:
                signals = self._skew(signals, seqs[start:], summed)
        self.events += len(predictions) + sum(s.events for _, s in summed)
        if labelled is not None and labelled.labels:
            got_signals, got_reports = self.concept.update(labelled)
            signals += got_signals
            reports += got_reports
        if self.policy is None or not (signals or reports):
            return []
        return self.policy.process(signals, reports)

    def process_sums(self, found: Sequence[SummedLabels]) -> list[Decision]:
        """Labels of this version summed by the input stage (`detectors.intake.labelsums`)
        through the concept monitor (`detectors.drift.concept.ConceptMonitor.update_sums`)."""
        signals, reports = self.concept.update_sums(found)
        if self.policy is None or not (signals or reports):
            return []
        return self.policy.process(signals, reports)

    def _matched(
        self, summed: Sequence[tuple[int, SliceSummary]]
    ) -> Sequence[tuple[int, SliceSummary]]:
        """The slices summed against this version's profile (`process`)."""
        if self.profile is not None and self.fingerprint is None:
            self.fingerprint = fingerprint(self.profile)
        matched = [(seq, s) for seq, s in summed if s.profile == self.fingerprint]
        if len(matched) < len(summed):
            self.unmatched_events += sum(s.events for _, s in summed) - sum(
                s.events for _, s in matched
            )
            self.hand_over = self.profile is not None  # the input stages switch to it
        return matched

    def _skew(
        self,
        signals: list[Signal],
        seqs: list[int],
        summed: Sequence[tuple[int, SliceSummary]] = (),
    ) -> list[Signal]:
        """Input drift against an offline profile within the first ``skew_horizon_events``
        predictions of this version is training-serving skew: the live inputs never matched
        training."""
        horizon = self.settings.skew_horizon_events - self.events
        if horizon <= 0:
            return signals
        if summed:  # events before each position, a summed slice counting its events
            weighted = sorted([(q, 1) for q in seqs] + [(q, s.events) for q, s in summed])
            seqs = [q for q, _ in weighted]
            before = np.concatenate([[0], np.cumsum([n for _, n in weighted])])
        else:
            before = np.arange(len(seqs) + 1)
        return [
            replace(s, kind="training_serving_skew")
            if s.kind == "data_drift" and before[bisect_left(seqs, s.seq)] < horizon
            else s
            for s in signals
        ]

    def _warm(self, predictions: list[Prediction]) -> int:
        assert self.builder is not None
        need = self.settings.warmup_events - self.builder.count
        take = predictions[:need]
        for p in take:
            self.builder.add(p.features, p.prediction)
        if self.builder.full:
            profile = self.builder.build("warmup", self.model_id, self.model_version)
            self.builder = None
            self._activate(profile)
            self.hand_over = True
        return len(take)

    def _observe(
        self,
        predictions: list[Prediction],
        seqs: list[int],
        signals: list[Signal],
        reports: list[WindowReport | Recovery],
        summed: Sequence[tuple[int, SliceSummary]] = (),
    ) -> None:
        """Predictions, and slices summed by the input stage (``summed``, with their merge
        positions), through the channels."""
        meta = BatchMeta(
            np.asarray(seqs, dtype=np.int64),
            np.fromiter((p.ts for p in predictions), dtype=np.int64, count=len(predictions)),
            [p.event_id for p in predictions],
        )
        every = self.settings.slice_ms
        slices = meta.ts // every if every else None
        at = [(bisect_left(seqs, seq), seq, summary) for seq, summary in summed]
        for i, channel, data in self.channel_set.prepare(predictions):
            if slices is not None and channel.summable:
                parts = [(pos, seq, part) for pos, seq, found in at if (part := found.parts[i])]
                got = channel.update_slices(data, meta, slices, parts)
            else:
                got = channel.update(data, meta)
            _collect(got, signals, reports)

    def distributions(self, features: set[str]) -> dict[tuple[str, str], list[list[float]]]:
        """(kind, feature) -> [reference bin shares, current bin shares] of the features
        asked for that this version monitors (`Channel.distribution`)."""
        out = {}
        for channel in self.channels:
            for feature in features:
                found = channel.distribution(feature)
                if found is None:
                    continue
                ref, counts = found
                total = counts.sum()
                if total > 0:
                    out[(channel.kind, feature)] = [ref.tolist(), (counts / total).tolist()]
        return out

    def drift_scores(self) -> dict[str, float]:
        """Per kind, the largest sequential statistic over its threshold (1 = alarm)."""
        scores: dict[str, float] = {}
        for channel in self.channels:
            ratios = channel.bank.ratios()
            for spec, ratio in zip(channel.specs, ratios, strict=True):
                scores[spec.kind] = max(scores.get(spec.kind, 0.0), float(ratio))
        if self.concept.ready:
            scores["concept_drift"] = float(self.concept.bank.ratios()[0])
        return scores

    def state(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "events": self.events,
            "builder": None
            if self.builder is None
            else [
                [dict(f), to_wire(p)]
                for f, p in zip(self.builder.features, self.builder.predictions, strict=True)
            ],
            "profile": None if self.profile is None else self.profile.to_dict(),
            "channels": [c.state() for c in self.channels],
            "concept": self.concept.state(),
            "policy": None if self.policy is None else self.policy.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: DetectorSettings) -> VersionMonitor:
        profile = ReferenceProfile.from_dict(state["profile"]) if state["profile"] else None
        monitor = cls(state["model_id"], state["model_version"], settings, profile)
        monitor.events = state["events"]
        if state["builder"] is not None:
            assert monitor.builder is not None
            for features, prediction in state["builder"]:
                monitor.builder.add(features, from_wire(prediction))
        for channel, channel_state in zip(monitor.channels, state["channels"], strict=True):
            channel.restore(channel_state)
        monitor.concept.restore(state["concept"])
        if monitor.policy is not None and state["policy"] is not None:
            monitor.policy.restore(state["policy"])
        return monitor


def _collect(
    result: tuple[list[Signal], list[WindowReport | Recovery]],
    signals: list[Signal],
    reports: list[WindowReport | Recovery],
) -> None:
    signals += result[0]
    reports += result[1]
