"""EventClock: far-future events are refused, one event cannot move a partition's clock,
and what is admitted depends on the arrival sequence only, never on batching."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.intake.clock import CLOCK_WINDOW, EventClock, PartitionClock

SKEW = 15 * 60 * 1000
T0 = 1_700_000_000_000
YEAR_2099 = 4_070_908_800_000
WEEK = 7 * 24 * 3600 * 1000


def steady(n: int, step_ms: int = 100, seed: int = 0) -> np.ndarray:
    """Event times of a busy partition: roughly ``step_ms`` apart, a little out of order."""
    rng = np.random.default_rng(seed)
    return T0 + np.arange(n, dtype=np.int64) * step_ms + rng.integers(0, 5 * step_ms, n)


def admit_in_batches(ts: np.ndarray, produced: np.ndarray | None, size: int) -> np.ndarray:
    clock = EventClock(SKEW)
    parts = []
    for i in range(0, len(ts), size):
        p = None if produced is None else produced[i : i + size]
        parts.append(clock.admit(ts[i : i + size], p))
    return np.concatenate(parts)


def test_far_future_and_week_ahead_events_are_refused_and_nothing_else() -> None:
    """A 2099 event and a week-ahead event among 50k steady ones are the only refusals."""
    ts = steady(50_000)
    ts[20_000] = YEAR_2099
    ts[30_000] += WEEK
    produced = ts.copy()
    produced[20_000] = ts[19_999]
    produced[30_000] = ts[29_999]
    admitted = admit_in_batches(ts, produced, 4_096)
    assert np.flatnonzero(~admitted).tolist() == [20_000, 30_000]


@pytest.mark.parametrize("size", [1, 7, 333, 50_000])
def test_admission_does_not_depend_on_batching(size: int) -> None:
    """The same arrivals cut into different batches give the same verdicts."""
    ts = steady(20_000, seed=3)
    ts[[500, 9_000, 9_001, 15_000]] += [WEEK, 2 * SKEW, 3 * SKEW, YEAR_2099 - T0]
    produced = T0 + np.arange(20_000, dtype=np.int64) * 100
    expected = admit_in_batches(ts, produced, 4_096)
    assert (~expected).sum() == 4
    assert (admit_in_batches(ts, produced, size) == expected).all()


def test_a_burst_shorter_than_half_the_window_cannot_move_the_clock() -> None:
    """Seven far-future events in a row are all refused; the steady stream goes on."""
    ts = steady(2_000)
    ts[1_000 : 1_000 + CLOCK_WINDOW // 2] = YEAR_2099
    admitted = admit_in_batches(ts, None, 128)
    assert np.flatnonzero(~admitted).tolist() == list(range(1_000, 1_000 + CLOCK_WINDOW // 2))


def test_a_quiet_night_is_on_time_when_produce_times_are_known() -> None:
    """Twelve hours without traffic, then traffic again: nothing is refused when the
    records' produce times show the time that passed."""
    night = 12 * 3600 * 1000
    ts = np.concatenate([steady(1_000), steady(1_000) + 1_000 * 100 + night])
    admitted = admit_in_batches(ts, ts + 20, 256)
    assert admitted.all()


def test_without_produce_times_a_real_jump_heals_within_half_a_window() -> None:
    """Replay has no produce times: after a gap longer than the allowance the first
    half-window of events is refused, then the clock has moved and the rest is admitted."""
    night = 12 * 3600 * 1000
    ts = np.concatenate([steady(1_000), steady(1_000) + 1_000 * 100 + night])
    admitted = admit_in_batches(ts, None, 256)
    assert np.flatnonzero(~admitted).tolist() == list(range(1_000, 1_000 + CLOCK_WINDOW // 2 + 1))


def test_a_slow_stream_is_never_ahead_of_itself() -> None:
    """One event every ten minutes (past the 15-minute skew from a 7-event-old median)
    is admitted throughout, with no produce times."""
    ts = T0 + np.arange(500, dtype=np.int64) * 600_000
    assert admit_in_batches(ts, None, 50).all()


def test_before_a_full_window_produce_time_bounds_the_first_events() -> None:
    """A fresh partition whose first event is dated 2099 refuses it (against its produce
    time), and a zero skew admits everything."""
    clock = EventClock(SKEW)
    verdicts = clock.admit(np.array([YEAR_2099, T0, T0 + 1]), np.array([T0, T0, T0]))
    assert verdicts.tolist() == [False, True, True]
    assert EventClock(0).admit(np.array([YEAR_2099, T0])).all()


def test_state_round_trip_continues_exactly() -> None:
    """A clock restored from its state judges the rest of the stream as the original."""
    ts = steady(3_000)
    ts[2_500] += WEEK
    first = EventClock(SKEW)
    first.admit(ts[:2_000])
    restored = EventClock(SKEW)
    restored.restore(first.state())
    assert (restored.admit(ts[2_000:]) == first.admit(ts[2_000:])).all()
    assert restored.now == first.now


def test_models_sharing_a_partition_keep_their_own_time_base() -> None:
    """A model backfilled a week behind another on the same partition does not make the
    live model's events look ahead, and each model's own far-future event is refused."""

    live = steady(4_000)
    backfill = steady(4_000, seed=1) - WEEK
    ts = np.empty(8_000, dtype=np.int64)
    ts[0::2], ts[1::2] = live, backfill
    models = ["live", "backfill"] * 4_000
    ts[5_000] = YEAR_2099  # a live event
    ts[6_001] += WEEK + WEEK  # a backfill event a week ahead of the live model's time
    clock = PartitionClock(SKEW)
    admitted = np.concatenate(
        [clock.admit(models[i : i + 500], ts[i : i + 500]) for i in range(0, 8_000, 500)]
    )
    assert np.flatnonzero(~admitted).tolist() == [5_000, 6_001]


def test_partition_clock_bounds_its_models_and_restores() -> None:
    """Beyond the model bound the least recently seen model is forgotten (and counted);
    a restored partition clock continues as the original."""

    clock = PartitionClock(SKEW, max_clocks=3)
    for model in ["a", "b", "c", "d", "a"]:
        clock.admit([model] * 20, steady(20))
    assert (list(clock.clocks), clock.evicted) == (["c", "d", "a"], 2)
    restored = PartitionClock(SKEW, max_clocks=3)
    restored.restore(clock.state())
    probe = np.array([T0 + 3_000, T0 + WEEK])
    assert restored.admit(["a", "a"], probe).tolist() == clock.admit(["a", "a"], probe).tolist()
    assert restored.admit(["a"], probe[:1]).tolist() == [True]
