"""The CUSUM bank: exact batch-independence, restart after alarms, calibration."""

from __future__ import annotations

import numpy as np

from driftline.detectors.stats.cusum import CusumBank, bernoulli_kl, gaussian_threshold


def sequential(llr: np.ndarray, h: np.ndarray) -> list[tuple[int, int]]:
    """Reference implementation, one event at a time."""
    s = np.zeros(llr.shape[1])
    alarms = []
    for t, row in enumerate(llr):
        s = np.maximum(0.0, s + row)
        for c in np.flatnonzero(s > h):
            alarms.append((t, int(c)))
            s[c] = 0.0
    return alarms


def test_batched_equals_event_by_event() -> None:
    """Any batching gives exactly the alarms of the one-event-at-a-time recursion."""
    rng = np.random.default_rng(0)
    llr = rng.normal(-0.05, 1.0, size=(5_000, 6))
    h = np.full(6, 8.0)
    expected = sequential(llr, h)
    assert len(expected) > 5
    for batch in (1, 7, 256, 5_000):
        bank = CusumBank(h)
        got = []
        for start in range(0, len(llr), batch):
            got += [(a.row + start, a.column) for a in bank.update(llr[start : start + batch])]
        assert got == expected


def test_run_length_carries_across_batches() -> None:
    """The run length at an alarm counts events since the statistic left zero, across batches."""
    bank = CusumBank(np.array([5.0]))
    assert bank.update(np.full((4, 1), 1.0)) == []
    alarm = bank.update(np.full((4, 1), 1.0))[0]
    assert (alarm.row, alarm.run_length) == (1, 6)


def test_thresholds_grow_with_the_budget() -> None:
    """A larger false-alarm budget gives a higher threshold; KL is zero only at the null."""
    assert gaussian_threshold(1e9, 0.045) > gaussian_threshold(1e6, 0.045)
    assert float(bernoulli_kl(np.array([0.2]), np.array([0.2]))[0]) == 0.0
