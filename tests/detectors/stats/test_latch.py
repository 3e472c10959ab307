"""Latching CUSUMs: one alarm per persistent change, a recovery once the quantity is back,
exact whatever the batching or a restore in between."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.stats.latch import BERNOULLI, GAUSS_MEAN, GAUSS_VAR, LatchingBank

FAMILY = np.array([GAUSS_MEAN, GAUSS_VAR, BERNOULLI])
NULL = np.array([0.0, 1.0, 0.1])
DESIGN = np.array([0.3, 1.5, 0.15])
ARL = 1e8


def _bank() -> LatchingBank:
    bank = LatchingBank(FAMILY, NULL, DESIGN)
    bank.calibrate(np.array([17.0, 17.0, 17.0]), ARL)
    return bank


def _stream(seed: int, spans: list[tuple[int, int]], n: int) -> np.ndarray:
    """Statistics of the three families; changed (mean +0.4, variance x1.8, rate 0.17)
    inside ``spans``."""
    rng = np.random.default_rng(seed)
    changed = np.zeros(n, dtype=bool)
    for start, stop in spans:
        changed[start:stop] = True
    z = rng.normal(0.0, 1.0, n) + 0.4 * changed
    s = rng.normal(0.0, 1.0, n) * np.where(changed, np.sqrt(1.8), 1.0)
    e = (rng.uniform(size=n) < np.where(changed, 0.17, 0.1)).astype(np.float64)
    return np.column_stack([z, s * s, e])


def _run(
    bank: LatchingBank, t: np.ndarray, batch: int, start: int = 0
) -> list[tuple[int, int, bool, int | None]]:
    """Crossings as (event, column, recovered, the event its run started at): events are
    stamped with their position in the stream (from ``start``)."""
    out = []
    valid = np.ones_like(t, dtype=bool)
    stamps = np.arange(start, start + len(t), dtype=np.int64)
    for i in range(0, len(t), batch):
        found = bank.update(t[i : i + batch], valid[i : i + batch], stamps[i : i + batch])
        out += [(c.row + i + start, c.column, c.recovered, c.first_stamp) for c in found]
    return out


def test_a_change_that_persists_for_200k_events_is_one_alarm_per_test() -> None:
    """A plain CUSUM restarts and alarms again every few hundred events; latched, each
    family alarms once and never recovers while the change stays."""
    t = _stream(1, [(5_000, 205_000)], 205_000)
    crossings = _run(_bank(), t, 4096)
    assert sorted((col, rec) for _, col, rec, _ in crossings) == [
        (0, False),
        (1, False),
        (2, False),
    ]
    assert all(row >= 5_000 for row, _, _, _ in crossings)
    # Each run started near the change (the first events after it leave the CUSUM at 0
    # now and then; a run from long before would date the change wrongly).
    assert all(4_000 <= first <= row for row, _, _, first in crossings)


def test_recovery_then_a_new_alarm_when_the_change_returns() -> None:
    """Change, back to the reference for 40k events, change again: alarm, recovery, alarm
    per family, each recovery after the change ended."""
    t = _stream(2, [(5_000, 40_000), (80_000, 120_000)], 120_000)
    crossings = _run(_bank(), t, 4096)
    for col in range(3):
        mine = [(row, rec) for row, c, rec, _ in crossings if c == col]
        assert [rec for _, rec in mine] == [False, True, False], mine
        assert 5_000 <= mine[0][0] < 40_000 <= mine[1][0] < 80_000 <= mine[2][0]


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_batching_does_not_change_a_crossing(batch) -> None:
    """Same crossings, dated from the same event, at any batch size (one event at a time
    is the reference)."""
    t = _stream(3, [(1_000, 6_000), (12_000, 15_000)], 20_000)
    crossings = _run(_bank(), t, batch)
    assert len(crossings) >= 6
    assert all((first is None) == rec for _, _, rec, first in crossings)
    assert crossings == _run(_bank(), t, 20_000 if batch == 1 else 1)


def test_a_restored_bank_continues_exactly() -> None:
    """State saved while latched and restored into a fresh bank gives the same crossings."""
    t = _stream(4, [(3_000, 20_000)], 60_000)
    whole = _run(_bank(), t, 5_000)
    first = _bank()
    head = _run(first, t[:10_000], 5_000)
    assert first.latched.any()
    second = _bank()
    second.restore(first.state())
    tail = _run(second, t[10_000:], 5_000, start=10_000)
    assert head + tail == whole


def _summed(t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slices of ``size`` events: sums of the statistics, events that count, events, and
    the stamp of each slice's first event."""
    starts = np.arange(0, len(t), size)
    events = np.diff(np.r_[starts, len(t)])
    counts = np.repeat(events[:, None], t.shape[1], axis=1).astype(np.float64)
    return np.add.reduceat(t, starts, axis=0), counts, events, starts.astype(np.int64)


def test_slices_of_one_event_are_the_events() -> None:
    """The slice form with one event per row gives the per-event crossings exactly."""
    t = _stream(5, [(2_000, 9_000)], 15_000)
    sums, counts, events, stamps = _summed(t, 1)
    bank = _bank()
    found = bank.update(sums, counts, stamps, events)
    assert [(c.row, c.column, c.recovered, c.first_stamp) for c in found] == _run(
        _bank(), t, 15_000
    )


def test_slices_delay_an_alarm_never_add_one() -> None:
    """Slices of 100 events: every crossing lands in the slice of the per-event crossing
    or a later one, the same number of crossings here, and a null stream of a million
    events is as quiet summed as it is event by event; run lengths count events."""
    t = _stream(6, [(3_000, 30_000), (60_000, 90_000)], 100_000)
    events_path = _run(_bank(), t, 100_000)
    sums, counts, events, stamps = _summed(t, 100)
    sliced = _bank().update(sums, counts, stamps, events)
    assert len(sliced) == len(events_path) >= 6
    for col in range(3):
        mine = [c for c in sliced if c.column == col]
        theirs = [(row, rec) for row, c, rec, _ in events_path if c == col]
        assert [c.recovered for c in mine] == [rec for _, rec in theirs]
        for got, (row, _) in zip(mine, theirs, strict=True):
            assert row // 100 <= got.row <= row // 100 + 3
    forward = [c for c in sliced if not c.recovered]
    assert all(c.run_length % 100 == 0 and c.run_length > 0 for c in forward)

    null = _stream(7, [], 1_000_000)
    quiet = _bank()
    quiet.calibrate(np.array([9.0, 9.0, 9.0]), ARL)  # loose enough to cross now and then
    per_event = len(quiet.update(null, np.ones_like(null, dtype=bool)))
    loose = _bank()
    loose.calibrate(np.array([9.0, 9.0, 9.0]), ARL)
    per_slice = len(loose.update(*_summed(null, 100)[:2], None, _summed(null, 100)[2]))
    assert per_event >= 3
    assert per_slice <= per_event
