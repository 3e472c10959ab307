"""The outcome join on its own: both arrival orders, every counter, its bounds, and a
restore that continues exactly."""

from __future__ import annotations

import gc

import numpy as np
import orjson

from driftline.detectors.intake.join import OutcomeJoin

HOUR = 3_600_000


def pending(model: str = "m", ts: int = 0, prediction: object = 0.7, tag: int | None = None):  # type: ignore[no-untyped-def]
    return (model, "v1", prediction, ts, tag)


def test_an_outcome_joins_its_prediction_in_either_order() -> None:
    join = OutcomeJoin(ttl_ms=HOUR, max_pending=100)
    assert join.add_prediction("r1", pending(ts=10, tag=3)) == ()
    (joined,) = join.add_outcome("r1", "m", 1, 50)
    assert (joined.prediction, joined.label, joined.prediction_ts, joined.outcome_ts) == (
        0.7,
        1,
        10,
        50,
    )
    assert joined.tag == 3
    assert join.add_outcome("r2", "m", 0, 60) == ()  # the outcome arrives first
    (early,) = join.add_prediction("r2", pending(ts=55))
    assert (early.label, early.outcome_ts) == (0, 60)
    assert join.counts["joined"] == 2 and join.size == 0


def test_an_outcome_joins_only_predictions_of_its_own_model() -> None:
    """Champion and shadow on one request: each model's outcome takes its own."""
    join = OutcomeJoin(ttl_ms=HOUR, max_pending=100)
    join.add_prediction("r", pending("champion", 1))
    join.add_prediction("r", pending("shadow", 2, prediction=0.2))
    (joined,) = join.add_outcome("r", "shadow", 1, 5)
    assert (joined.model_id, joined.prediction) == ("shadow", 0.2)
    assert join.size == 1
    (other,) = join.add_outcome("r", "champion", 1, 6)
    assert other.model_id == "champion" and join.size == 0


def test_every_outcome_is_counted_once_joined_late_duplicate_or_orphaned() -> None:
    join = OutcomeJoin(ttl_ms=HOUR, max_pending=100)
    join.add_prediction("expires", pending(ts=0))
    join.add_prediction("joins", pending(ts=HOUR))
    join.add_outcome("joins", "m", 1, HOUR + 1)
    join.add_outcome("joins", "m", 1, HOUR + 2)  # again: a duplicate
    join.add_outcome("nobody", "m", 1, HOUR + 3)  # waits for a prediction
    join.add_prediction("tick", pending(ts=3 * HOUR))  # event time moves on two hours
    join.add_outcome("expires", "m", 0, 3 * HOUR)  # its prediction expired: late
    join.add_outcome("nulled", "m", None, 3 * HOUR)
    assert join.counts == {
        "joined": 1,
        "late": 1,
        "orphaned": 1,
        "duplicate": 1,
        "expired_unlabelled": 1,
        "null_label": 1,
    }


def test_waiting_entries_are_bounded_oldest_first() -> None:
    join = OutcomeJoin(ttl_ms=10 * HOUR, max_pending=3)
    for i in range(5):
        join.add_prediction(f"p{i}", pending(ts=i))
        join.add_outcome(f"o{i}", "m", 1, i)
    assert list(join.predictions) == ["p2", "p3", "p4"]
    assert list(join.outcomes) == ["o2", "o3", "o4"]
    assert join.counts["expired_unlabelled"] == 2 and join.counts["orphaned"] == 2
    join.add_outcome("p0", "m", 1, 5)  # its prediction was evicted, and remembered
    assert join.counts["late"] == 1


def test_a_restored_join_continues_as_the_original() -> None:
    """Through JSON, as checkpoints store it (ranked-list predictions come back as
    tuples)."""
    original = OutcomeJoin(ttl_ms=HOUR, max_pending=100)
    original.add_prediction("a", pending(ts=1, prediction=("i1", "i2"), tag=0))
    original.add_outcome("b", "m", 1, 2)
    copy = OutcomeJoin(ttl_ms=HOUR, max_pending=100)
    copy.restore(orjson.loads(orjson.dumps(original.state())))
    for join in (original, copy):
        (joined,) = join.add_outcome("a", "m", "i2", 3)
        assert joined.prediction == ("i1", "i2") and joined.tag == 0
        (early,) = join.add_prediction("b", pending(ts=2))
        assert early.label == 1
    assert copy.counts == original.counts


def test_the_state_lists_every_map_in_its_order_after_any_mix_of_operations() -> None:
    """The state reads the maps' storage, not their links: the same order, as long as
    nothing moves an entry to the end. Joins in either order, two models on one
    request, evictions past the bound, expiries, late and duplicate outcomes, seeded."""
    rng = np.random.default_rng(17)
    join = OutcomeJoin(ttl_ms=500, max_pending=300, memory=400)
    for i in range(5_000):
        request = f"r{int(rng.integers(0, 1_500))}"
        if rng.random() < 0.5:
            model = "m" if rng.random() < 0.9 else "m2"
            join.add_prediction(request, pending(ts=i, model=model))
        else:
            join.add_outcome(request, "m", int(rng.integers(0, 2)), i)
    state = join.state()
    assert [k for k, _ in state["predictions"]] == list(join.predictions)
    assert [v for _, v in state["predictions"]] == list(join.predictions.values())
    assert [k for k, _ in state["outcomes"]] == list(join.outcomes)
    assert state["expired"] == list(join.expired) and state["resolved"] == list(join.resolved)
    assert min(len(join.expired), len(join.resolved), len(join.outcomes)) > 0
    assert join.counts["expired_unlabelled"] > 0 and join.counts["late"] > 0


def test_waiting_predictions_drop_out_of_the_cycle_collectors_tracking() -> None:
    """What waits in the join holds scalars only: after a collection, nothing of it is
    walked by the collector again (a list per waiting prediction was, by every
    older-generation collection)."""
    join = OutcomeJoin(ttl_ms=10**9, max_pending=1_000)
    for i in range(100):
        join.add_prediction(f"r{i}", ("m", "v1", 0.3, i, None))
    join.add_prediction("r0", ("m2", "v1", 0.5, 1, None))  # two models, one request
    join.add_outcome("r0", "m", 1, 200)  # joins one, the other waits
    gc.collect()
    gc.collect()  # a tuple is let go once its contents are: two collections at most
    assert len(join.predictions["r0"]) == 1 and join.predictions["r0"][0][0] == "m2"
    assert not any(gc.is_tracked(entries) for entries in join.predictions.values())
