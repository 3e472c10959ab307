"""Stage 1 of the pipeline, one per input partition: dedupe, join, and route by model.

Predictions and outcomes are co-partitioned by ``request_id``, so the join has to happen
where both sides of a request land. Everything after the join is per model, so the
intake hands each model's items (`Routed`) on to the model stage (`detectors.intake.merge`,
then `detectors.engine.ModelEngine`), which sees the model's traffic of every partition
together: a model's tests, warm-up and false-alarm budget do not depend on how many
partitions its topics have.

Each item carries the position that orders it in the model stage: ``slot``, the
partition's event-time watermark of its model when the item was made (never decreasing
along a partition), and ``seq``, the partition's running count of items (what the model
stage uses to recognise an item re-sent after a crash).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from driftline.detectors.drift.reference import ReferenceProfile, from_wire, to_wire
from driftline.detectors.feedback.monitor import (
    INDEPENDENT,
    LABEL,
    NOT_LOOKED_UP,
    OVERFLOW_PAIRS,
    PREDICTION,
    Tag,
    TagRegistry,
    feedback_tag,
    no_action_words,
)
from driftline.detectors.intake.blocks import (
    BLOCK_BYTES,
    LabelBlock,
    LabelBlocks,
    block_from_wire,
    block_to_wire,
    blockable,
)
from driftline.detectors.intake.join import OutcomeJoin
from driftline.detectors.intake.labelsums import (
    LabelSums,
    Rule,
    merge_sums,
    summed,
    sums_from_wire,
    sums_to_wire,
)
from driftline.detectors.intake.recent import RecentIds
from driftline.detectors.intake.slices import (
    Slicer,
    SliceSummary,
    summary_from_wire,
    summary_to_wire,
)
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Event, Outcome, Prediction

SUMMARY = 3
"""Item kind of a slice of a version's predictions summed here (`SliceSummary`)."""
LABELS = 4
"""Item kind of a block of a version's joined labels (`detectors.intake.blocks`)."""
LABEL_SUMS = 5
"""Item kind of a block of labels summed here (`detectors.intake.labelsums`)."""

INTAKE_COUNTERS = ("events", "predictions", "outcomes", "duplicates")
SEEN_TAG_KEYS = 4_096
"""Distinct (action, exploration, segment) combinations remembered per model: a model whose
actions take many values (item ids) starts over when it has seen this many."""
_KEYABLE = frozenset({str, int, bool, float, tuple, type(None)})
"""Kinds of action a decoded event carries (all hashable)."""


class Label(NamedTuple):
    """A prediction joined with its outcome, as the model stage needs it."""

    model_version: str
    prediction: Any
    label: Any
    prediction_ts: int
    tag: tuple[Any, ...] | None
    """The prediction's feedback tag (acted, exploration, segment pairs), if it had one."""


class Routed(NamedTuple):
    """One item for the model stage."""

    kind: int
    """`PREDICTION`, `LABEL` (a joined outcome), `INDEPENDENT` (an independent outcome),
    `SUMMARY` (a slice of predictions summed), `LABELS` (a block of joined labels) or
    `LABEL_SUMS` (a block of labels summed)."""
    seq: int
    """Position among the items of its input partition (re-sent items repeat it)."""
    slot: int
    """The partition's event-time watermark of the model when the item was made."""
    event: Any
    """The prediction, the outcome, the `SliceSummary`, the `LabelBlock` or the
    `LabelSums`."""
    label: Label | None
    """For a joined outcome: what it was joined with."""
    trace: str | None = None
    """W3C ``traceparent`` of the record the item came from, if it had one: a decision
    this item triggers carries it, so a trace shows why a rollback happened."""
    tag: Tag | None = None
    """For a prediction: its feedback tag as this stage built it for the join (not sent
    on the wire; the model stage builds it again for an item that came from there)."""


def _tag_key(event: Prediction) -> tuple[Any, bool, tuple[Any, ...]]:
    """What decides a prediction's feedback tag, as a key: a ranked list (a tuple once
    decoded) counts as acted when it is not empty, and equal actions (1 and True, 0 and
    False) are acted alike."""
    action, segment = event.action, event.segment
    return (
        bool(action) if type(action) is tuple else action,
        event.exploration,
        tuple(segment.items()) if segment else (),
    )


