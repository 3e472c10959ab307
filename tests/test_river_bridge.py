"""River's detectors on the error stream: calibrated from the budget, one signal per
persistent rise, exact restarts, and state that cannot run code."""

from __future__ import annotations

import base64
import json
import os
import pickle

import pytest

from detectors.concept import ConceptMonitor
from detectors.river_bridge import ERROR_DETECTORS, RiverErrorDetector
from detectors.settings import DetectorSettings
from schemas.exceptions import ConfigError

from .test_concept import _pairs, _run

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
        got, _ = again.update(
            part, idx, [1_700_000_000_000 + k for k in idx], [f"e{k}" for k in idx]
        )
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
