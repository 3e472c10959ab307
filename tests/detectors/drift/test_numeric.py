"""The numeric channel's sequential tests keep their false-alarm rate on the features real
data has: bounded, integer-valued, tied, heavy-tailed, and detect shifts on them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from driftline.detectors.drift.numeric import NumericChannel
from driftline.detectors.drift.reference import summarise_numeric
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta

ARL = 20_000
"""Per-test average run length under the null: small, so false alarms are common enough
to count in a test (the default budget would need billions of events)."""

EVENTS = 200_000
NOMINAL = EVENTS / ARL

FEATURES = {
    "amount_uniform": lambda rng, n: rng.uniform(0.0, 1000.0, n),
    "age_integer": lambda rng, n: rng.integers(18, 91, n).astype(np.float64),
    "year_integer": lambda rng, n: rng.integers(1990, 2025, n).astype(np.float64),
    "count_poisson": lambda rng, n: rng.poisson(3.0, n).astype(np.float64),
    "income_lognormal": lambda rng, n: rng.lognormal(10.0, 1.2, n),
    "amount_pareto": lambda rng, n: rng.pareto(1.5, n),
}


def _channel(
    reference: dict[str, np.ndarray], settings: DetectorSettings, arl: float = ARL
) -> NumericChannel:
    summaries = {name: summarise_numeric(values, 0, settings) for name, values in reference.items()}
    channel = NumericChannel("data_drift", summaries, settings)
    channel.calibrate(arl)
    return channel


def _signals(channel: NumericChannel, x: np.ndarray) -> list:
    out = []
    for start in range(0, len(x), 4096):
        part = x[start : start + 4096]
        seq = np.arange(start, start + len(part))
        meta = BatchMeta(seq, 1_700_000_000_000 + 10 * seq, [f"e{i}" for i in seq])
        signals, _ = channel.update(channel.prepare(part), meta)
        out += signals
    return out


@pytest.mark.parametrize("seed", [3, 4])
def test_sequential_tests_keep_their_rate_on_bounded_and_tied_features(seed) -> None:
    """On stationary bounded, integer and heavy-tailed features every CUSUM family stays
    within twice its nominal count (before mid-rank extremes, the variance tests on integer
    ages and years gave 10 to 40 times it)."""
    rng = np.random.default_rng(seed)
    settings = DetectorSettings()
    names = list(FEATURES)
    channel = _channel({n: FEATURES[n](rng, settings.warmup_events) for n in names}, settings)
    live = np.column_stack([FEATURES[n](rng, EVENTS) for n in names])
    counts = Counter(s.test for s in _signals(channel, live))
    over = {k: v for k, v in counts.items() if ":cusum_" in k and v > 2 * NOMINAL}
    assert over == {}, f"nominal {NOMINAL:.0f} per test"


@pytest.mark.parametrize("name", ["age_integer", "year_integer", "amount_uniform"])
def test_mean_shift_on_a_bounded_feature_is_seen_quickly(name) -> None:
    """At a per-test ARL of 1e9 (what the default budget gives), a +0.3 sd shift of a
    bounded or integer feature is flagged by the mean test within about twice the
    information limit, ln(1e9) / (0.3^2 / 2) = 460 events."""
    rng = np.random.default_rng(11)
    settings = DetectorSettings()
    draw = FEATURES[name]
    channel = _channel({name: draw(rng, settings.warmup_events)}, settings, arl=1e9)
    before = draw(rng, 20_000)
    after = draw(rng, 20_000)
    after = after + 0.3 * after.std()
    if name != "amount_uniform":
        after = np.round(after)
    signals = _signals(channel, np.concatenate([before, after])[:, None])
    hits = [s for s in signals if s.detector == "cusum_mean_up" and s.seq >= 20_000]
    assert [s for s in signals if s.seq < 20_000 and s.detector == "cusum_mean_up"] == []
    assert hits, "no mean-up signal after the shift"
    assert hits[0].seq - 20_000 <= 1_000
