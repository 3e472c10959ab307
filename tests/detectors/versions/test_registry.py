"""Version comparisons through the engine: promotions, label-free canary checks, the
label-free performance estimate against realised performance, and checkpoints."""

from __future__ import annotations

import numpy as np
import orjson

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.versions.maturity import Cohort
from driftline.detectors.versions.registry import ModelVersions
from driftline.streams.simulation.traffic import with_canary, with_promotion
from tests.conftest import run_engine


def stationary(make_stream, seed: int, n: int = 120_000, **kwargs) -> list:
    return list(
        make_stream(scenario="stationary", n_predictions=n, change_at=n, seed=seed, **kwargs)
    )


def kinds(decisions) -> list[tuple[str, str, str]]:
    return [(d.type, d.kind, d.model_version) for d in decisions]


def test_worse_promoted_version_is_rolled_back_to_the_one_it_replaced(make_stream) -> None:
    """v1 serves alone, then v2 replaces it and is 5 points worse: v1 no longer serves, so
    v2 is compared with v1's last labelled events, and rolled back to v1."""
    events = with_promotion(stationary(make_stream, 91), at=60_000, flip=0.12, seed=91)
    decisions = run_engine(events, engine=Engine())
    rollbacks = [d for d in decisions if d.type == "rollback"]
    assert [(d.kind, d.from_version, d.to_version) for d in rollbacks] == [
        ("promotion_regression", "v2", "v1")
    ]
    evidence = rollbacks[0].evidence
    assert evidence["baseline"]["events"] >= DetectorSettings().promotion_baseline_labels
    assert evidence["confidence_interval"][0] > 0
    print(f"promotion rolled back after {evidence['candidate']['events']} labelled events")


def test_equal_promoted_version_is_left_alone(make_stream) -> None:
    """The same scores under a new version number: no rollback, and no drift either (the
    new version warms up its own reference)."""
    events = with_promotion(stationary(make_stream, 92), at=60_000, flip=0.0, seed=92)
    engine = Engine()
    assert run_engine(events, engine=engine) == []
    registry = engine.versions["credit-risk"]
    assert registry.stable() == "v2"
    assert "v2" in registry.promotions


def test_worse_promoted_version_with_old_one_shadowing_is_rolled_back(make_stream) -> None:
    """After the promotion v1 keeps scoring the same requests as a shadow: the paired
    comparison finds v1 better and rolls v2 back to it."""
    events = with_promotion(
        stationary(make_stream, 93, n=80_000), at=30_000, flip=0.12, seed=93, shadow_old=True
    )
    decisions = run_engine(events, engine=Engine())
    rollbacks = [(d.kind, d.from_version, d.to_version) for d in decisions if d.type == "rollback"]
    assert rollbacks[0] == ("promotion_regression", "v2", "v1")
    assert len(rollbacks) <= 2  # at most once per comparison (history and paired)
    assert len(set(rollbacks)) == 1


def test_unconfident_canary_is_flagged_before_any_label(make_stream) -> None:
    """No outcomes at all: a canary whose scores are pulled towards 0.5 estimates more
    errors from its own scores than stable does, and is flagged from predictions alone."""
    events = with_canary(
        stationary(make_stream, 94, n=60_000, label_rate=0.0), 0.10, 0.0, 94, shrink=0.5
    )
    decisions = run_engine(events, engine=Engine())
    flagged = [d for d in decisions if d.kind == "canary_regression"]
    assert [(d.type, d.detector["config"]["metric"]) for d in flagged] == [
        ("alert", "estimated_error")
    ]
    assert flagged[0].evidence["labels_pending"] is True
    assert flagged[0].from_version is None


def test_canary_with_missing_inputs_is_flagged(make_stream) -> None:
    """A canary whose feature pipeline loses 5 % of its inputs raises a data-quality alert
    against stable on the same period."""
    events = with_canary(stationary(make_stream, 95, n=60_000), 0.10, 0.0, 95, missing=0.05)
    decisions = run_engine(events, engine=Engine())
    metrics = [d.detector["config"]["metric"] for d in decisions if d.kind == "canary_regression"]
    assert metrics == ["missing_rate"]


def test_canary_with_later_outcomes_is_flagged(make_stream) -> None:
    """A canary whose outcomes are observed a minute later than stable's."""
    events = with_canary(
        stationary(make_stream, 96, n=60_000), 0.10, 0.0, 96, outcome_delay_ms=60_000
    )
    decisions = run_engine(events, engine=Engine())
    metrics = [d.detector["config"]["metric"] for d in decisions if d.kind == "canary_regression"]
    assert metrics == ["outcome_latency"]


