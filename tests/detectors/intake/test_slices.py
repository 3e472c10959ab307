"""Slices summed by the input stage: they replace a profiled version's predictions on the
way to the model stage, and where a slice was summed changes no decision."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace as settings_with

import orjson
import pytest
from msgspec.structs import replace

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile, fingerprint
from driftline.detectors.engine import Engine
from driftline.detectors.feedback.monitor import LABEL, PREDICTION
from driftline.detectors.intake.slices import Slicer
from driftline.detectors.intake.stage import LABELS, SUMMARY, Intake, item_to_wire
from driftline.detectors.intake.wire import decode_items, encode_items
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import StreamSpec, generate

SETTINGS = DetectorSettings(
    slice_ms=2_000, warmup_events=2_000, window_events=2_000, label_warmup_events=1_000
)
"""Slices of 200 predictions at the simulator's 10 ms spacing."""
MODEL = "credit-risk"


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    """An offline profile of the simulator's model."""
    builder = ReferenceBuilder(SETTINGS, 20_000)
    for e in generate(StreamSpec(scenario="stationary", n_predictions=20_000, seed=99)):
        if type(e) is Prediction:
            builder.add(e.features, e.prediction)
    return builder.build("training", MODEL)


def _staged(events, profile, summed: bool, batch: int = 4_096, partitions: int = 4):
    """Decisions, every field, of both stages on ``partitions`` partitions; ``summed``:
    the input stages have the profile (else the predictions travel as items and the
    model stage sums them)."""
    pipeline = StagedPipeline(partitions, SETTINGS, {MODEL: profile})
    if not summed:
        for intake in pipeline.intakes:
            intake.slicer.profiles = {}
    staged = Staged(pipeline)
    out = []
    for i in range(0, len(events), batch):
        out += staged.process(events[i : i + batch])
    return [d.to_dict(0) for d in out], pipeline


@pytest.mark.parametrize("scenario", ["mean_shift", "categorical", "prediction_only"])
def test_where_a_slice_was_summed_changes_no_decision(profile, scenario) -> None:
    """Summed by the input stages of 4 partitions, or by the model stage from items, in
    batches of 4,096 or 1,000: the same decisions, every field."""
    events = generate(StreamSpec(scenario=scenario, n_predictions=40_000, change_at=20_000, seed=4))
    expected, _ = _staged(events, profile, summed=False)
    got, pipeline = _staged(events, profile, summed=True)
    assert any(d["kind"] in ("data_drift", "prediction_drift") for d in expected)
    assert got == expected
    assert _staged(events, profile, summed=True, batch=1_000)[0] == expected
    assert pipeline.engine.counts["untested_slice_events"] == 0


