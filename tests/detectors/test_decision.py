"""The one decision builder: what every decision's evidence holds, and what it refuses."""

from __future__ import annotations

import jsonschema
import pytest

from driftline.detectors.decision import Impact, Trigger, build_decision
from driftline.schemas import load_schema


def _decision(**changes):  # type: ignore[no-untyped-def]
    args = {
        "id_parts": ("m", "v1", "alert", "data_drift", 0),
        "type_": "alert",
        "kind": "data_drift",
        "model_id": "m",
        "model_version": "v1",
        "severity": "warning",
        "detector": "cusum",
        "config": {"arl": 1e7},
        "statistic": "llr",
        "value": 21.5,
        "threshold": 16.1,
        "p_value": None,
        "first_ts": 1_000,
        "count": 400,
        "reference": "warmup:10000 events",
        "trigger": Trigger(9_000, 77),
        "impact": Impact(1.0, 0.3, "sd"),
        "recommendation": "Look at x0.",
    }
    return build_decision(**{**args, **changes})


def test_a_built_decision_is_valid_and_its_window_ends_at_its_trigger() -> None:
    d = _decision(details={"signals": [{"feature": "x0"}]}, features=("x0",))
    jsonschema.validate(d.to_dict(emitted_at=10_000), load_schema("decision"))
    assert (d.ts, d.seq) == (9_000, 77)
    assert d.evidence["window"] == {"first_ts": 1_000, "last_ts": 9_000, "count": 400}
    assert "trigger_event_id" not in d.evidence  # a window, not one event, triggered it
    assert d.evidence["signals"] == [{"feature": "x0"}]
    assert _decision(trigger=Trigger(9_000, 77, "e-77")).evidence["trigger_event_id"] == "e-77"
    assert d.decision_id == _decision().decision_id != _decision(id_parts=("m", 1)).decision_id


def test_a_rollback_names_both_versions() -> None:
    d = _decision(type_="rollback", severity="critical", rollback=("v2", "v1"))
    assert (d.from_version, d.to_version) == ("v2", "v1")
    assert d.to_dict(0)["to_version"] == "v1"
    assert "from_version" not in _decision().to_dict(0)


@pytest.mark.parametrize(("type_", "severity"), [("page", "warning"), ("alert", "fatal")])
def test_an_unknown_type_or_severity_is_refused(type_: str, severity: str) -> None:
    with pytest.raises(ValueError, match="not a decision"):
        _decision(type_=type_, severity=severity)