def test_equal_canary_raises_nothing_on_any_metric(make_stream) -> None:
    """An equal canary on 10 % of traffic: no rollback, no alert on any canary metric, no
    estimate gap (the simulated scores are calibrated), on five seeds."""
    for seed in range(5):
        events = with_canary(stationary(make_stream, 300 + seed, n=60_000), 0.10, 0.0, seed)
        assert run_engine(events, engine=Engine()) == [], seed


def test_miscalibrated_canary_shows_a_gap_between_estimate_and_outcomes(make_stream) -> None:
    """The 5-point-worse canary inverts scores, which its own scores cannot know: the
    realised error rate exceeds the label-free estimate and that gap is reported."""
    events = with_canary(stationary(make_stream, 97, n=200_000), 0.10, 0.12, 97)
    decisions = run_engine(events, engine=Engine())
    gaps = [d for d in decisions if d.kind == "performance_estimate_gap"]
    assert [d.model_version for d in gaps] == ["v2"]
    assert gaps[0].evidence["value"] > DetectorSettings().estimate_gap_margin


def test_version_state_survives_a_checkpoint(make_stream) -> None:
    """Stopping after part of a canary stream and restoring the engine from its state gives
    the same decisions as one uninterrupted run."""
    events = with_canary(stationary(make_stream, 71), 0.10, 0.12, 71)
    whole = run_engine(events, engine=Engine())
    cut = 12_000
    first = Engine()
    before = run_engine(events[:cut], engine=first)
    second = Engine()
    second.restore(first.state())
    after = run_engine(events[cut:], engine=second)
    assert not any(d.type == "rollback" for d in before)
    assert any(d.type == "rollback" for d in after)
    assert [d.decision_id for d in before + after] == [d.decision_id for d in whole]


def test_stable_version_follows_recent_traffic() -> None:
    """After a switch the new champion becomes stable within a few half-lives, although
    the old one served more in total."""
    hour = 3_600_000
    registry = ModelVersions("m", DetectorSettings())
    registry.observe("v1", "champion", np.arange(0, 10 * hour, 1_000, dtype=np.int64))
    registry.note_promotion()
    assert registry.stable() == "v1"
    registry.observe("v2", "champion", np.arange(10 * hour, 16 * hour, 10_000, dtype=np.int64))
    registry.note_promotion()
    assert registry.versions["v1"].events > registry.versions["v2"].events
    assert registry.stable() == "v2"
    assert registry.promotions["v2"][0] == "v1"


def test_a_canary_reads_a_restored_cohort_without_its_extra_sums() -> None:
    """Summed labels held in a checkpoint from before cohorts kept Brier and delay sums:
    a live canary's comparison reads their error rate alone, without failing."""
    registry = ModelVersions("m", DetectorSettings())
    registry.observe("v1", "champion", np.arange(0, 600_000, 1_000, dtype=np.int64))
    registry.observe("v2", "canary", np.arange(0, 600_000, 10_000, dtype=np.int64))
    registry.note_promotion()
    assert registry.live_canaries() == ["v2"]
    for version in ("v1", "v2"):
        assert registry.read_label_sums(version, Cohort(300, 60.0, 60.0, [5, 9, "o"]), True) == []
    comparisons = registry.canaries["v2"][1]
    assert list(comparisons["error_rate"].n) == [300, 300]
    assert list(comparisons["brier_score"].n) == [0, 0]


def _outcome_ordered_stream(
    seed: int,
    days: int = 3,
    scores: tuple[float, float] = (0.05, 0.3),
    canary_from_hour: float | None = None,
    canary_flip: float = 0.0,
    rise: tuple[float, float] | None = None,
) -> list:
    """A calibrated scorer (the score is the chance of a positive) whose negative labels
    arrive 1-6 hours after the prediction and positive ones a day later (repayments
    before defaults). From ``canary_from_hour`` on, a fifth of the traffic goes to a
    canary v2 that inverts a ``canary_flip`` share of its scores."""
    from driftline.schemas.records import Outcome, Prediction  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    hour = 3_600_000
    t0 = 1_767_225_600_000
    rows = []
    for i in range(days * 24 * 300):
        ts = t0 + i * 12_000
        p = float(rng.uniform(*scores))
        shifted = rise is not None and ts >= t0 + rise[0] * hour
        positive = bool(rng.uniform() < p + (rise[1] if shifted and rise else 0.0))
        delay = int((25 if positive else 1) * hour + rng.integers(0, 5 * hour))
        version, role, score = "v1", "champion", p
        canary_live = canary_from_hour is not None and ts >= t0 + canary_from_hour * hour
        if canary_live and rng.uniform() < 0.2:
            version, role = "v2", "canary"
            score = 1.0 - p if rng.uniform() < canary_flip else p
        rows.append(Prediction(f"p{i}", f"r{i}", "lender", version, ts, {"x": p}, score, role=role))
        rows.append(Outcome(f"o{i}", f"r{i}", "lender", ts + delay, int(positive)))
    return sorted(rows, key=lambda e: e.ts)


