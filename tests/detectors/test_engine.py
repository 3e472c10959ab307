"""Engine invariants: batching does not matter, state round-trips exactly, nothing is lost."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from msgspec import structs

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.simulation.traffic import with_canary, with_promotion
from tests.conftest import run_engine
from tests.detectors.versions.test_registry import stationary

SMALL = DetectorSettings(warmup_events=2_000, window_events=2_000, label_warmup_events=1_000)


def ids(decisions):
    return [d.decision_id for d in decisions]


def whole(decisions):
    """Decisions as published, every field."""
    return [d.to_dict(0) for d in decisions]


@pytest.mark.parametrize("slice_ms", [0, 3_000])
def test_batch_boundaries_do_not_change_decisions(make_stream, slice_ms) -> None:
    """The same stream in batches of 1,000, 4,096 or 7,777 gives identical decisions,
    every field (a drift's onset is dated from the event its test's run started at, which
    may lie batches back), tested per event or per slice of event time (a slice's sums
    carried across batches)."""
    events = make_stream(scenario="mean_shift", n_predictions=40_000, change_at=20_000, seed=4)
    settings = replace(SMALL, slice_ms=slice_ms)
    reference = whole(run_engine(events, settings, batch=4_096))
    assert reference
    assert whole(run_engine(events, settings, batch=1_000)) == reference
    assert whole(run_engine(events, settings, batch=7_777)) == reference


def test_batch_boundaries_do_not_change_what_decisions_say(make_stream) -> None:
    """Every field of every decision, not only which ones: a canary's traffic share, the
    label maturity, where the estimate-gap and promotion comparisons cross (read at the
    model's steps, not at the end of a batch), in batches of 2,500 and 7,777."""
    canary = with_canary(stationary(make_stream, 2_000, 60_000), 0.10, 0.12, 0)
    promotion = with_promotion(stationary(make_stream, 3_000, 60_000), 25_000, 0.12, 0)
    concept = make_stream(scenario="concept", n_predictions=40_000, change_at=20_000, seed=10)
    for events, expected in (
        (canary, {"canary_regression"}),
        (promotion, {"promotion_regression", "performance_estimate_gap"}),
        (concept, {"concept_drift", "performance_estimate_gap"}),
    ):
        reference = whole(run_engine(events, batch=2_500))
        assert {d["kind"] for d in reference} >= expected
        assert whole(run_engine(events, batch=7_777)) == reference


@pytest.mark.parametrize("slice_ms", [0, 3_000])
def test_state_snapshot_restores_exactly(make_stream, slice_ms) -> None:
    """Snapshot mid-stream, serialise to JSON, restore in a fresh engine: the decisions
    after the snapshot are those of an uninterrupted run (with slices, the snapshot falls
    inside one, and what it had summed is restored)."""
    events = make_stream(scenario="categorical", n_predictions=40_000, change_at=25_000, seed=5)
    settings = replace(SMALL, slice_ms=slice_ms)
    whole = Engine(settings)
    uninterrupted = run_engine(events, engine=whole)
    assert uninterrupted
    cut = 30_001
    first = Engine(settings)
    before = run_engine(events[:cut], engine=first)
    if slice_ms:
        assert any(m.numeric.open.events for m in first.models.monitors["credit-risk"].values())
    state = orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY))
    second = Engine(settings)
    second.restore(state)
    after = run_engine(events[cut:], engine=second)
    assert ids(before + after) == ids(uninterrupted)
    assert second.counts == whole.counts
    assert second.join.counts == whole.join.counts


def test_duplicates_are_dropped_and_counted() -> None:
    """A repeated event_id is counted as a duplicate and not processed twice."""
    p = Prediction("e1", "r1", "m", "v1", 1_700_000_000_000, {"a": 1.0}, 0.5)
    o = Outcome("o1", "r1", "m", 1_700_000_000_100, 1)
    engine = Engine(SMALL)
    engine.process([p, p, o])
    engine.process([o])
    assert engine.counts == {
        "events": 4,
        "predictions": 1,
        "outcomes": 1,
        "duplicates": 2,
        "evicted_versions": 0,
        "evicted_models": 0,
        "untested_slice_events": 0,
    }
    assert engine.join.counts["joined"] == 1


