"""Unbounded cardinality: a new model id, version, segment value, category and feature
name on every event. State stays within its settings, evictions are counted, and the
checkpoint stops growing once the bounds are reached."""

from __future__ import annotations

from dataclasses import replace

import orjson

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.simulation.traffic import hostile as simulate_hostile

T0 = 1_700_000_000_000
BOUNDS = DetectorSettings(
    warmup_events=100,
    window_events=100,
    max_models=50,
    max_versions_per_model=4,
    max_monitored_features=30,
    feedback_max_tags=20,
)


def hostile(n: int, *, one_model: bool = False) -> list[Prediction | Outcome]:
    """Predictions (each with its outcome) where every id and value is new."""
    return list(simulate_hostile(n, one_model=one_model, t0=T0))  # type: ignore[arg-type]


def run(engine: Engine, events: list, batch: int = 1_000) -> list[int]:
    """Feed ``events``; returns the checkpoint size after each quarter."""
    sizes = []
    quarter = len(events) // 4
    for i in range(0, len(events), batch):
        engine.process(events[i : i + batch])
        if (i + batch) % quarter == 0:
            sizes.append(len(orjson.dumps(engine.state(), option=orjson.OPT_SERIALIZE_NUMPY)))
    return sizes


def test_a_new_model_id_per_event_keeps_the_state_flat() -> None:
    """20,000 distinct models: exactly max_models have state, every other one is
    counted as evicted, and the checkpoint is flat over the last quarters
    (apart from the bounded join and dedupe memories)."""
    engine = Engine(replace(BOUNDS, join_memory=1_000, dedupe_horizon=2_000))
    sizes = run(engine, hostile(20_000))
    assert len(engine.monitors) == len(engine.versions) == len(engine.recent_models) == 50
    assert len(engine.loops) <= 50
    assert engine.counts["evicted_models"] == 20_000 - 50
    assert sizes[3] <= sizes[2] * 1.02, sizes


def test_one_model_with_new_versions_segments_categories_and_features() -> None:
    """One model: versions, feedback tags, monitored features and categories stay at
    their bounds whatever the stream carries."""
    engine = Engine(replace(BOUNDS, join_memory=1_000, dedupe_horizon=2_000))
    sizes = run(engine, hostile(20_000, one_model=True))
    assert len(engine.monitors["m"]) == BOUNDS.max_versions_per_model
    # A version evicted within a batch and labelled later in it is counted again.
    assert engine.counts["evicted_versions"] >= 20_000 - BOUNDS.max_versions_per_model
    assert len(engine.loops["m"].registry.tags) <= BOUNDS.feedback_max_tags + 4
    assert sizes[3] <= sizes[2] * 1.02, sizes


def test_the_warm_up_keeps_the_most_frequent_feature_names() -> None:
    """A version whose warm-up saw 100 distinct names gets a reference for the 30 most
    frequent ones only."""
    settings = replace(BOUNDS, max_monitored_features=3)
    events = [
        Prediction(
            event_id=f"p{i}",
            request_id=f"r{i}",
            model_id="m",
            model_version="v1",
            ts=T0 + i,
            features={"a": float(i), "b": float(i % 7), "c": f"k{i % 3}", f"rare{i}": 1.0},
            prediction=0.5,
        )
        for i in range(300)
    ]
    engine = Engine(settings)
    engine.process(events)
    profile = engine.monitors["m"]["v1"].profile
    assert profile is not None
    assert sorted([*profile.numeric, *profile.categorical]) == ["a", "b", "c"]