def test_a_profiled_version_travels_as_slices_placed_where_its_events_were(profile) -> None:
    """No prediction item: one summary per slice the partition's time passed, each before
    the first item of a later slice, holding every prediction of its slice; the labels
    travel in blocks (`test_blocks`). Summary items survive the summaries topic's
    encoding."""
    events = generate(StreamSpec(n_predictions=5_000, seed=4))
    intake = Intake(SETTINGS, profiles={MODEL: profile})
    items = [
        i for b in range(0, len(events), 777) for i in intake.process(events[b : b + 777])[MODEL]
    ]
    kinds = Counter(i.kind for i in items)
    assert kinds[PREDICTION] == 0 and kinds[LABEL] == 0 and kinds[LABELS] >= 20
    summaries = [i.event for i in items if i.kind == SUMMARY]
    numbers = [s.number for s in summaries]
    assert numbers == sorted(set(numbers)) and len(numbers) >= 20
    every = SETTINGS.slice_ms
    open_slice = intake.slicer.versions[MODEL]["v1"].open
    assert open_slice is not None
    served = Counter(e.ts // every for e in events if type(e) is Prediction)
    assert {s.number: s.events for s in summaries} == {
        n: c for n, c in served.items() if n != open_slice.number
    }
    for position, item in enumerate(items):
        if item.kind == SUMMARY:
            after = [i for i in items[position + 1 :] if i.kind not in (SUMMARY, LABELS)]
            assert all(i.slot // every > item.event.number for i in after[:1])
            assert item.event.last_ts // every == item.event.number
    decoded = decode_items(orjson.loads(orjson.dumps(encode_items(items))), MODEL)
    assert [item_to_wire(i) for i in decoded] == [item_to_wire(i) for i in items]


def test_feedback_and_canary_predictions_travel_as_items(profile) -> None:
    """Predictions with feedback fields are read one by one by the loop tests; once a
    partition sees a model's canary, its stable version's predictions go as items too
    (a live canary is compared with them prediction by prediction)."""
    events = [
        e if type(e) is not Prediction or i % 3 else replace(e, segment={"region": "north"})
        for i, e in enumerate(generate(StreamSpec(n_predictions=3_000, seed=5)))
    ]
    intake = Intake(SETTINGS, profiles={MODEL: profile})
    kinds = Counter(i.kind for i in intake.process(events)[MODEL])
    segmented = sum(type(e) is Prediction and e.segment is not None for e in events)
    assert kinds[PREDICTION] == segmented > 900 and kinds[SUMMARY] > 0

    plain = [e for e in generate(StreamSpec(n_predictions=3_000, seed=6))]
    first = next(i for i, e in enumerate(plain) if type(e) is Prediction and i > 3_000)
    plain[first] = replace(plain[first], model_version="v2", role="canary")
    intake = Intake(SETTINGS, profiles={MODEL: profile})
    items = intake.process(plain)[MODEL]
    after = [i.kind for i in items if i.event.ts > plain[first].ts]
    assert SUMMARY not in after[1:] and after.count(PREDICTION) > 100


def test_a_models_traffic_is_summed_again_a_while_after_its_last_canary(profile) -> None:
    """Canary predictions for 10 s of a 60-s stream: from the first one, the model's
    predictions leave the partition as items, until ``canary_items_ms`` (15 s here) past
    the last one; then they are summed again in slices. At the default (a day) they stay
    items to the end. Its labels stay in blocks throughout. The time of the last canary
    is in the input stage's state, and a restored stage resumes on time as well."""
    events = generate(StreamSpec(n_predictions=6_000, seed=12))
    ts = sorted(e.ts for e in events if type(e) is Prediction)
    first_ts, last_ts = ts[1_500], ts[2_500]
    routed = [
        replace(e, model_version="v2", role="canary")
        if type(e) is Prediction and first_ts <= e.ts <= last_ts and int(e.request_id[-1]) == 0
        else e
        for e in events
    ]
    settings = settings_with(SETTINGS, canary_items_ms=15_000)
    resume = last_ts + settings.canary_items_ms

    def kinds(intake: Intake, stream) -> list[tuple[int, int]]:
        return [(i.kind, i.event.ts if i.kind != SUMMARY else i.event.last_ts)
                for i in intake.process(stream)[MODEL]]  # fmt: skip

    found = kinds(Intake(settings, profiles={MODEL: profile}), routed)
    during = [k for k, t in found if first_ts < t <= resume]
    after = [k for k, t in found if t > resume + settings.slice_ms]
    assert SUMMARY not in during and during.count(PREDICTION) > 1_000
    assert PREDICTION not in after and SUMMARY in after
    assert LABEL not in [k for k, _ in found] and LABELS in during and LABELS in after
    stays = kinds(Intake(SETTINGS, profiles={MODEL: profile}), routed)
    assert SUMMARY not in [k for k, t in stays if t > resume + SETTINGS.slice_ms]

    cut = next(i for i, e in enumerate(routed) if e.ts > last_ts + 1_000)
    first = Intake(settings, profiles={MODEL: profile})
    first.process(routed[:cut])
    state = orjson.loads(orjson.dumps(first.state()))
    assert state["slices"]["canary"] == [[MODEL, last_ts]]
    second = Intake(settings, profiles={MODEL: profile})
    second.restore(state)
    assert kinds(second, routed[cut:])[-50:] == found[-50:]


def test_a_restart_inside_a_slice_continues_it(profile) -> None:
    """The input stage's open slice and block of labels are in the checkpoint: a
    snapshot cut inside them and restored gives the decisions of an uninterrupted run."""
    events = generate(
        StreamSpec(scenario="mean_shift", n_predictions=40_000, change_at=20_000, seed=8)
    )
    whole = Engine(SETTINGS, {MODEL: profile})
    expected = [
        d.decision_id
        for i in range(0, len(events), 4_096)
        for d in whole.process(events[i : i + 4_096])
    ]
    assert expected
    cut = 30_001
    first = Engine(SETTINGS, {MODEL: profile})
    before = [
        d.decision_id
        for i in range(0, cut, 4_096)
        for d in first.process(events[i : min(i + 4_096, cut)])
    ]
    assert first.intake.slicer.versions[MODEL]["v1"].open.events > 0
    assert first.intake.blocks.open[MODEL].ts
    state = orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY))
    second = Engine(SETTINGS, {MODEL: profile})
    second.restore(state)
    after = [
        d.decision_id
        for i in range(cut, len(events), 4_096)
        for d in second.process(events[i : i + 4_096])
    ]
    assert before + after == expected
    judged = [e.models.monitors[MODEL]["v1"].concept.judged for e in (whole, second)]
    assert judged[0] == judged[1] > 10_000  # every label of the open block was kept


