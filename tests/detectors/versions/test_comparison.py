"""Anytime-valid version comparisons on seeded simulations."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from driftline.detectors.versions.comparison import MeanComparison, PairedComparison

SEEDS = range(10)
BATCH = 65_536


def canary_run(
    seed: int, canary_rate: float, stable_rate: float, events: int, share: float = 0.10
) -> tuple[MeanComparison, object]:
    rng = np.random.default_rng(seed)
    comparison = MeanComparison(tau=0.05, alpha=0.001, margin=0.0, min_each=200)
    for start in range(0, events, BATCH):
        n = min(BATCH, events - start)
        is_canary = rng.uniform(size=n) < share
        error = rng.uniform(size=n) < np.where(is_canary, canary_rate, stable_rate)
        verdict = comparison.update(is_canary, error)
        if verdict is not None:
            return comparison, verdict
    return comparison, None


def test_canary_five_points_worse_on_ten_percent_is_caught() -> None:
    """A canary with a 5-point higher error rate on 10 % of traffic is found on every seed,
    with a median under 5,000 labelled canary events, and the interval covers the truth."""
    found = []
    for seed in SEEDS:
        _, verdict = canary_run(seed, 0.25, 0.20, 400_000)
        assert verdict is not None, seed
        assert verdict.lower > 0
        assert verdict.lower <= 0.05 <= verdict.upper
        found.append(verdict.candidate_n)
    print(f"labelled canary events at rollback: {sorted(found)}")
    assert statistics.median(found) <= 5_000


@pytest.mark.slow
def test_equal_canary_is_never_called_worse_over_a_million_events() -> None:
    """Equal error rates: no verdict in 1,000,000 labelled events, on any of 10 seeds."""
    for seed in SEEDS:
        comparison, verdict = canary_run(100 + seed, 0.20, 0.20, 1_000_000)
        assert verdict is None, (seed, verdict)
        assert comparison.n.sum() == 1_000_000


def paired_run(seed: int, champion: float, challenger: float, pairs: int):
    """Correlated correctness on the same requests: both right on easy requests."""
    rng = np.random.default_rng(seed)
    comparison = PairedComparison(alpha=0.001, prior=20.0, min_discordant=50)
    for start in range(0, pairs, BATCH):
        n = min(BATCH, pairs - start)
        shared = rng.uniform(size=n)
        own = np.where(rng.uniform(size=n) < 0.7, shared, rng.uniform(size=n))
        verdict = comparison.update(own < challenger, shared < champion)
        if verdict is not None:
            return comparison, verdict
    return comparison, None


def test_better_challenger_is_reported_on_every_seed() -> None:
    """A challenger 3 points more accurate on the same requests is found, in its favour."""
    for seed in SEEDS:
        _, verdict = paired_run(seed, 0.80, 0.83, 200_000)
        assert verdict is not None and verdict.candidate_better, seed
        assert 0.05 < verdict.disagreement_rate < 0.5


@pytest.mark.slow
def test_equal_challenger_is_never_reported_over_a_million_pairs() -> None:
    """Equal accuracy: no verdict in 1,000,000 pairs, on any of 10 seeds."""
    for seed in SEEDS:
        comparison, verdict = paired_run(200 + seed, 0.80, 0.80, 1_000_000)
        assert verdict is None, (seed, verdict)
        assert comparison.pairs == 1_000_000


def test_state_round_trip_continues_exactly() -> None:
    """Counts restored from state continue as if never interrupted."""
    rng = np.random.default_rng(5)
    side = rng.uniform(size=20_000) < 0.1
    err = rng.uniform(size=20_000) < 0.2
    whole = MeanComparison(0.05, 0.001, 0.0, 200)
    whole.update(side, err)
    first = MeanComparison(0.05, 0.001, 0.0, 200)
    first.update(side[:7_000], err[:7_000])
    second = MeanComparison(0.05, 0.001, 0.0, 200)
    second.restore(first.state())
    second.update(side[7_000:], err[7_000:])
    assert second.state() == whole.state()


def canary_stream(make_stream, seed: int, flip: float, n: int = 120_000):
    """A stable champion v1 with a canary v2 on 10 % of requests."""
    from driftline.streams.simulation.traffic import with_canary  # noqa: PLC0415

    events = list(make_stream(scenario="stationary", n_predictions=n, change_at=n, seed=seed))
    return with_canary(events, 0.10, flip, seed)


def test_worse_canary_is_rolled_back_through_the_engine(make_stream) -> None:
    """Through the engine: a canary 5 points worse gets one rollback decision, back to the
    stable version, with the interval and the canary's traffic share as evidence."""
    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from tests.conftest import run_engine  # noqa: PLC0415

    decisions = run_engine(canary_stream(make_stream, 71, 0.12), engine=Engine())
    rollbacks = [d for d in decisions if d.type == "rollback"]
    assert len(rollbacks) == 1
    r = rollbacks[0]
    assert (r.kind, r.from_version, r.to_version, r.severity) == (
        "canary_regression",
        "v2",
        "v1",
        "critical",
    )
    low, high = r.evidence["confidence_interval"]
    assert 0 < low < high
    assert 0.05 < r.impact["traffic_share"] < 0.15
    print(f"rolled back after {r.evidence['candidate']['events']} labelled canary events")


