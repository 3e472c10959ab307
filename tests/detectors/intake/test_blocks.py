"""Blocks of labels: with slices on, a model's joined labels travel to the model stage as
columns per slice; they reach the model stage up to a slice later, and change nothing
else."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace as settings_with

import orjson
import pytest
from msgspec.structs import replace

from driftline.detectors.intake.blocks import LabelBlocks, block_from_wire, block_to_wire
from driftline.detectors.intake.stage import LABEL, LABELS, Intake
from driftline.detectors.intake.wire import decode_items, encode_items
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import StreamSpec, generate, with_promotion

SETTINGS = DetectorSettings(
    slice_ms=2_000, warmup_events=2_000, window_events=2_000, label_warmup_events=1_000
)
"""Slices of 200 predictions (and about 100 labels) at the simulator's 10 ms spacing."""
MODEL = "credit-risk"


def _labels(items) -> list[tuple]:
    """(event id, label, prediction, prediction time) of every label in ``items``, in
    the order they were made."""
    out = []
    for item in items:
        if item.kind == LABEL:
            j = item.label
            out.append((item.event.event_id, j.label, j.prediction, j.prediction_ts))
        elif item.kind == LABELS:
            b = item.event
            out += zip(b.event_ids, b.labels, b.predictions, b.prediction_ts, strict=True)
    return out


def _decisions(events, *, block_bytes: int | None = None, items: bool = False):
    """Decisions of both stages on 4 partitions, every field; ``block_bytes``: the input
    stages' block bound, ``items``: labels travel as items."""
    pipeline = StagedPipeline(4, SETTINGS)
    for intake in pipeline.intakes:
        if block_bytes is not None:
            intake.blocks.max_bytes = block_bytes
        if items:  # every label an item (as label by label, where blocks never take)
            intake.blocks.takes = lambda model_id: False  # type: ignore[method-assign]
    staged = Staged(pipeline)
    out = []
    for i in range(0, len(events), 4_096):
        out += staged.process(events[i : i + 4_096])
    return [d.to_dict(0) for d in out]


def test_a_slices_labels_travel_as_blocks_holding_every_label_once() -> None:
    """No label item: the blocks hold the labels the item path makes, in its order, each
    block those of one slice of the partition's time; blocks survive the summaries
    topic's encoding."""
    events = generate(StreamSpec(n_predictions=6_000, seed=4))
    blocked = Intake(SETTINGS)
    got = [
        i for b in range(0, len(events), 777) for i in blocked.process(events[b : b + 777])[MODEL]
    ]
    got += blocked.flush_slices()[MODEL]
    plain = Intake(settings_with(SETTINGS, slice_ms=0))
    expected = [
        i for b in range(0, len(events), 777) for i in plain.process(events[b : b + 777])[MODEL]
    ]
    kinds = Counter(i.kind for i in got)
    assert kinds[LABEL] == 0 and kinds[LABELS] >= 25
    assert _labels(got) == _labels(expected) and len(_labels(expected)) > 1_500
    every = SETTINGS.slice_ms
    for item in got:
        if item.kind == LABELS:
            assert item.slot // every >= item.event.number
    decoded = decode_items(orjson.loads(orjson.dumps(encode_items(got))), MODEL)
    assert _labels(decoded) == _labels(got)


def test_blocks_of_one_outcome_give_the_item_paths_decisions() -> None:
    """A block sent with each outcome stands where the outcome's labels would: the model
    stage reads blocks as it reads label items (every field of every decision equal)."""
    events = generate(
        StreamSpec(scenario="concept", n_predictions=30_000, change_at=15_000, seed=7)
    )
    expected = _decisions(events, items=True)
    assert any(d["kind"] == "concept_drift" for d in expected)
    assert _decisions(events, block_bytes=1) == expected


def test_a_shadows_labels_pair_with_the_champions_in_blocks() -> None:
    """A promoted version with the old one shadowing it on the same requests: the labels
    of an outcome (the champion's and the shadow's) travel in one block and keep one
    position, so the paired comparison rolls the promotion back as on items, and blocks
    of one outcome give the item path's decisions, every field."""
    events = with_promotion(
        generate(StreamSpec(n_predictions=50_000, seed=93)), at=15_000, flip=0.12, seed=93,
        shadow_old=True,
    )  # fmt: skip
    expected = _decisions(events, items=True)
    rollbacks = [d for d in expected if d["type"] == "rollback"]
    assert rollbacks and rollbacks[0]["kind"] == "promotion_regression"
    assert _decisions(events, block_bytes=1) == expected
    got = [(d["type"], d["kind"]) for d in _decisions(events) if d["type"] == "rollback"]
    assert got[:1] == [("rollback", "promotion_regression")]
    intake = Intake(SETTINGS)
    blocks = [i.event for i in intake.process(events)[MODEL] if i.kind == LABELS]
    paired = [b for b in blocks if len(set(b.versions)) == 2]
    assert paired and all(b.positions < b.events for b in paired)


