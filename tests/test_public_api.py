"""Public names resolve, and the JSON Schema documents agree with the decoder."""

from __future__ import annotations

import importlib

import jsonschema
import orjson
import pytest

from driftline.detectors.drift.reference import ReferenceBuilder
from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas import DecodeError, decode, load_schema
from driftline.schemas.deadletter import DeadLetter
from tests import ROOT
from tests.conftest import run_engine
from tests.schemas.test_decode import VALID


@pytest.mark.parametrize(
    "package", ["driftline.schemas", "driftline.detectors", "driftline.streams"]
)
def test_every_exported_name_resolves(package: str) -> None:
    """Each name in __all__ is importable from the package."""
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize(
    "name", ["prediction", "outcome", "decision", "deadletter", "reference_profile"]
)
def test_schemas_are_valid_json_schema(name: str) -> None:
    """Each shipped document is itself a valid draft 2020-12 schema."""
    jsonschema.Draft202012Validator.check_schema(load_schema(name))


SAMPLES = [
    VALID,
    {**VALID, "prediction": "approve", "role": "canary", "segment": {"region": "eu"}},
    {**VALID, "prediction": ["i1", "i2"], "action": ["i1"], "exploration": True},
    {**VALID, "ts": "2023-11-14T22:13:20Z", "scores": {"yes": 0.7, "no": 0.3}},
    {**VALID, "features": {"a": [1]}},
    {**VALID, "prediction": True},
    {**VALID, "role": "boss"},
    {**VALID, "scores": {"a": 2}},
    {**VALID, "segment": {"r": 1}},
    {**VALID, "event_id": ""},
    {**VALID, "ts": 1_700_000_000},
    {k: v for k, v in VALID.items() if k != "features"},
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_decoder_agrees_with_prediction_schema(sample: dict) -> None:
    """The hand-written decoder accepts exactly what the JSON Schema accepts."""
    validator = jsonschema.Draft202012Validator(
        load_schema("prediction"), format_checker=jsonschema.FormatChecker()
    )
    schema_ok = validator.is_valid(sample)
    try:
        decode(orjson.dumps(sample))
        decoder_ok = True
    except DecodeError:
        decoder_ok = False
    assert decoder_ok == schema_ok


def test_decisions_and_profiles_match_their_schemas(make_stream) -> None:
    """Real decisions, dead letters and profiles validate against the shipped schemas."""
    events = make_stream(scenario="mean_shift", n_predictions=20_000, change_at=12_000, seed=3)
    decisions = run_engine(events, engine=Engine(DetectorSettings(warmup_events=5_000)))
    assert decisions
    validator = jsonschema.Draft202012Validator(load_schema("decision"))
    for d in decisions:
        validator.validate(orjson.loads(orjson.dumps(d.to_dict(emitted_at=1))))
    letter = DeadLetter("invalid_json", "bad", "predictions", 3, 17, b"\xff{")
    jsonschema.validate(orjson.loads(letter.to_json(5)), load_schema("deadletter"))
    builder = ReferenceBuilder(DetectorSettings(), 1_000)
    for e in events[:1_500]:
        if hasattr(e, "features"):
            builder.add(e.features, e.prediction, 1)
    profile = builder.build("p", "m")
    jsonschema.validate(
        orjson.loads(orjson.dumps(profile.to_dict())), load_schema("reference_profile")
    )


def test_readme_documents_every_detector_setting_with_its_default() -> None:
    """The README's settings table names every setting with its current default."""
    from dataclasses import fields  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`") and cells[1].endswith("`"):
            rows.setdefault(cells[1].strip("`"), cells[2])
    undocumented = []
    for f in fields(DetectorSettings):
        value = f.default
        if isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, int):
            shown = f"{value:,}"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        if rows.get(f.name) != shown:
            undocumented.append((f.name, shown, rows.get(f.name)))
    assert undocumented == []
