"""The categorical channel (`detectors.drift.categorical`): bucket codes, share tests up
and down per category, new categories through ``__other__``, and the missing rate."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from driftline.detectors.drift.categorical import CategoricalChannel
from driftline.detectors.drift.reference import OTHER, summarise_categorical
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta

CATEGORIES = ("card", "transfer", "cash", "crypto")
SHARES = np.array([0.5, 0.3, 0.15, 0.05])
MISSING = 0.02


def draw(rng: np.random.Generator, n: int, shares: np.ndarray = SHARES) -> list[str | None]:
    values: list[str | None] = [str(v) for v in rng.choice((*CATEGORIES, "voucher"), n, p=shares)]
    for i in np.flatnonzero(rng.random(n) < MISSING):
        values[i] = None
    return values


def channel_for(reference: list[str | None], arl: float) -> CategoricalChannel:
    settings = DetectorSettings()
    counts = Counter(v for v in reference if v is not None)
    missing = sum(v is None for v in reference)
    channel = CategoricalChannel(
        "data_drift", {"method": summarise_categorical(counts, missing, settings)}, settings
    )
    channel.calibrate(arl)
    return channel


def run(channel: CategoricalChannel, values: list[str | None], start: int = 0) -> list:
    out = []
    for lo in range(0, len(values), 2_048):
        part = values[lo : lo + 2_048]
        seq = np.arange(start + lo, start + lo + len(part))
        meta = BatchMeta(seq, 1_700_000_000_000 + seq, [f"e{i}" for i in seq])
        signals, _ = channel.update(channel.prepare([part]), meta)
        out += signals
    return out


def shares(*values: float) -> np.ndarray:
    """Category shares with the unseen ``voucher`` last."""
    return np.array(values) / sum(values)


def test_values_become_bucket_codes() -> None:
    """Known categories by their rank in the reference, anything else in ``__other__``,
    missing as -1; numbers and booleans by the string they are counted under."""
    settings = DetectorSettings()
    summary = summarise_categorical(Counter({"b": 5, "a": 9, "3": 2, "true": 1}), 0, settings)
    channel = CategoricalChannel("data_drift", {"f": summary}, settings)
    codes = channel.prepare([["a", "b", "zzz", None, 3, 3.0, True]])
    assert summary.categories == ("a", "b", "3", "true")
    assert codes[:, 0].tolist() == [0, 1, 4, -1, 2, 2, 3]


@pytest.mark.parametrize("seed", [1, 2])
def test_stationary_categories_keep_the_tests_rate(seed) -> None:
    """At a per-test ARL of 20,000, 200,000 stationary events give each share and
    missing-rate test at most twice its nominal 10 false alarms."""
    rng = np.random.default_rng(seed)
    channel = channel_for(draw(rng, 10_000, shares(*SHARES, 0.0)), arl=20_000)
    counts = Counter(s.test for s in run(channel, draw(rng, 200_000, shares(*SHARES, 0.0))))
    assert max(counts.values(), default=0) <= 20, counts


@pytest.mark.parametrize(
    ("after", "category", "detector", "ratio"),
    [
        (shares(0.45, 0.3, 0.15, 0.1, 0.0), "crypto", "cusum_share_up", 2.0),
        (shares(0.5, 0.3, 0.2, 0.0, 0.0), "crypto", "cusum_share_down", 0.0),
        (shares(0.45, 0.3, 0.15, 0.05, 0.05), OTHER, "cusum_share_up", math.inf),
    ],
)
def test_a_share_that_moves_is_named_within_a_few_times_the_information_limit(
    after, category, detector, ratio
) -> None:
    """A category that doubles, one that disappears and a category never seen in the
    reference: each is flagged first on its own bucket and direction, at the default
    budget's per-test ARL (1e9), within three times the events a CUSUM needs at best
    (ln(ARL) / KL of the new share against the old; 867 against 1,025, 902 against 412,
    145 against 71 when written), and nothing is flagged before the change."""
    rng = np.random.default_rng(5)
    before = shares(*SHARES, 0.0)
    channel = channel_for(draw(rng, 10_000, before), arl=1e9)
    assert run(channel, draw(rng, 20_000, before)) == []
    found = run(channel, draw(rng, 20_000, after), start=20_000)
    first = found[0]
    assert (first.feature, first.detector) == ("method", detector)
    assert first.config["category"] == category
    bucket = CATEGORIES.index(category) if category != OTHER else len(CATEGORIES)
    p0 = max(before[bucket], 1e-3) if category != OTHER else 0.5 / 10_000
    p1 = after[bucket] * (1 - MISSING)
    p0 *= 1 - MISSING
    kl = p1 * math.log(max(p1, 1e-12) / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    limit = math.log(1e9) / kl
    assert first.seq - 20_000 < 3 * limit, (first.seq - 20_000, limit)
    # The frequency ratio the alarm estimated: about the true one where it is finite and
    # above zero, below the design's inverse for a share gone, large for a new category.
    if ratio == 0:
        assert first.effect < 1 / DetectorSettings().category_ratio
    elif math.isinf(ratio):
        assert first.effect > 10
    else:
        assert first.effect == pytest.approx(ratio, rel=0.35)