@pytest.mark.parametrize("seed", [7, 10])
def test_blocks_move_concept_drift_by_at_most_a_slice_or_two(seed: int) -> None:
    """Labels read a slice at a time: the concept drift decision comes within two slices
    of label by label's (later, by a slice at most, or earlier: a block's labels
    come in the order of their partition, not merged by time, so the test crosses on
    another label); none on a stationary stream."""
    spec = StreamSpec(scenario="concept", n_predictions=30_000, change_at=15_000, seed=seed)
    events = generate(spec)
    first = [
        next(d for d in found if d["kind"] == "concept_drift")
        for found in (_decisions(events, items=True), _decisions(events))
    ]
    late_ms = first[1]["ts"] - first[0]["ts"]
    assert abs(late_ms) <= 2 * SETTINGS.slice_ms
    quiet = generate(StreamSpec(n_predictions=30_000, seed=seed))
    assert not [d for d in _decisions(quiet) if d["kind"] == "concept_drift"]


def test_labels_that_are_read_one_by_one_travel_as_items() -> None:
    """Labels of tagged predictions, with a trace, or with a list for a value go as
    items. A model that shows a canary keeps its labels in blocks (its comparisons read
    them there) while its predictions go as items."""
    events = generate(StreamSpec(n_predictions=3_000, seed=5))
    at = next(i for i, e in enumerate(events) if type(e) is Prediction and i > 2_500)
    canary = [*events[:at], replace(events[at], model_version="v2", role="canary"), *events[at:]]
    items = Intake(SETTINGS).process(canary)[MODEL]
    switch = next(n for n, i in enumerate(items) if i.kind == 0 and i.event.role == "canary")
    assert LABELS in [i.kind for i in items[switch:]] and LABEL not in [i.kind for i in items]

    tagged = [e if type(e) is not Prediction else replace(e, segment={"r": "n"}) for e in events]
    kinds = Counter(i.kind for i in Intake(SETTINGS).process(tagged)[MODEL])
    joined = Counter(
        i.kind for i in Intake(settings_with(SETTINGS, slice_ms=0)).process(events)[MODEL]
    )
    assert kinds[LABELS] == 0 and kinds[LABEL] == joined[LABEL] > 300

    traced = Intake(SETTINGS).process(events, ["00-ab-cd-01"] * len(events))[MODEL]
    assert LABELS not in {i.kind for i in traced}

    listed = [e if type(e) is not Outcome else replace(e, label=[e.label]) for e in events]
    assert LABELS not in {i.kind for i in Intake(SETTINGS).process(listed)[MODEL]}


def test_a_block_is_sent_when_it_holds_its_bytes() -> None:
    """A hot slice goes in several blocks, none over the bound (the estimate is of a
    label's largest numbers)."""
    events = generate(StreamSpec(n_predictions=6_000, seed=6, event_ms=1))
    intake = Intake(SETTINGS, block_bytes=4_000)
    blocks = [i.event for i in intake.process(events)[MODEL] if i.kind == LABELS]
    sizes = [len(orjson.dumps(block_to_wire(b))) for b in blocks]
    assert len({b.number for b in blocks}) < len(blocks)
    assert max(sizes) <= 4_000 and sorted(sizes)[len(sizes) // 2] > 4_000 * 0.5


def test_a_block_read_back_from_the_wire_is_checked() -> None:
    """Columns of different lengths, none, ordinals that do not start at 0 or a field
    missing: an unreadable block."""
    blocks = LabelBlocks(lambda _: SETTINGS)
    blocks.take(MODEL, "v1", 4_000, "e1", 4_000, 1, 0.7, 3_000, True)
    blocks.take(MODEL, "v2", 4_000, "e1", 4_000, 1, 0.4, 3_000, False)
    block = blocks.flush()[MODEL][0]
    assert block.outcomes == [0, 0] and block.positions == 1
    assert block_from_wire(MODEL, block_to_wire(block)) == block
    row = block_to_wire(block)
    with pytest.raises(ValueError, match="differ in length"):
        block_from_wire(MODEL, [*row[:4], [1], *row[5:]])
    with pytest.raises(ValueError, match="no label"):
        block_from_wire(MODEL, [row[0], *([] for _ in row[1:])])
    with pytest.raises(ValueError, match="count up"):
        block_from_wire(MODEL, [row[0], row[1], [1, 1], *row[3:]])
    with pytest.raises(ValueError, match="fields"):
        block_from_wire(MODEL, row[:-1])


def test_blocks_restored_after_slices_were_turned_off_are_sent_as_they_are() -> None:
    """A checkpoint with open blocks, restored with ``slice_ms`` 0: the blocks go to the
    model stage with the next batch, every label in them, and labels go as items again."""
    events = generate(StreamSpec(n_predictions=4_000, seed=3))
    first = Intake(SETTINGS)
    sent = [i for b in range(0, 3_000, 500) for i in first.process(events[b : b + 500])[MODEL]]
    held = first.blocks.open[MODEL].event_ids
    assert held
    state = orjson.loads(orjson.dumps(first.state()))
    second = Intake(settings_with(SETTINGS, slice_ms=0))
    second.restore(state)
    again = orjson.loads(orjson.dumps(second.state()))["blocks"]["open"]
    assert [row[:2] for row in again] == [row[:2] for row in state["blocks"]["open"]]
    after = second.process(events[3_000:])[MODEL]
    assert after[0].kind == LABELS and after[0].event.event_ids == held
    assert LABELS not in {i.kind for i in after[1:]} and LABEL in {i.kind for i in after}
    plain = Intake(settings_with(SETTINGS, slice_ms=0))
    expected = plain.process(events[:3_000])[MODEL] + plain.process(events[3_000:])[MODEL]
    assert sorted(_labels(sent + after)) == sorted(_labels(expected))
