"""``driftline reference build``: a reference profile from training or validation data."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import outcome_from_dict, prediction_from_dict
from driftline.schemas.exceptions import ConfigError, DecodeError

DEFAULT_MAX_ROWS = 200_000
"""Rows kept (reservoir-sampled, seeded) for the summaries: quantiles and frequencies from
200k rows are as good as from millions, and memory stays bounded."""

RESERVOIR_SEED = 0
"""Fixed so the same file always gives the same profile."""

Row = tuple[dict[str, Any], Any, Any]


def _jsonl_rows(path: Path) -> Iterator[Row]:
    pending: dict[str, tuple[dict[str, Any], Any]] = {}
    labels: dict[str, Any] = {}
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{number}: each line must be a JSON object")
            kind = obj.get("type")
            try:
                if kind == "prediction":
                    p = prediction_from_dict(obj)
                    pending[p.request_id] = (dict(p.features), p.prediction)
                elif kind == "outcome":
                    o = outcome_from_dict(obj)
                    labels[o.request_id] = o.label
                elif kind is None and isinstance(obj.get("features"), dict):
                    yield obj["features"], _prediction(obj.get("prediction")), obj.get("label")
                else:
                    raise ConfigError(
                        f"{path}:{number}: expected a prediction, an outcome, or an object with "
                        "'features' (and optional 'prediction', 'label')"
                    )
            except DecodeError as exc:
                raise ConfigError(f"{path}:{number}: {exc.message}") from None
    for request_id, (features, prediction) in pending.items():
        yield features, prediction, labels.get(request_id)


def _prediction(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _csv_rows(path: Path, label_column: str, prediction_column: str) -> Iterator[Row]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ConfigError(f"{path}: the CSV file has no header row")
        for row in reader:
            values = {k: _csv_value(v or "") for k, v in row.items() if k is not None}
            label = values.pop(label_column, None)
            prediction = values.pop(prediction_column, None)
            yield values, prediction, label


def build_profile(
    path: str | Path,
    *,
    model_id: str | None,
    model_version: str | None = None,
    name: str | None = None,
    settings: DetectorSettings | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    label_column: str = "label",
    prediction_column: str = "prediction",
) -> ReferenceProfile:
    """Summarise a JSONL or CSV file of training/validation events into a profile."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"input file {path} does not exist")
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, label_column, prediction_column)
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise ConfigError(f"input file {path}: use a .jsonl or .csv file")
    rng = random.Random(RESERVOIR_SEED)
    sample: list[Row] = []
    for seen, row in enumerate(rows):
        if len(sample) < max_rows:
            sample.append(row)
        else:
            j = rng.randint(0, seen)
            if j < max_rows:
                sample[j] = row
    if not sample:
        raise ConfigError(f"input file {path} holds no rows")
    builder = ReferenceBuilder(settings or DetectorSettings(), max_rows)
    builder.extend(sample)
    return builder.build(name or path.stem, model_id, model_version)
