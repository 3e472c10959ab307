"""The decision policy: one decision per episode, hysteresis, a new episode after recovery."""

from __future__ import annotations

from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Prediction
from tests.conftest import run_engine


def shifted(events, spans, amount=0.6):
    out, served = [], 0
    for event in events:
        e = event
        if isinstance(event, Prediction):
            if any(a <= served < b for a, b in spans):
                e = Prediction(
                    e.event_id,
                    e.request_id,
                    e.model_id,
                    e.model_version,
                    e.ts,
                    {**e.features, "x6": e.features["x6"] + amount},
                    e.prediction,
                )
            served += 1
        out.append(e)
    return out


def test_drift_that_returns_after_recovery_is_a_new_alert(make_stream) -> None:
    """Shift, recover for long enough, shift again: two alerts, none while drifted."""
    settings = DetectorSettings(warmup_events=5_000, window_events=2_000, cooldown_events=4_000)
    events = make_stream(scenario="stationary", n_predictions=60_000, change_at=60_000, seed=21)
    decisions = [
        d
        for d in run_engine(shifted(events, [(10_000, 20_000), (40_000, 50_000)]), settings)
        if d.kind == "data_drift"
    ]
    alerts = [d for d in decisions if d.type == "alert"]
    assert [d.features[0] for d in alerts] == ["x6", "x6"]
    assert len({d.decision_id for d in alerts}) == 2


def test_drift_without_recovery_is_a_single_alert(make_stream) -> None:
    """A drift that never goes away gives one alert (and one retrain), whatever its length."""
    settings = DetectorSettings(warmup_events=5_000, window_events=2_000, cooldown_events=4_000)
    events = make_stream(scenario="stationary", n_predictions=60_000, change_at=60_000, seed=22)
    decisions = [
        d
        for d in run_engine(shifted(events, [(10_000, 60_000)]), settings)
        if d.kind == "data_drift"
    ]
    assert [d.type for d in decisions] == ["alert", "retrain"]
