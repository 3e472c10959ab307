"""Feedback-loop detection on seeded simulations with matched controls."""

from __future__ import annotations

import statistics

import pytest
from msgspec.structs import replace

from driftline.detectors.engine import Engine
from driftline.detectors.feedback.monitor import action_taken, feedback_tag
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Prediction
from driftline.streams.simulation.loops import HOUR_MS, TS0_MS, simulate
from tests.conftest import run_engine

SEEDS = range(10)
LOOPS = ["policing_loop", "recommender_loop", "credit_loop"]
CONTROLS = [
    "policing_control",
    "policing_exogenous",
    "recommender_control",
    "recommender_exogenous",
    "credit_all_labels",
    "credit_frozen",
]


def loops_found(events, engine: Engine | None = None) -> list:
    found = run_engine(events, engine=engine or Engine())
    return [d for d in found if d.kind == "feedback_loop"]


@pytest.mark.parametrize("name", LOOPS)
def test_every_loop_is_flagged_on_every_seed(name: str) -> None:
    """Each loop simulation gets exactly one feedback_loop alert on each of 10 seeds."""
    delays = []
    for seed in SEEDS:
        events = simulate(name, seed)
        found = loops_found(events)
        assert [d.type for d in found] == ["alert"], (name, seed)
        bucket = (found[0].ts - TS0_MS) // HOUR_MS
        served = sum(1 for e in events if type(e) is Prediction and e.ts <= found[0].ts)
        delays.append((bucket, served))
    print(
        f"{name}: flagged in bucket (hour) {sorted(b for b, _ in delays)}, median "
        f"{statistics.median(b for b, _ in delays)}; predictions served until then, median "
        f"{statistics.median(n for _, n in delays):,.0f}"
    )


@pytest.mark.parametrize("name", CONTROLS)
def test_controls_are_never_flagged(name: str) -> None:
    """No loop: allocation by independent reports, random recommendations, a real trend
    followed by a sane model, labels for everyone, a model that is not retrained."""
    for seed in SEEDS:
        assert loops_found(simulate(name, seed)) == [], (name, seed)


def test_loop_with_a_reference_is_critical_and_names_the_segment() -> None:
    """Policing with independent reports: the over-allocated district is named, the
    reference shares are in the evidence, and the advice is exploration, not retraining."""
    (found,) = loops_found(simulate("policing_loop", 0))
    assert found.severity == "critical"
    assert found.evidence["reference_available"] is True
    assert found.segment is not None and set(found.segment) == {"district"}
    tests = {s["test"] for s in found.evidence["signals"]}
    assert tests & {"allocation_above_reference", "allocation_below_reference"}
    assert "exploration" in found.recommendation
    assert "Do not retrain" in found.recommendation
    assert found.model_version == "v1"


def test_loop_without_a_reference_says_so_and_is_a_warning() -> None:
    """Credit with labels only for approved applicants and no exploration: selective
    labels back the concentration signal, severity is lowered and the evidence says why."""
    (found,) = loops_found(simulate("credit_loop", 0))
    assert found.severity == "warning"
    assert found.evidence["reference_available"] is False
    assert "none in the data" in found.evidence["reference"]
    dependence = next(
        s for s in found.evidence["signals"] if s["test"] == "labels_depend_on_action"
    )
    assert dependence["label_coverage_acted"] > 0.9
    assert dependence["label_coverage_not_acted"] == 0
    # Two regions: north gaining and south starved are the same loop; either may lead.
    assert (found.segment, found.evidence["statistic"]) in (
        ({"region": "north"}, "allocation_share_increase"),
        ({"region": "south"}, "allocation_share_decrease"),
    )


def test_loop_right_after_a_promotion_rolls_the_new_version_back() -> None:
    """The allocation model v2 replaced v1 in hour 3 and the loop builds up under v2: the
    alert comes with a rollback to v1."""
    switch = TS0_MS + 3 * HOUR_MS
    events = [
        replace(e, model_version="v2") if type(e) is Prediction and e.ts >= switch else e
        for e in simulate("policing_loop", 1)
    ]
    found = loops_found(events)
    assert [(d.type, d.model_version, d.from_version, d.to_version) for d in found] == [
        ("alert", "v2", None, None),
        ("rollback", "v2", "v2", "v1"),
    ]


def test_detection_survives_a_checkpoint() -> None:
    """Restoring the engine from its state mid-stream gives the same decisions."""
    events = simulate("recommender_loop", 3)
    whole = run_engine(events, engine=Engine())
    cut = len(events) // 5  # hour 5: before the loop is flagged
    first = Engine()
    before = run_engine(events[:cut], engine=first)
    second = Engine()
    second.restore(first.state())
    after = run_engine(events[cut:], engine=second)
    assert [d.decision_id for d in before + after] == [d.decision_id for d in whole]
    assert any(d.kind == "feedback_loop" for d in after)


def test_batches_do_not_change_what_a_loop_decision_says() -> None:
    """A bucket closes at the record whose event time passes its end, or that opens
    one bucket too many, whatever the batches: the first batch opening the first buckets
    and bringing the first outcomes closes them where a run of smaller batches does, so
    the decision's trigger and window are the same in batches of 1,000 and 7,777."""
    events = simulate("recommender_loop", 1)
    small = [d.to_dict(0) for d in run_engine(events, batch=1_000)]
    assert any(d["kind"] == "feedback_loop" for d in small)
    assert [d.to_dict(0) for d in run_engine(events, batch=7_777)] == small


@pytest.mark.parametrize(
    ("action", "acted"),
    [
        (None, True),
        ("patrol", True),
        ("deny", False),
        ("Declined", False),
        (False, False),
        (0, False),
        ((), False),
        (("item1",), True),
    ],
)
def test_what_counts_as_acting(action: object, acted: bool) -> None:
    no_action = frozenset({"deny", "declined"})
    assert action_taken(action, no_action) is acted
    assert feedback_tag({"d": "x"}, action, False, no_action) == (acted, False, (("d", "x"),))