def test_slices_summed_against_another_profile_are_counted_then_summed_against_its_own(
    profile,
) -> None:
    """A profile published while a version is monitored from its warm-up, and an input
    partition that first sees the version afterwards: the model stage cannot test sums
    made against that profile; it counts their events and hands the version's own
    reference to the input stage, which sums against it from the next batch. (A
    partition that saw the version before keeps sending its predictions as items until
    the warm-up reference reaches it.)"""
    events = generate(StreamSpec(n_predictions=8_000, seed=9))
    engine = Engine(SETTINGS)
    engine.process(events[:3_000])
    engine.intake.slicer.profiles = {MODEL: profile}
    engine.process(events[3_000:4_000])
    assert engine.models.counts["untested_slice_events"] == 0
    engine.intake = Intake(SETTINGS, profiles={MODEL: profile})  # another partition's
    for start in range(4_000, len(events), 1_000):
        engine.process(events[start : start + 1_000])
    untested = engine.models.counts["untested_slice_events"]
    first_batch = sum(type(e) is Prediction for e in events[4_000:5_000])
    assert 0 < untested <= first_batch + SETTINGS.slice_ms // 10
    monitor = engine.models.monitors[MODEL]["v1"]
    summing = engine.intake.slicer.versions[MODEL]["v1"]
    assert summing is not None and summing.profile == fingerprint(monitor.profile)
    assert not monitor.profile.offline


def test_a_warmup_reference_reaches_the_input_stages_and_changes_no_decision(
    monkeypatch,
) -> None:
    """Without an offline profile, the model stage builds a version's reference from the
    first events of all partitions and hands it to every input stage, which sums the
    version's slices from then on (before, the predictions travel as items, which the model
    stage sums alike): the same decisions, every field, as input stages that never get it."""
    events = generate(
        StreamSpec(scenario="mean_shift", n_predictions=30_000, change_at=15_000, seed=12)
    )
    pipeline = StagedPipeline(4, SETTINGS)
    staged = Staged(pipeline)
    got = [
        d.to_dict(0)
        for i in range(0, len(events), 4_096)
        for d in staged.process(events[i : i + 4_096])
    ]
    learned = [intake.slicer.learned for intake in pipeline.intakes]
    assert all(f"{MODEL}@v1" in found for found in learned)
    assert all(intake.slicer.versions[MODEL]["v1"] is not None for intake in pipeline.intakes)

    monkeypatch.setattr(Slicer, "learn", lambda self, profile: None)
    staged = Staged(StagedPipeline(4, SETTINGS))
    expected = [
        d.to_dict(0)
        for i in range(0, len(events), 4_096)
        for d in staged.process(events[i : i + 4_096])
    ]
    assert any(d["kind"] == "data_drift" for d in expected)
    assert got == expected


def test_a_restart_before_the_warmup_reference_is_back_loses_no_slice() -> None:
    """An input stage restored inside a slice summed against a warm-up reference it no
    longer has sends what it had summed as it is (the model stage tests it against the
    same reference), then items until the reference is back; with the model stage
    handing it back at once (`Engine.restore`), the decisions are those of a run without
    the restart."""
    events = generate(
        StreamSpec(scenario="mean_shift", n_predictions=30_000, change_at=15_000, seed=13)
    )
    cut = 12_001
    first = Engine(SETTINGS)
    before = [
        d.decision_id
        for i in range(0, cut, 4_096)
        for d in first.process(events[i : min(i + 4_096, cut)])
    ]
    open_slice = first.intake.slicer.versions[MODEL]["v1"].open
    assert open_slice is not None and open_slice.events > 0
    state = orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY))

    alone = Intake(SETTINGS)
    alone.restore(state["intake"])
    items = alone.process(events[cut : cut + 10])[MODEL]
    assert items[0].kind == SUMMARY and items[0].event.events == open_slice.events
    assert PREDICTION in {i.kind for i in items[1:]}

    whole = Engine(SETTINGS)
    expected = [
        d.decision_id
        for i in range(0, len(events), 4_096)
        for d in whole.process(events[i : i + 4_096])
    ]
    second = Engine(SETTINGS)
    second.restore(state)
    after = [
        d.decision_id
        for i in range(cut, len(events), 4_096)
        for d in second.process(events[i : i + 4_096])
    ]
    assert any(second.intake.slicer.versions[MODEL].values())
    assert expected and before + after == expected
