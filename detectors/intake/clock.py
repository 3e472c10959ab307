"""Bounded event time: one far-future timestamp must not move a partition's clock.

Every watermark downstream (the join's TTL, feedback buckets, version half-lives) moves
with the largest event time it has seen. An event dated 2099, or a week ahead because a
producer's clock is wrong, would expire every pending join at once and close every open
bucket. `EventClock` stands at the edge, per input partition, and refuses events that are
further ahead of the partition's recent traffic than ``max_future_skew_ms`` allows; those
become ``future_timestamp`` dead letters. What it admits can move a watermark by at most
that allowance.

Each model has its own clock within a partition (`PartitionClock`): models sharing a
partition may legitimately run on different event-time bases (one backfilled while
another is live, or simulated traffic), and one model's history must not make another's
live events look ahead. The reference is the median of the model's last `CLOCK_WINDOW`
arrivals' event times (admitted or not), so a burst of up to half a window of bad events
cannot move it, while a real jump of the whole stream (traffic resuming after a quiet
night) moves it within half a window.
Where produce times are known (the broker's record timestamps), the allowance also grows
by the produce time elapsed since that recent traffic, so the first event after a quiet
night is on time, not ahead. Decisions depend on the arrival sequence only, never on how
it was cut into batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

CLOCK_WINDOW = 15
"""Recent arrivals whose median event time is the partition's clock: robust to seven bad
events in a row, and the first eight events after a gap with no known produce time (a
replayed file) are judged against the time before the gap."""

GAP_FACTOR = 8
"""The allowance is at least this many typical inter-arrival gaps (lower half of the
window), so a slow stream with minutes between events is never "ahead" of itself."""

MAX_CLOCKS = 10_000
"""Models with a clock of their own per partition (about 500 bytes each); the least
recently seen is forgotten first, and its next event starts a new window (bounded by its
produce time only), so a stream of a million distinct model ids cannot grow the state."""

_HALF = CLOCK_WINDOW // 2


class EventClock:
    """The recent event time of one input partition and the latest time it admits.

    Parameters
    ----------
    max_future_skew_ms
        How far ahead of the partition's recent event time (plus the produce time elapsed
        since) an event may be; 0 admits everything.

    Examples
    --------
    >>> clock = EventClock(max_future_skew_ms=60_000)
    >>> ts = np.arange(20, dtype=np.int64) * 1_000 + 1_700_000_000_000
    >>> bool(clock.admit(ts).all())
    True
    >>> year_2099 = 4_070_908_800_000
    >>> clock.admit(np.array([1_700_000_020_000, year_2099], dtype=np.int64)).tolist()
    [True, False]
    """

    def __init__(self, max_future_skew_ms: int) -> None:
        self.max_future_skew_ms = max_future_skew_ms
        self.recent_ts = np.empty(0, dtype=np.int64)
        """Event times of the last `CLOCK_WINDOW` arrivals, oldest first."""
        self.recent_produced = np.empty(0, dtype=np.int64)
        """Their produce times (-1 where unknown)."""

    @property
    def now(self) -> int | None:
        """The partition's clock (median recent event time); None before a full window."""
        if len(self.recent_ts) < CLOCK_WINDOW:
            return None
        return int(np.sort(self.recent_ts)[_HALF])

    def admit(self, ts: np.ndarray, produced: np.ndarray | None = None) -> np.ndarray:
        """Which of these arrivals (event times, in arrival order) are admitted.

        ``produced`` holds each arrival's produce time (the broker's record timestamp), or
        is None when none is known. Every arrival, admitted or not, enters the window.
        """
        n = len(ts)
        if self.max_future_skew_ms <= 0 or n == 0:
            self._remember(ts, produced)
            return np.ones(n, dtype=bool)
        known = produced is not None
        produced_arr = (
            np.asarray(produced, dtype=np.int64) if known else np.full(n, -1, dtype=np.int64)
        )
        all_ts = np.concatenate([self.recent_ts, ts])
        all_produced = np.concatenate([self.recent_produced, produced_arr])
        start = len(self.recent_ts)
        limit = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        # Arrivals with a full window before them: position i (in all_ts) has the window
        # all_ts[i - CLOCK_WINDOW : i].
        first = max(start, CLOCK_WINDOW)
        if first < len(all_ts):
            windows = np.lib.stride_tricks.sliding_window_view(all_ts[:-1], CLOCK_WINDOW)
            windows = np.sort(windows[first - CLOCK_WINDOW :], axis=1)
            clock = windows[:, _HALF]
            gap = (clock - windows[:, 0]) // _HALF
            allowance = np.maximum(self.max_future_skew_ms, GAP_FACTOR * gap)
            if known:
                prod_windows = np.lib.stride_tricks.sliding_window_view(
                    all_produced[:-1], CLOCK_WINDOW
                )[first - CLOCK_WINDOW :]
                recent_produced = np.median(prod_windows, axis=1).astype(np.int64)
                elapsed = all_produced[first:] - recent_produced
                # Windows with unknown produce times (a restored replay state) add nothing.
                valid = (prod_windows >= 0).all(axis=1)
                allowance = allowance + np.where(valid, np.maximum(elapsed, 0), 0)
            limit[first - start :] = clock + allowance
        if known:
            # Before the partition has a window: no further ahead than its produce time.
            early = slice(0, first - start)
            limit[early] = produced_arr[early] + self.max_future_skew_ms
        self._remember(ts, produced_arr)
        return ts <= limit

    def _remember(self, ts: np.ndarray, produced: np.ndarray | None) -> None:
        produced_arr = (
            np.full(len(ts), -1, dtype=np.int64)
            if produced is None
            else np.asarray(produced, dtype=np.int64)
        )
        self.recent_ts = np.concatenate([self.recent_ts, ts])[-CLOCK_WINDOW:]
        self.recent_produced = np.concatenate([self.recent_produced, produced_arr])[-CLOCK_WINDOW:]

    def state(self) -> dict[str, Any]:
        return {"ts": self.recent_ts.tolist(), "produced": self.recent_produced.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.recent_ts = np.asarray(state["ts"], dtype=np.int64)
        self.recent_produced = np.asarray(state["produced"], dtype=np.int64)


class PartitionClock:
    """One `EventClock` per model of an input partition, least recently seen dropped first.

    Examples
    --------
    >>> clock = PartitionClock(max_future_skew_ms=60_000)
    >>> t0 = 1_700_000_000_000
    >>> models = ["a"] * 20 + ["b"] * 20
    >>> ts = np.concatenate([t0 + np.arange(20) * 1_000, t0 + 86_400_000 + np.arange(20)])
    >>> bool(clock.admit(models, ts).all())  # b runs a day ahead of a: its own base
    True
    >>> clock.admit(["a", "b"], np.array([t0 + 86_400_000, t0 + 86_400_030])).tolist()
    [False, True]
    """

    def __init__(self, max_future_skew_ms: int, max_clocks: int = MAX_CLOCKS) -> None:
        self.max_future_skew_ms = max_future_skew_ms
        self.max_clocks = max_clocks
        self.clocks: OrderedDict[str, EventClock] = OrderedDict()
        self.evicted = 0

    def clock(self, model_id: str) -> EventClock:
        found = self.clocks.get(model_id)
        if found is None:
            found = self.clocks[model_id] = EventClock(self.max_future_skew_ms)
            while len(self.clocks) > self.max_clocks:
                self.clocks.popitem(last=False)
                self.evicted += 1
        else:
            self.clocks.move_to_end(model_id)
        return found

    def admit(
        self, model_ids: Sequence[str], ts: np.ndarray, produced: np.ndarray | None = None
    ) -> np.ndarray:
        """Which arrivals are admitted, each judged by its own model's clock."""
        if self.max_future_skew_ms <= 0:
            return np.ones(len(ts), dtype=bool)
        if len(model_ids) == 0:
            return np.ones(0, dtype=bool)
        first = model_ids[0]
        if all(m == first for m in model_ids):
            return self.clock(first).admit(ts, produced)
        where: dict[str, list[int]] = {}
        for i, model_id in enumerate(model_ids):
            found = where.get(model_id)
            if found is None:
                where[model_id] = [i]
            else:
                found.append(i)
        admitted = np.ones(len(ts), dtype=bool)
        for model_id, positions in where.items():
            idx = np.array(positions, dtype=np.int64)
            admitted[idx] = self.clock(model_id).admit(
                ts[idx], None if produced is None else produced[idx]
            )
        return admitted

    def now(self, model_id: str) -> int | None:
        found = self.clocks.get(model_id)
        return None if found is None else found.now

    def state(self) -> dict[str, Any]:
        return {
            "clocks": [[m, c.state()] for m, c in self.clocks.items()],
            "evicted": self.evicted,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.clocks = OrderedDict()
        for model_id, clock_state in state["clocks"]:
            self.clock(model_id).restore(clock_state)
        self.evicted = state["evicted"]