def test_join_counts_late_orphan_and_duplicate_outcomes() -> None:
    """Outcomes are joined in either order; late, orphaned and repeated ones are counted."""
    settings = DetectorSettings(join_ttl_ms=1_000)
    engine = Engine(settings)
    t = 1_700_000_000_000

    def pred(i: int, ts: int) -> Prediction:
        return Prediction(f"p{i}", f"r{i}", "m", "v1", ts, {"a": float(i)}, 0.5)

    def out(i: int, ts: int, suffix: str = "") -> Outcome:
        return Outcome(f"o{i}{suffix}", f"r{i}", "m", ts, 1)

    engine.process(
        [
            out(1, t),  # arrives before its prediction
            pred(1, t + 10),  # joins with it
            pred(2, t + 20),
            out(2, t + 30),  # joins
            out(2, t + 40, "b"),  # second outcome for r2: duplicate
            pred(3, t + 50),
            out(9, t + 60),  # never gets a prediction: orphan once expired
            pred(4, t + 5_000),  # advances event time: p3 expires, o9 expires
            out(3, t + 5_010),  # its prediction expired: late
        ]
    )
    counts = engine.join.counts
    assert (
        counts["joined"],
        counts["duplicate"],
        counts["late"],
        counts["orphaned"],
        counts["expired_unlabelled"],
    ) == (2, 1, 1, 1, 1)


def test_join_buffer_is_bounded() -> None:
    """More waiting predictions than join_max_pending: the oldest expire, memory stays bounded."""
    engine = Engine(DetectorSettings(join_max_pending=100))
    events = [
        Prediction(f"p{i}", f"r{i}", "m", "v1", 1_700_000_000_000 + i, {"a": float(i)}, 0.5)
        for i in range(1_000)
    ]
    engine.process(events)
    assert engine.join.size == 100
    assert engine.join.counts["expired_unlabelled"] == 900


def test_versions_are_monitored_separately_and_bounded() -> None:
    """Each version gets its own monitor; beyond max_versions_per_model the least recent goes."""
    engine = Engine(DetectorSettings(max_versions_per_model=2))
    for v in ("v1", "v2", "v3"):
        engine.process([Prediction(f"{v}-e", f"{v}-r", "m", v, 1_700_000_000_000, {"a": 1.0}, 0.5)])
    assert list(engine.monitors["m"]) == ["v2", "v3"]
    assert engine.counts["evicted_versions"] == 1


def test_new_version_starts_its_own_reference(make_stream) -> None:
    """A version change alone raises no drift: the new version warms up its own reference."""
    events = list(
        make_stream(scenario="stationary", n_predictions=30_000, change_at=30_000, seed=6)
    )
    switched = [
        Prediction(
            e.event_id,
            e.request_id,
            e.model_id,
            "v2",
            e.ts,
            e.features,
            min(e.prediction * 1.5, 1.0),
        )
        if isinstance(e, Prediction) and i > len(events) // 2
        else e
        for i, e in enumerate(events)
    ]
    decisions = run_engine(switched, SMALL)
    # v2 serves scores 1.5 times too high: its own scores overstate how often it is right
    # (the label-free estimate disagrees with the outcomes), and that alone is reported.
    assert [(d.kind, d.model_version) for d in decisions] == [("performance_estimate_gap", "v2")]
    # A model whose scores are not probabilities (say allocation shares) is not told that
    # its scores are miscalibrated; other models keep the check.
    not_scores = replace(SMALL, scores_are_probabilities=False)
    model = switched[0].model_id
    assert run_engine(switched, engine=Engine(SMALL, model_settings={model: not_scores})) == []
    renamed = [structs.replace(e, model_id="other") for e in switched]
    other = run_engine(renamed, engine=Engine(SMALL, model_settings={model: not_scores}))
    assert [(d.kind, d.model_version) for d in other] == [("performance_estimate_gap", "v2")]


def test_checkpoints_from_before_versions_and_feedback_still_restore(make_stream) -> None:
    """A one-stage state without the version registry, the feedback monitors and join tags
    (as an older release wrote it) restores, and processing continues."""
    events = list(
        make_stream(scenario="stationary", n_predictions=20_000, change_at=20_000, seed=8)
    )
    engine = Engine(SMALL)
    run_engine(events[:10_000], engine=engine)
    new = engine.state()
    state = {**new["models"], "seen": new["intake"]["seen"], "join": new["intake"]["join"]}
    state["counts"] = {**new["intake"]["counts"], **state["counts"]}
    del state["versions"], state["feedback"]
    state["join"]["predictions"] = [
        (rid, [entry[:4] for entry in entries]) for rid, entries in state["join"]["predictions"]
    ]
    restored = Engine(SMALL)
    restored.restore(state)
    assert run_engine(events[10_000:], engine=restored) == []
    assert restored.join.counts["joined"] > engine.join.counts["joined"]