def test_outcome_dependent_label_delays_give_no_false_estimate_gap() -> None:
    """Positive labels a day after the negatives: compared on matured cohorts, a
    calibrated model shows no performance_estimate_gap; compared as labels arrive
    (label_maturity_quantile = 0), the early labels are mostly negatives and the same
    model is reported as making fewer errors than its scores say."""
    events = _outcome_ordered_stream(5)
    matured = run_engine(events, engine=Engine())
    assert [d for d in matured if d.kind == "performance_estimate_gap"] == []
    eager = run_engine(events, engine=Engine(DetectorSettings(label_maturity_quantile=0)))
    gaps = [d for d in eager if d.kind == "performance_estimate_gap"]
    assert [d.evidence["value"] < 0 for d in gaps] == [True]


def test_an_equal_canary_is_not_rolled_back_when_labels_come_in_outcome_order() -> None:
    """A canary equal to the stable version starts a day in, while the positives' labels
    come a day after the negatives' and the model errs on the negatives: its first labels
    are nearly all negatives, all errors. On matured cohorts it is neither rolled back nor
    reported (three seeds); compared as labels arrive (label_maturity_quantile = 0) the
    same canary is rolled back, so the test can tell."""
    for seed in range(3):
        events = _outcome_ordered_stream(seed, 4, (0.55, 0.95), canary_from_hour=24)
        found = run_engine(events, engine=Engine())
        assert [(d.type, d.kind) for d in found if d.model_version == "v2"] == [], seed
    eager = run_engine(events, engine=Engine(DetectorSettings(label_maturity_quantile=0)))
    assert ("rollback", "canary_regression") in {(d.type, d.kind) for d in eager}


def test_a_worse_canary_is_rolled_back_on_matured_labels_and_says_so() -> None:
    """The same world with a canary that inverts 30 % of its scores: rolled back once its
    first cohorts are in (the horizon is about a day and a quarter; twice that must have
    been watched before it is trusted), with the maturity in the evidence."""
    events = _outcome_ordered_stream(7, 5, (0.55, 0.95), canary_from_hour=24, canary_flip=0.3)
    rollbacks = [d for d in run_engine(events, engine=Engine()) if d.type == "rollback"]
    assert [(d.kind, d.model_version) for d in rollbacks] == [("canary_regression", "v2")]
    # The two rollback metrics share rollback_alpha: the interval is at half of it each.
    alpha = DetectorSettings().rollback_alpha / 2
    assert rollbacks[0].detector["config"]["alpha"] == alpha
    assert rollbacks[0].evidence["confidence"] == 1 - alpha
    maturity = rollbacks[0].evidence["label_maturity"]
    assert maturity["outcome_dependent_delays"] is True
    assert 24 * 3600 < maturity["horizon_s"] < 36 * 3600


def test_labels_whose_delays_do_not_depend_on_the_outcome_are_compared_at_once(
    make_stream,
) -> None:
    """Delays independent of the outcome (the simulator's, 500-5,000 events late): the
    horizon is 0, no label is held, and a 5-point-worse canary is rolled back exactly
    where comparing labels as they arrive does (same decision, same event)."""
    events = with_canary(stationary(make_stream, 97, n=120_000), 0.10, 0.12, 97)
    engine = Engine()
    matured = [d for d in run_engine(events, engine=engine) if d.type == "rollback"]
    eager = run_engine(events, engine=Engine(DetectorSettings(label_maturity_quantile=0)))
    eager = [d for d in eager if d.type == "rollback"]
    assert matured and [(d.decision_id, d.seq) for d in matured] == [
        (d.decision_id, d.seq) for d in eager
    ]
    registry = engine.versions[matured[0].model_id]
    assert registry.maturity.horizon_ms() == 0.0 and registry.held.held is None