def test_sampling_at_high_volume_keeps_detection_and_quiet_controls() -> None:
    """With a bucket target below these streams' volume, half of the requests are counted
    (prediction and outcome together): the loop is still flagged on five seeds, with the
    sample rate in its configuration, and the controls stay quiet."""
    settings = DetectorSettings(feedback_sample_target=600)
    for seed in range(5):
        events = simulate("policing_loop", seed)
        engine = Engine(settings)
        found = [d for d in run_engine(events, engine=engine) if d.kind == "feedback_loop"]
        assert [d.detector["config"]["sample_rate"] for d in found] == [0.5], seed
        assert engine.loops["patrol-allocation"].sample_shift == 1
        for control in ("policing_control", "policing_exogenous"):
            quiet = run_engine(simulate(control, seed), engine=Engine(settings))
            assert [d for d in quiet if d.kind == "feedback_loop"] == [], (control, seed)


def test_a_request_is_sampled_with_its_outcome() -> None:
    """Sampling is a function of the request id alone: stable across monitors (replay,
    every worker) and about the nominal rate."""
    from driftline.detectors.feedback.monitor import FeedbackMonitor  # noqa: PLC0415

    first, second = (
        FeedbackMonitor("m", DetectorSettings()),
        FeedbackMonitor("m", DetectorSettings()),
    )
    first.sample_shift = second.sample_shift = 2
    ids = [f"r-{i}" for i in range(20_000)]
    picked = [first.sampled(i) for i in ids]
    assert picked == [second.sampled(i) for i in ids]
    assert 0.23 < sum(picked) / len(ids) < 0.27


def test_retraining_a_model_in_a_loop_comes_with_a_caution() -> None:
    """Once a loop is flagged on a model, its retrain decisions warn that retraining on
    the labels it steered feeds the loop; other models' are untouched."""
    from driftline.detectors.decision import Decision  # noqa: PLC0415

    engine = Engine()
    assert loops_found(simulate("policing_loop", 0), engine)

    def retrain(model_id: str) -> Decision:
        return Decision(
            "0" * 32,
            "retrain",
            "concept_drift",
            model_id,
            "v1",
            "critical",
            (),
            {},
            {},
            {},
            0,
            0,
            "Retrain on recent labelled data.",
        )

    flagged = engine.models._caution(retrain("patrol-allocation"))
    assert flagged.recommendation.startswith("Caution: a feedback loop was flagged")
    assert flagged.evidence["feedback_loop_flagged"] is True
    other = retrain("credit-risk")
    assert engine.models._caution(other) is other


@pytest.mark.parametrize("seed", range(3))
def test_a_daily_retrained_loop_is_found_at_hourly_buckets_and_not_rolled_back(seed: int) -> None:
    """A lender retrained once a day whose approvals in one region step down 3 points at
    every retrain (flat within each day) is flagged within six days at the default
    hourly buckets, as a warning (labels only where it approved, no reference), naming the
    region; the versions of the cadence are listed and no rollback is sent (the previous
    daily version came from the same procedure). The same lender not retrained is never
    flagged."""
    found = run_engine(simulate("daily_credit_loop", seed))
    loops = [d for d in found if d.kind == "feedback_loop"]
    assert [d.type for d in loops] == ["alert"]
    (alert,) = loops
    assert (alert.ts - TS0_MS) / HOUR_MS <= 6 * 24
    assert alert.severity == "warning"
    assert alert.segment == {"region": "east"}
    assert alert.evidence["statistic"] == "allocation_share_decrease"
    assert len(alert.evidence["versions_affected"]) >= 2
    assert alert.evidence["retrain_cadence_hours"] == pytest.approx(24, abs=1)
    assert "Change the procedure" in alert.recommendation
    quiet = run_engine(simulate("daily_credit_frozen", seed))
    assert [d for d in quiet if d.kind == "feedback_loop"] == []


def test_label_coverage_is_a_rate_when_labels_arrive_buckets_later() -> None:
    """Labels that arrive up to 30 hours after their prediction count against the bucket
    of the prediction: every coverage in the evidence is in [0, 1], and the acted coverage
    approaches 1 (every approved loan is labelled eventually)."""
    found = run_engine(simulate("daily_credit_loop", 0))
    (alert,) = [d for d in found if d.kind == "feedback_loop"]
    dependence = next(
        s for s in alert.evidence["signals"] if s["test"] == "labels_depend_on_action"
    )
    assert 0.8 < dependence["label_coverage_acted"] <= 1.0
    assert dependence["label_coverage_not_acted"] == 0.0


def test_a_label_never_counts_twice_against_its_bucket() -> None:
    """Direct: more labels than predictions for a bucket (replayed outcomes) leave the
    coverage at 1."""
    from driftline.detectors.feedback.monitor import LABEL, PREDICTION, FeedbackMonitor  # noqa: PLC0415

    monitor = FeedbackMonitor("m", DetectorSettings())
    tag = monitor.registry.id((True, False, (("region", "a"),)))
    ts = TS0_MS
    predictions = [
        ("m", PREDICTION, i, ts + i, f"p{i}", tag, None, None, ts + i) for i in range(10)
    ]
    monitor.observe(predictions)
    labels = [
        ("m", LABEL, 10 + i, ts + 100 + i, f"o{i % 10}", tag, 0.1, 0, ts + i % 10)
        for i in range(25)
    ]
    monitor.observe(labels)
    raw = monitor.open[ts - ts % HOUR_MS]
    assert raw.labelled[tag] == raw.predictions[tag] == 10