class Intake:
    """Dedupe and join of one input partition; routes items per model.

    Parameters
    ----------
    settings
        Default detector settings.
    model_settings
        Per-model overrides (feedback-loop detection on or off, its "not acted" words).
    profiles
        Reference profiles by ``model_id@version`` or ``model_id``: with ``slice_ms`` set,
        the predictions of versions that have one are summed here per slice
        (`detectors.intake.slices`). The mapping is read, never copied: a worker adds
        profiles to it as they are published.
    block_bytes
        With ``slice_ms`` set, the estimated encoded bytes at which a block of labels is
        sent before its slice ends (`detectors.intake.blocks`).
    """

    def __init__(
        self,
        settings: DetectorSettings | None = None,
        model_settings: Mapping[str, DetectorSettings] | None = None,
        profiles: Mapping[str, ReferenceProfile] | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self.settings = settings or DetectorSettings()
        self.model_settings = dict(model_settings or {})
        self.profiles = profiles if profiles is not None else {}
        self.slicer = Slicer(self.settings_for, self.profiles)
        self.blocks = LabelBlocks(self.settings_for, block_bytes)
        self.held_sums: dict[str, LabelSums] = {}
        """Per model, the sums of the blocks of its open slice sent full (a slice's labels
        go to the model stage as one sum, whatever their number: `_sent`)."""
        self.slicing = any(s.slice_ms > 0 for s in (self.settings, *self.model_settings.values()))
        """Whether any model's predictions may be summed and labels sent in blocks here
        (else nothing is looked up)."""
        s = self.settings
        self.join = OutcomeJoin(s.join_ttl_ms, s.join_max_pending, s.join_memory)
        self.seen = RecentIds(s.dedupe_horizon)
        self.seq = 0
        self.counts = dict.fromkeys(INTAKE_COUNTERS, 0)
        self.watermarks: OrderedDict[str, int] = OrderedDict()
        """Per model, the largest event time admitted here (least recently seen first,
        bounded by ``max_models``)."""
        self.tags: dict[str, TagRegistry] = {}
        """Per model, ids of the feedback tags predictions carry through the join."""
        self._no_action: dict[str, frozenset[str] | None] = {}
        self._seen: dict[str, dict[tuple[Any, bool, tuple[Any, ...]], tuple[int, Tag | None]]] = {}
        """Per model, the tag id and tag of the (action, exploration, segment) combinations
        seen lately: building a tag and finding its id costs more than one look-up."""

    def settings_for(self, model_id: str) -> DetectorSettings:
        return self.model_settings.get(model_id, self.settings)

    def process(
        self, events: Sequence[Event], traces: Sequence[str | None] | None = None
    ) -> dict[str, list[Routed]]:
        """Route a batch of decoded events (in arrival order) to their models' items;
        ``traces`` (one per event, or None) are the records' ``traceparent`` headers."""
        out: dict[str, list[Routed]] = {}
        join, seen, watermarks = self.join, self.seen, self.watermarks
        slicer, blocks, slicing = self.slicer, self.blocks, self.slicing
        placed: list[tuple[list[Routed], int]] = []  # summary items, summed at the end
        if slicer.pending:  # restored without their profile: sent as they are
            self._route_summaries(slicer.pending, out)
            slicer.pending = {}
        if blocks.pending:  # restored after slices were turned off: sent as they are
            self._route_labels(blocks.pending, out)
            blocks.pending = {}
        seq = self.seq
        duplicates = n_predictions = 0
        trace_of = iter(traces) if traces is not None else None
        trace = None
        for event in events:
            if trace_of is not None:
                trace = next(trace_of)
            if not seen.add(event.event_id):
                duplicates += 1
                continue
            model_id = event.model_id
            items = out.get(model_id)
            if items is None:
                items = out[model_id] = []
            slot = watermarks.get(model_id)
            if slot is None or event.ts > slot:
                if slicing and slot is not None:
                    # This partition's time of the model passes the end of a slice: it
                    # goes first, where its events were in the partition's order (summed
                    # at the batch's end), then the slice's labels.
                    if model_id in slicer.lowest:
                        for piece in slicer.closing(model_id, event.ts):
                            placed.append((items, len(items)))
                            items.append(Routed(SUMMARY, seq, slot, piece, None))
                            seq += 1
                    if model_id in blocks.open or model_id in self.held_sums:
                        closed = blocks.closing(model_id, event.ts)
                        for sent in self._sent(model_id, closed, event.ts):
                            items.append(_labels_item(seq, slot, sent))
                            seq += 1
                slot = watermarks[model_id] = event.ts
            if type(event) is Prediction:
                n_predictions += 1
                tagged = (
                    self._tag(event)
                    if event.segment is not None or event.action is not None or event.exploration
                    else None
                )
                if tagged is None:
                    tag = None
                    if not (slicing and slicer.take(event, slot)):
                        items.append(Routed(PREDICTION, seq, slot, event, None, trace))
                        seq += 1
                else:
                    tag, built = tagged
                    items.append(Routed(PREDICTION, seq, slot, event, None, trace, built))
                    seq += 1
                joined = join.add_prediction(
                    event.request_id,
                    (model_id, event.model_version, event.prediction, event.ts, tag),
                )
                outcome = None
            else:
                outcome = event
                if outcome.independent:  # type: ignore[union-attr]
                    items.append(Routed(INDEPENDENT, seq, slot, event, None, trace))
                    seq += 1
                    continue
                joined = join.add_outcome(
                    outcome.request_id,
                    model_id,
                    outcome.label,  # type: ignore[union-attr]
                    outcome.ts,
                )
            if (
                slicing
                and joined
                and trace is None
                and blocks.takes(model_id)
                and all(j.tag is None and blockable(j.label, j.prediction) for j in joined)
            ):
                # The outcome's labels go in the model's block, together.
                for n, j in enumerate(joined):
                    blocks.take(
                        model_id, j.model_version, slot, event.event_id, event.ts, j.label,
                        j.prediction, j.prediction_ts, n == 0,
                    )  # fmt: skip
                full = blocks.full(model_id)
                if full is not None:
                    for sent in self._sent(model_id, [full], slot):
                        items.append(_labels_item(seq, slot, sent))
                        seq += 1
                continue
            for j in joined:
                if outcome is None:  # the outcome came first: rebuild it from the join
                    found: Event = Outcome(
                        event.event_id, event.request_id, model_id, event.ts, j.label, None, False
                    )
                else:
                    found = outcome
                registry = self.tags.get(model_id)
                carried = (
                    registry.tags[j.tag] if registry is not None and j.tag is not None else None
                )
                items.append(
                    Routed(
                        LABEL,
                        seq,
                        slot,
                        found,
                        Label(j.model_version, j.prediction, j.label, j.prediction_ts, carried),
                        trace,
                    )
                )
                seq += 1
        self.seq = seq
        if slicing:
            slicer.finish()
            for model_items, at in placed:
                summary = model_items[at].event.summary
                model_items[at] = model_items[at]._replace(event=summary)
        counts = self.counts
        counts["events"] += len(events)
        counts["duplicates"] += duplicates
        counts["predictions"] += n_predictions
        counts["outcomes"] += len(events) - duplicates - n_predictions
        for model_id in out:
            watermarks.move_to_end(model_id)
        while len(watermarks) > self.settings.max_models:
            model_id = watermarks.popitem(last=False)[0]
            self.slicer.forget(model_id)
            self.blocks.forget(model_id)
            self.held_sums.pop(model_id, None)
            self.tags.pop(model_id, None)
            self._no_action.pop(model_id, None)
            self._seen.pop(model_id, None)
        return out

    def flush_slices(self) -> dict[str, list[Routed]]:
        """Every slice and block of labels open here as an item, per model (the
        partition has read all there is for now: the model stage need not wait for
        them)."""
        out: dict[str, list[Routed]] = {}
        found = self.slicer.flush()
        for model_id, restored in self.slicer.pending.items():
            found[model_id] = restored + found.get(model_id, [])
        self.slicer.pending = {}
        self._route_summaries(found, out)
        blocks = self.blocks.flush()
        for model_id, held in self.blocks.pending.items():
            blocks[model_id] = held + blocks.get(model_id, [])
        self.blocks.pending = {}
        for model_id in self.held_sums:
            blocks.setdefault(model_id, [])
        self._route_labels(blocks, out)
        return out

    def _summed(self, block: LabelBlock) -> LabelSums | None:
        """A block's labels summed where every reader in the model stage takes sums
        (`detectors.intake.labelsums`), else None."""
        settings = self.settings_for(block.model_id)
        if settings.concept_detector != "cusum":
            return None
        rules = {}
        for version in set(block.versions):
            profile = self.profiles.get(f"{block.model_id}@{version}") or self.profiles.get(
                block.model_id
            )
            if profile is None or profile.performance is None:
                return None
            figure = profile.performance
            rules[version] = Rule(figure.task, figure.residual_tolerance)
        return summed(
            block, rules, settings.classification_threshold, settings.scores_are_probabilities
        )

    def _sent(
        self, model_id: str, closed: Sequence[LabelBlock], until: int | None
    ) -> list[LabelBlock | LabelSums]:
        """A model's closed blocks as what to send now, in order: a block summed where it
        may be, and the sums of one slice gathered in `held_sums` until the partition's
        event time of the model reaches ``until`` past the slice (None: sent now), so a
        slice's labels go as one sum whatever their number. A block that stays columns
        sends the sums held before it first."""
        out: list[LabelBlock | LabelSums] = []
        held = self.held_sums
        for block in closed:
            found = self._summed(block)
            if found is None:
                if model_id in held:
                    out.append(held.pop(model_id))
                out.append(block)
                continue
            earlier = held.get(model_id)
            if earlier is not None and (
                earlier.number != found.number
                or any(earlier.rules.get(v, rule) != rule for v, rule in found.rules.items())
            ):  # another slice, or a version judged otherwise (its profile was replaced)
                out.append(held.pop(model_id))
                earlier = None
            held[model_id] = found if earlier is None else merge_sums(earlier, found)
        waiting = held.get(model_id)
        every = self.settings_for(model_id).slice_ms
        if waiting is not None and (until is None or every <= 0 or until // every > waiting.number):
            out.append(held.pop(model_id))
        return out

    def _route_labels(
        self, found: Mapping[str, Sequence[LabelBlock]], out: dict[str, list[Routed]]
    ) -> None:
        """Blocks of labels (and the sums held) as items of their models, at the
        partition's event time of each."""
        for model_id, blocks in found.items():
            slot = self.watermarks[model_id]
            items = out.setdefault(model_id, [])
            for sent in self._sent(model_id, blocks, None):
                items.append(_labels_item(self.seq, slot, sent))
                self.seq += 1

    def _route_summaries(
        self,
        found: Mapping[str, Sequence[SliceSummary]],
        out: dict[str, list[Routed]],
    ) -> None:
        """Summaries as items of their models, at the partition's event time of each."""
        for model_id, summaries in found.items():
            slot = self.watermarks[model_id]
            items = out.setdefault(model_id, [])
            for summary in summaries:
                items.append(Routed(SUMMARY, self.seq, slot, summary, None))
                self.seq += 1

    def _tag(self, event: Prediction) -> tuple[int, Tag | None] | None:
        """Id of the prediction's feedback tag and the tag itself (None when the registry
        pooled it into the overflow), or None (feedback-loop detection off for its model).
        Called for predictions with a feedback field."""
        seen = self._seen.get(event.model_id)
        if seen is None:  # nothing remembered (or feedback-loop detection off)
            return self._new_tag(event)
        key = _tag_key(event)
        try:
            found = seen.get(key)
        except TypeError:  # an action no key can hold (a list handed over undecoded)
            found = None
        return found if found is not None else self._new_tag(event)

    def _new_tag(self, event: Prediction) -> tuple[int, Tag | None] | None:
        """`_tag` for a combination not remembered: look the words up, register the tag,
        and remember it (only keys of the kinds decoding makes)."""
        model_id = event.model_id
        words = self._no_action.get(model_id, NOT_LOOKED_UP)
        if words is NOT_LOOKED_UP:
            settings = self.settings_for(model_id)
            words = self._no_action[model_id] = (
                no_action_words(settings) if settings.feedback_enabled else None
            )
        if words is None:  # feedback-loop detection is off for this model
            return None
        registry = self.tags.get(model_id)
        if registry is None:
            registry = self.tags[model_id] = TagRegistry(
                max_tags=self.settings_for(model_id).feedback_max_tags
            )
        tag_id = registry.id(feedback_tag(event.segment, event.action, event.exploration, words))
        # The registry's own copy, which lives as long as the registry: an item that held
        # the tag just built would keep three young tuples alive per prediction until the
        # model stage reads it (measured: more garbage-collector work than the tag saves).
        # A tag pooled into the overflow is not the prediction's own: none then.
        tag = registry.tags[tag_id]
        found = tag_id, None if tag[2] == OVERFLOW_PAIRS else tag
        if type(event.action) in _KEYABLE:
            seen = self._seen.get(model_id)
            if seen is None or len(seen) >= SEEN_TAG_KEYS:  # actions of many values: start over
                seen = self._seen[model_id] = {}
            seen[_tag_key(event)] = found
        return found

    def state(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "seen": self.seen.state(),
            "counts": dict(self.counts),
            "join": self.join.state(),
            "watermarks": list(self.watermarks.items()),
            "tags": {m: r.state() for m, r in self.tags.items()},
            "slices": self.slicer.state(),
            "blocks": self.blocks.state(),
            "held_sums": [[m, sums_to_wire(s)] for m, s in self.held_sums.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self.seen.restore(state["seen"])
        self.counts = {**dict.fromkeys(INTAKE_COUNTERS, 0), **state["counts"]}
        self.join.restore(state["join"])
        self.watermarks = OrderedDict((m, int(w)) for m, w in state["watermarks"])
        self.tags = {
            m: TagRegistry.from_state(r, self.settings_for(m).feedback_max_tags)
            for m, r in state["tags"].items()
        }
        self._no_action = {}
        self._seen = {}
        if "slices" in state:  # states from before slices have none open
            self.slicer.restore(state["slices"])
        if "blocks" in state:  # nor blocks of labels
            self.blocks.restore(state["blocks"])
        self.held_sums = {m: sums_from_wire(m, row) for m, row in state.get("held_sums", [])}


def _labels_item(seq: int, slot: int, found: LabelBlock | LabelSums) -> Routed:
    return Routed(LABEL_SUMS if type(found) is LabelSums else LABELS, seq, slot, found, None)


def item_to_wire(item: Routed) -> list[Any]:
    """An item as a JSON-compatible row (checkpoints, and the summaries messages' items
    other than predictions: `detectors.intake.wire`); a trace, when there is one, is a
    last element (rows without it are what older versions wrote)."""
    e = item.event
    if item.kind == SUMMARY:
        return [SUMMARY, item.seq, item.slot, *summary_to_wire(e)]
    if item.kind == LABELS:
        return [LABELS, item.seq, item.slot, *block_to_wire(e)]
    if item.kind == LABEL_SUMS:
        return [LABEL_SUMS, item.seq, item.slot, *sums_to_wire(e)]
    if item.kind == PREDICTION:
        p: Prediction = e
        row = [
            PREDICTION, item.seq, item.slot, p.event_id, p.request_id, p.ts,
            p.model_version, to_wire(p.prediction), p.features, p.scores, p.role,
            p.segment, list(p.action) if type(p.action) is tuple else p.action,
            p.exploration,
        ]  # fmt: skip
    else:
        o: Outcome = e
        row = [item.kind, item.seq, item.slot, o.event_id, o.request_id, o.ts, o.label]
        if item.kind == INDEPENDENT:
            row.append(o.segment)
        else:
            label = item.label
            assert label is not None
            row += [
                label.model_version, to_wire(label.prediction), label.prediction_ts, label.tag
            ]  # fmt: skip
    if item.trace is not None:
        row.append(item.trace)
    return row


def item_from_wire(
    row: list[Any], model_id: str, feature_keys: Sequence[Sequence[str]] | None = None
) -> Routed:
    """Inverse of `item_to_wire` (the model id travels once per message, as its key),
    and of the rows of format-2 summaries messages, whose predictions' features are
    ``[index of their names in feature_keys, *values]``."""
    if row[0] == SUMMARY:
        return Routed(SUMMARY, row[1], row[2], summary_from_wire(model_id, row[3:]), None)
    if row[0] == LABELS:
        return Routed(LABELS, row[1], row[2], block_from_wire(model_id, row[3:]), None)
    if row[0] == LABEL_SUMS:
        return Routed(LABEL_SUMS, row[1], row[2], sums_from_wire(model_id, row[3:]), None)
    kind, seq, slot, event_id, request_id, ts = row[:6]
    trace = row[_TRACE_AT[kind]] if len(row) > _TRACE_AT.get(kind, len(row)) else None
    if kind == PREDICTION:
        version, prediction, features, scores, role, segment, action, exploration = row[6:14]
        if feature_keys is not None:
            features = dict(zip(feature_keys[features[0]], features[1:], strict=True))
        event: Event = Prediction(
            event_id, request_id, model_id, version, ts, features, from_wire(prediction),
            scores, role, segment, tuple(action) if type(action) is list else action,
            exploration,
        )  # fmt: skip
        return Routed(kind, seq, slot, event, None, trace)
    if kind == INDEPENDENT:
        outcome = Outcome(event_id, request_id, model_id, ts, row[6], row[7], True)
        return Routed(kind, seq, slot, outcome, None, trace)
    if kind != LABEL:
        raise ValueError(f"unknown item kind {kind!r}")
    version, prediction, prediction_ts, tag = row[7:11]
    if tag is not None:
        tag = (bool(tag[0]), bool(tag[1]), tuple((k, v) for k, v in tag[2]))
    label = Label(version, from_wire(prediction), row[6], prediction_ts, tag)
    outcome = Outcome(event_id, request_id, model_id, ts, row[6], None, False)
    return Routed(kind, seq, slot, outcome, label, trace)


_TRACE_AT = {PREDICTION: 14, INDEPENDENT: 8, LABEL: 11}
"""Position of the optional trace in a wire row, by item kind."""


__all__ = [
    "INDEPENDENT",
    "LABEL",
    "LABELS",
    "LABEL_SUMS",
    "PREDICTION",
    "Intake",
    "Label",
    "Routed",
    "item_from_wire",
    "item_to_wire",
    "no_action_words",
]