def test_equal_canary_is_not_rolled_back_through_the_engine(make_stream) -> None:
    """Through the engine: an equal canary raises no rollback (and no drift)."""
    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from tests.conftest import run_engine  # noqa: PLC0415

    decisions = run_engine(canary_stream(make_stream, 72, 0.0), engine=Engine())
    assert [d for d in decisions if d.type == "rollback"] == []


def challenger_stream(make_stream, seed: int, champion_flip: float, n: int = 60_000):
    """Every request scored by champion v1 and challenger v2 (same request_id); the
    champion flips a share of its scores, the challenger serves the true scores."""
    from driftline.schemas.records import Prediction  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    out = []
    for event in make_stream(scenario="stationary", n_predictions=n, change_at=n, seed=seed):
        if isinstance(event, Prediction):
            flipped = rng.uniform() < champion_flip
            champion_score = 1.0 - event.prediction if flipped else event.prediction
            out.append(
                Prediction(
                    event.event_id,
                    event.request_id,
                    event.model_id,
                    "v1",
                    event.ts,
                    event.features,
                    champion_score,
                )
            )
            out.append(
                Prediction(
                    f"{event.event_id}-c",
                    event.request_id,
                    event.model_id,
                    "v2",
                    event.ts,
                    event.features,
                    event.prediction,
                    role="challenger",
                )
            )
        else:
            out.append(event)
    return out


def test_better_challenger_is_reported_through_the_engine(make_stream) -> None:
    """Champion and challenger on the same requests: the better challenger gets one
    challenger_better alert with the paired evidence."""
    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from tests.conftest import run_engine  # noqa: PLC0415

    decisions = run_engine(challenger_stream(make_stream, 81, 0.12), engine=Engine())
    better = [d for d in decisions if d.kind == "challenger_better"]
    assert [(d.type, d.model_version, d.severity) for d in better] == [("alert", "v2", "info")]
    evidence = better[0].evidence
    assert evidence["candidate_only_right"] > evidence["champion_only_right"]
    assert evidence["value"] >= evidence["threshold"]


def test_equal_challenger_is_not_reported_through_the_engine(make_stream) -> None:
    """Same scores from both versions: pairs are fed and none is discordant, so no alert."""
    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from tests.conftest import run_engine  # noqa: PLC0415

    engine = Engine()
    decisions = run_engine(challenger_stream(make_stream, 82, 0.0), engine=engine)
    assert [d for d in decisions if d.kind == "challenger_better"] == []
    paired = engine.versions["credit-risk"].challengers["v2"][1]
    assert paired.pairs > 10_000
    assert paired.candidate_only == paired.baseline_only == 0
