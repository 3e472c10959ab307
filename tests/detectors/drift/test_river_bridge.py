"""River's detectors on the error stream: calibrated from the budget, one signal per
persistent rise, exact restarts, and state that cannot run code."""

from __future__ import annotations

import base64
import json
import os
import pickle

import pytest

from driftline.detectors.drift.concept import ConceptMonitor
from driftline.detectors.drift.river_bridge import ERROR_DETECTORS, RiverErrorDetector
from driftline.detectors.settings import CHANNEL_DETECTORS as CHOICES
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.exceptions import ConfigError
from tests.detectors.drift.test_concept import _batch, _pairs, _run

ARL = 1e8


@pytest.mark.parametrize("name", ERROR_DETECTORS)
def test_each_river_detector_finds_a_rise_once_and_nothing_before(name) -> None:
    """0.30 -> 0.55 after 30k labels, lasting 100k: one signal, after the rise, within
    6,000 labels; none on the 30k before. (On a rise to 0.45 ADWIN, DDM and HDDM_A took
    375-2,452 labels and HDDM_W none in 100k at this budget: its EWMA bound is weak at
    strict confidences; the CUSUM bank took 212.)"""
    settings = DetectorSettings(concept_detector=name)
    signals, recoveries, _ = _run(_pairs([(30_000, 0.3), (100_000, 0.55)], 11), settings, arl=ARL)
    assert [s.detector for s in signals] == [f"river_{name}"]
    assert 30_000 <= signals[0].seq <= 36_000
    assert recoveries == []
    assert signals[0].config["river_detector"] == name


@pytest.mark.parametrize("name", ERROR_DETECTORS)
def test_a_restored_river_detector_continues_exactly(name) -> None:
    """State through JSON mid-stream (during the rise) gives the signals of one run."""
    settings = DetectorSettings(concept_detector=name)
    pairs = _pairs([(20_000, 0.3), (20_000, 0.6), (40_000, 0.3)], 12)
    whole, whole_rec, _ = _run(pairs, settings, arl=ARL)
    first, _, monitor = _run(pairs[:30_000], settings, arl=ARL)
    again = ConceptMonitor(settings, None, offline=False)
    again.calibrate(ARL)
    again.restore(json.loads(json.dumps(monitor.state())))
    tail = []
    for i in range(30_000, len(pairs), 2_000):
        part = pairs[i : i + 2_000]
        idx = list(range(i, i + len(part)))
        got, _ = again.update(_batch(part, idx))
        tail += got
    assert [(s.seq, s.value) for s in first + tail] == [(s.seq, s.value) for s in whole]
    assert whole_rec  # the rise ended and was seen to end


def test_state_that_would_run_code_is_refused() -> None:
    """A detector state record holding anything but River's classes is not loaded."""
    detector = RiverErrorDetector("adwin", ARL, 0.3, 0.36)
    state = detector.state()
    state["detector"] = base64.b64encode(pickle.dumps(os.system)).decode("ascii")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        RiverErrorDetector("adwin", ARL, 0.3, 0.36).restore(state)


def test_an_unknown_detector_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="concept_detector 'kswin' is not known"):
        DetectorSettings(concept_detector="kswin")


# -- numeric channels (data_detector, prediction_detector) ------------------------------

CHANNEL_ARL = 1e7
CHANNEL_DETECTORS = [c for c in CHOICES if c != "cusum"]


def _scores(seed: int, n: int, shifts: list[tuple[int, int, float]], features: int = 2):
    """Unit normal scores with ``shift`` added to feature 0 on events [start, stop)."""
    import numpy as np  # noqa: PLC0415

    z = np.random.default_rng(seed).normal(size=(n, features))
    for start, stop, shift in shifts:
        z[start:stop, 0] += shift
    return z, np.ones_like(z, dtype=bool)


@pytest.mark.parametrize("name", CHANNEL_DETECTORS)
def test_each_channel_detector_finds_a_shift_once_and_its_return(name) -> None:
    """Feature 0's scores move up 1 sd from event 4,000 to 12,000, then return: one
    detection after the move (within 2,000 events), its shift estimated upward, one
    recovery after the return, and nothing on feature 1 (stationary, 20,000 events) or
    before the move. KSWIN runs on a shorter stream: it costs a KS test per event.

    HDDM_W finds nothing, and that is River's bound, not a fault of the wrapping: its
    McDiarmid bound on an EWMA (lambda 0.05) at a confidence of 1e-7 is about 0.45 of the
    value range, more than a 3 sd move of scores clipped to +-4 (tried up to 3 sd)."""
    from driftline.detectors.drift.river_bridge import RiverChannel  # noqa: PLC0415

    n, stop = (20_000, 12_000) if name != "kswin" else (9_000, 7_000)
    z, valid = _scores(3, n, [(4_000, stop, 1.0)])
    channel = RiverChannel(name, 2, 10)
    channel.calibrate(CHANNEL_ARL)
    alarms = channel.update(z, valid)
    found = [a for a in alarms if not a.recovered]
    back = [a for a in alarms if a.recovered]
    if name == "hddm_w":
        assert alarms == []
        return
    assert [a.column for a in found] == [10], alarms
    assert 4_000 <= found[0].row <= 6_000
    assert found[0].statistic > 0.3
    assert [a.column for a in back] == [10] and back[0].row > stop


def test_a_downward_shift_latches_downward_and_recovers() -> None:
    """A move down is watched for its return from below (a recovery test built for a
    rise would release at once)."""
    from driftline.detectors.drift.river_bridge import RiverChannel  # noqa: PLC0415

    z, valid = _scores(4, 30_000, [(5_000, 20_000, -0.8)])
    channel = RiverChannel("adwin", 2, 0)
    channel.calibrate(CHANNEL_ARL)
    alarms = channel.update(z, valid)
    assert [(a.column, a.recovered) for a in alarms] == [(0, False), (0, True)]
    assert alarms[0].statistic < -0.3
    assert alarms[1].row > 20_000


@pytest.mark.parametrize(("name", "shift"), [("adwin", 0.5), ("hddm_a", 1.0)])
def test_river_on_the_data_channel_through_the_engine(name, shift, make_stream) -> None:
    """``data_detector`` through the whole engine: a mean shift on one feature (large
    enough that the detector, not the window test, is first) is one data_drift alert
    naming it and the detector, none on a stationary stream of the same length; state
    through JSON mid-stream gives the same decisions."""
    import orjson  # noqa: PLC0415

    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from tests.conftest import run_engine, served_at  # noqa: PLC0415

    settings = DetectorSettings(data_detector=name, prediction_detector=name)
    quiet = make_stream(scenario="stationary", n_predictions=40_000, change_at=40_000, seed=8)
    assert run_engine(quiet, settings) == []
    events = make_stream(
        scenario="mean_shift", n_predictions=40_000, change_at=20_000, seed=8, mean_shift_sd=shift
    )
    found = run_engine(events, settings)
    drift = [d for d in found if (d.type, d.kind) == ("alert", "data_drift")]
    assert len(drift) == 1 and drift[0].features[0] == "x0"
    assert served_at(events)[drift[0].seq] > 20_000
    assert drift[0].detector["name"] == f"river_{name}"
    first = Engine(settings)
    before = run_engine(events[:25_000], engine=first)
    second = Engine(settings)
    second.restore(orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY)))
    after = run_engine(events[25_000:], engine=second)
    assert [d.decision_id for d in before + after] == [d.decision_id for d in found]


def test_an_unknown_channel_detector_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"data_detector 'page' is not known; use one of"):
        DetectorSettings(data_detector="page")