def test_labels_waiting_for_their_minute_are_counted(make_stream) -> None:
    """`labels_held` (the worker's ``driftline_labels_held``, replay's "labels still
    maturing") counts the labelled rows a model holds for their minute: up to the bound
    (and what came since the model's last step), some at the end of a stream whose
    defaults come a day after its repayments, the same after a checkpoint, and none
    where delays do not depend on the outcome."""
    events = _outcome_ordered_stream(5)
    settings = DetectorSettings(label_maturity_max_held=5_000)
    engine = Engine(settings)
    counted = []
    for i in range(0, len(events), 4_096):
        engine.process(events[i : i + 4_096])
        registry = engine.versions["lender"]
        assert engine.models.labels_held == registry.labels_held == registry.held.count
        counted.append(registry.labels_held)
    # The bound is applied at the model's steps: between two, what came since is added.
    bound = settings.label_maturity_max_held
    assert bound <= max(counted) < 1.1 * bound and counted[-1] > 0
    restored = Engine(settings)
    restored.restore(orjson.loads(orjson.dumps(engine.state(), option=orjson.OPT_SERIALIZE_NUMPY)))
    assert restored.models.labels_held == counted[-1]

    simulated = Engine()
    run_engine(stationary(make_stream, 97, n=20_000), engine=simulated)
    assert simulated.models.labels_held == 0


def test_a_retrained_model_with_the_same_miscalibration_gets_one_gap_alert() -> None:
    """Eight daily versions whose scores all say 30 % where 10 % of loans default: the
    first version's gap is reported, its successors' identical gaps are not."""
    from msgspec.structs import replace  # noqa: PLC0415

    from driftline.schemas.records import Prediction  # noqa: PLC0415
    from driftline.streams.simulation.loops import simulate  # noqa: PLC0415

    events = [
        replace(e, prediction=0.3) if type(e) is Prediction else e
        for e in simulate("daily_credit_loop", 1)
    ]
    gaps = [d for d in run_engine(events) if d.kind == "performance_estimate_gap"]
    assert [(d.model_version, d.evidence["value"] < 0) for d in gaps] == [("v1", True)]


def test_held_labels_are_released_alike_whatever_the_batches() -> None:
    """Labels held for their cohort are released at the model's steps, not at the end of
    a batch: in batches of 1,000 and 7,777 the rollback and everything it reports (its
    trigger, the canary's traffic share, the label maturity) are the same."""
    events = _outcome_ordered_stream(7, 5, (0.55, 0.95), canary_from_hour=24, canary_flip=0.3)
    small = [d.to_dict(0) for d in run_engine(events, batch=1_000)]
    assert ("rollback", "canary_regression") in {(d["type"], d["kind"]) for d in small}
    assert [d.to_dict(0) for d in run_engine(events, batch=7_777)] == small


def test_held_labels_survive_a_json_checkpoint() -> None:
    """Stopping while thousands of labels wait for their cohort, and restoring from the
    state as the worker writes it (JSON, NaN as null): the same decisions as one run."""
    events = _outcome_ordered_stream(7, 5, (0.55, 0.95), canary_from_hour=24, canary_flip=0.3)
    whole = run_engine(events, engine=Engine())
    first = Engine()
    before = run_engine(events[: len(events) // 3], engine=first)
    assert first.versions["lender"].held.held is not None
    second = Engine()
    second.restore(orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY)))
    after = run_engine(events[len(events) // 3 :], engine=second)
    assert [d.decision_id for d in before + after] == [d.decision_id for d in whole]
    assert any(d.type == "rollback" for d in after)


def test_the_concept_monitor_waits_for_matured_labels_too() -> None:
    """A model that starts with the stream, labels in outcome order (its errors are the
    late outcome's): learning its warm-up error rate from the early labels alone, it took
    the late outcome's arrival for concept drift (alert and retrain on every seed). On
    matured cohorts nothing is raised; comparing at once (label_maturity_quantile = 0)
    shows the false concept drift, so the test can tell."""
    for seed in range(2):
        found = run_engine(_outcome_ordered_stream(seed, 4), engine=Engine())
        assert found == [], (seed, [(d.type, d.kind) for d in found])
    eager = run_engine(
        _outcome_ordered_stream(0, 4), engine=Engine(DetectorSettings(label_maturity_quantile=0))
    )
    assert ("retrain", "concept_drift") in {(d.type, d.kind) for d in eager}


def test_a_real_concept_change_is_found_once_its_late_labels_are_in() -> None:
    """The same world with the chance of a positive 10 points above the scores from hour
    72: on matured cohorts, concept drift is raised once (alert and retrain), after the
    change and within 36 hours of it (the evidence is in the late outcome's labels, which
    come 25-30 hours after their predictions), and nothing before it."""
    hour = 3_600_000
    change = 1_767_225_600_000 + 72 * hour
    found = run_engine(_outcome_ordered_stream(0, 6, rise=(72, 0.1)), engine=Engine())
    concept = [d for d in found if d.kind == "concept_drift"]
    assert [d.type for d in concept] == ["alert", "retrain"]
    assert change < concept[0].ts < change + 36 * hour
    assert concept[0].evidence["label_maturity"]["outcome_dependent_delays"] is True
    assert all(d.ts > change for d in found)
