"""A channel tested per slice of event time: a slice summed in parts elsewhere (the input
stage of each partition) tests as the same slice summed from its events."""

from __future__ import annotations

import numpy as np
import orjson

from driftline.detectors.drift.channel import OpenSlice
from driftline.detectors.drift.numeric import NumericChannel
from driftline.detectors.drift.reference import summarise_numeric
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta

SETTINGS = DetectorSettings(slice_ms=1_000, window_events=3_000)
SPACING_MS = 5
"""200 events a slice."""


def _channel() -> NumericChannel:
    rng = np.random.default_rng(0)
    reference = {"x": rng.normal(0.0, 1.0, 20_000), "y": rng.uniform(0.0, 10.0, 20_000)}
    summaries = {n: summarise_numeric(v, 0, SETTINGS) for n, v in reference.items()}
    channel = NumericChannel("data_drift", summaries, SETTINGS)
    channel.calibrate(50_000)
    return channel


def _stream(n: int, change_at: int) -> tuple[np.ndarray, BatchMeta]:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0.0, 1.0, n), rng.uniform(0.0, 10.0, n)])
    x[change_at:, 0] += 0.4
    x[change_at:, 1] = rng.uniform(1.0, 11.0, n - change_at)
    ts = np.arange(n, dtype=np.int64) * SPACING_MS
    return x, BatchMeta(np.arange(n, dtype=np.int64), ts, [f"e-{i}" for i in range(n)])


def _found(result) -> list[tuple[int, str, str, bool]]:
    signals, reports = result
    return [(s.ts, s.feature, s.detector, False) for s in signals] + [
        (r.ts, r.feature, r.detector, True) for r in reports if hasattr(r, "feature")
    ]


def test_a_slice_summed_in_parts_tests_as_the_slice() -> None:
    """Events dealt to two 'partitions' by parity, each summing its part of every slice,
    the parts fed in slice order: the same signals and recoveries, on the same slices, as
    the events themselves (sums differ in their last bits at most)."""
    x, meta = _stream(40_000, 20_000)
    whole = _channel()
    data = whole.prepare(x)
    expected = _found(whole.update_slices(data, meta, meta.ts // SETTINGS.slice_ms))
    assert any(not recovered for *_, recovered in expected)

    summing = _channel()
    t, ok, bad = summing.summed_stats(data)
    slices = meta.ts // SETTINGS.slice_ms
    parts: list[tuple[int, int, OpenSlice]] = []
    for index in np.unique(slices):
        for parity in (0, 1):
            rows = np.flatnonzero((slices == index) & (np.arange(len(slices)) % 2 == parity))
            part = summing.empty_slice(int(index))
            for row in rows:  # event by event, as a partition's batches could cut them
                summing.sum_into(part, data, meta.ts, t, ok, bad, int(row), int(row) + 1)
            parts.append((0, int(rows[-1]), part))
    tested = _channel()
    empty = tested.prepare(np.empty((0, 2)))
    got = _found(tested.update_slices(empty, meta.slice(0, 0), slices[:0], parts))
    assert got == expected
    assert np.allclose(tested.bank.statistic, whole.bank.statistic)
    assert tested.open is not None and whole.open is not None
    assert tested.open.events == whole.open.events == 200


def test_a_slice_is_tested_when_a_later_one_begins_and_late_events_join_the_open_one() -> None:
    """Nothing is tested inside a slice; the first event of the next slice closes it; an
    event of a slice already tested counts in the open slice."""
    x, meta = _stream(1_000, 1_000)
    channel = _channel()
    data = channel.prepare(x)
    slices = meta.ts // SETTINGS.slice_ms
    channel.update_slices(data, meta.slice(0, 199), slices[:199])
    assert channel.open is not None and channel.open.events == 199
    assert channel.bank.run_length.max() == 0  # nothing tested yet
    channel.update_slices(data, meta.slice(199, 201), slices[199:201])
    assert channel.open.index == 1 and channel.open.events == 1
    late = np.array([0], dtype=np.int64)
    channel.update_slices(
        channel.prepare(x[:1]), BatchMeta(np.array([5_000]), np.array([3]), ["late"]), late
    )
    assert channel.open.index == 1 and channel.open.events == 2
    assert channel.open.first_ts == 3


def test_a_restored_channel_keeps_counting_its_window() -> None:
    """Histogram counts read back from a checkpoint keep their layout: the numeric
    channel's window (and an open slice) counts what comes after the restore (read back
    as a list, ``+=`` extended it instead, and the window test saw only the counts from
    before)."""
    x, meta = _stream(3_000, 3_000)
    whole = _channel()
    data = whole.prepare(x)
    slices = meta.ts // SETTINGS.slice_ms
    whole.update_slices(data, meta, slices)
    first = _channel()
    first.update_slices(
        data.__class__(data.z[:1_100], data.bins[:1_100], data.bad[:1_100]),
        meta.slice(0, 1_100),
        slices[:1_100],
    )
    second = _channel()
    second.restore(orjson.loads(orjson.dumps(first.state())))
    rest = data.__class__(data.z[1_100:], data.bins[1_100:], data.bad[1_100:])
    second.update_slices(rest, meta.slice(1_100, 3_000), slices[1_100:])
    assert np.array_equal(second.window_counts, whole.window_counts)
    assert second.window_counts.sum() == whole.window_counts.sum() > 0
    assert np.array_equal(second.open.counts, whole.open.counts)

    events = _channel()
    events.update(data, meta)
    cut = _channel()
    cut.update(
        data.__class__(data.z[:1_100], data.bins[:1_100], data.bad[:1_100]), meta.slice(0, 1_100)
    )
    back = _channel()
    back.restore(orjson.loads(orjson.dumps(cut.state())))
    back.update(rest, meta.slice(1_100, 3_000))
    assert np.array_equal(back.window_counts, events.window_counts)
