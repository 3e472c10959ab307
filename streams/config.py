"""Configuration: defaults, a TOML file, ``DRIFTLINE_*`` environment variables, flags.

Later sources win: defaults < TOML file < environment < command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import orjson

from driftline.detectors.drift.reference import ReferenceProfile
from driftline.detectors.settings import DetectorSettings, check_table
from driftline.schemas.config_types import KIND_NAMES
from driftline.schemas.exceptions import ConfigError
from driftline.schemas.formats import InputSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Topics:
    """Kafka topic names (the defaults are the public contract)."""

    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "driftline.alerts"
    retrain: str = "driftline.retrain"
    rollback: str = "driftline.rollback"
    deadletter: str = "driftline.deadletter"
    state: str = "driftline.state"
    """Checkpoints of detector state with the input offsets they cover (compacted)."""
    references: str = "driftline.references"
    """Reference profiles published to running workers (compacted, low volume)."""
    summaries: str = "driftline.summaries"
    """Each input partition's routed items, keyed by model: the model stage's input."""
    rekeyed: str = "driftline.rekeyed"
    """Foreign input formats only: their records and the outcomes, keyed by correlation id
    (a repartition topic; see `streams.worker.rekey`). Unused with the driftline format."""

    def for_decision(self, decision_type: str) -> str:
        return {"alert": self.alerts, "retrain": self.retrain, "rollback": self.rollback}[
            decision_type
        ]

    def all(self) -> list[str]:
        return [getattr(self, name) for name in self.names()]

    @classmethod
    def names(cls) -> list[str]:
        """The topic roles: ``predictions``, ``outcomes``, ``alerts``..."""
        return [f.name for f in fields(cls)]

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """Every topic named ``<prefix>.<role>`` (separate deployments, tests)."""
        return cls(**{name: f"{prefix}.{name}" for name in cls.names()})


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `driftline worker` and `driftline replay` are configured with."""

    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    model_detectors: Mapping[str, DetectorSettings] = field(default_factory=dict)
    references: Mapping[str, ReferenceProfile] = field(default_factory=dict)
    topics: Topics = field(default_factory=Topics)
    worker: Mapping[str, Any] = field(default_factory=dict)
    """``[worker]`` as given (validated by `streams.worker.worker.WorkerSettings`)."""
    kafka: Mapping[str, Any] = field(default_factory=dict)
    """``[kafka]`` as given (validated by `streams.kafka.KafkaSettings`)."""
    input: InputSettings = field(default_factory=InputSettings)
    """``[input]``: the input topics' format and how to read it."""


def load_profile(path: str | Path) -> ReferenceProfile:
    """Read a reference profile file, naming the file in any error."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"reference profile {path} does not exist") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"reference profile {path} is not valid JSON: {exc}") from None
    try:
        return ReferenceProfile.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def profile_key(profile: ReferenceProfile, path: str | Path) -> str:
    if not profile.model_id:
        raise ConfigError(
            f"reference profile {path} names no model_id; rebuild it with "
            "'driftline reference build --model-id ...'"
        )
    return (
        f"{profile.model_id}@{profile.model_version}" if profile.model_version else profile.model_id
    )


def _env_overrides(prefix: str = "DRIFTLINE_") -> dict[str, Any]:
    known = {f.name for f in fields(DetectorSettings)}
    out: dict[str, Any] = {}
    for name in known:
        value = os.environ.get(prefix + name.upper())
        if value is not None:
            out[name] = value
    return out


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
"""How an environment variable spells a boolean setting (any case)."""


def _coerce(values: Mapping[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(DetectorSettings)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = types.get(key)
        if isinstance(value, str) and kind in ("int", "float"):
            try:
                out[key] = int(value) if kind == "int" else float(value)
            except ValueError:
                raise ConfigError(
                    f"setting {key} must be {KIND_NAMES[kind]}, got {value!r}"
                ) from None
        elif isinstance(value, str) and kind == "bool":  # from the environment
            if value.lower() not in _BOOL_WORDS:
                raise ConfigError(f"setting {key} must be true or false, got {value!r}")
            out[key] = _BOOL_WORDS[value.lower()]
        else:
            out[key] = value
    return out


TABLES = ("detectors", "topics", "worker", "kafka", "input")
"""Sections of the config file that are tables of settings."""


def _check_shape(data: Mapping[str, Any], path: str | Path | None) -> list[str]:
    """Check that each section has the shape its settings are read from (a table, a
    table of tables, a list of paths); the reference profile paths listed
    (``references = "p.json"`` is a list of one)."""
    for name in TABLES:
        if not isinstance(data.get(name, {}), dict):
            raise ConfigError(f"config file {path}: [{name}] must be a table of settings")
    models = data.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ConfigError(
            f"config file {path}: models must be tables of settings, [models.<model_id>]"
        )
    references = data.get("references", [])
    if isinstance(references, str):
        return [references]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise ConfigError(
            f"config file {path}: references must be a list of reference profile paths"
        )
    return references


def load_config(
    path: str | Path | None = None,
    references: list[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from a TOML file, the environment and explicit overrides.

    The TOML file may hold ``[detectors]`` (settings for every model),
    ``[models.<model_id>]`` (per-model overrides), ``[topics]``, ``[worker]`` and
    ``references = ["profile.json", ...]``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    sections = {"detectors", "models", "topics", "worker", "kafka", "references", "input"}
    unknown = set(data) - sections
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(sections))}"
        )
    listed = _check_shape(data, path)
    base_values = {**data.get("detectors", {}), **_coerce(_env_overrides()), **(overrides or {})}
    detectors = DetectorSettings.from_dict(_coerce(base_values))
    model_detectors = {
        model: DetectorSettings.from_dict({**detectors.to_dict(), **_coerce(values)})
        for model, values in data.get("models", {}).items()
    }
    topic_names = data.get("topics", {})
    try:
        check_table(Topics, topic_names, "[topics]")
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    topics = Topics(**topic_names)
    profiles: dict[str, ReferenceProfile] = {}
    for ref in [*listed, *(references or [])]:
        profile = load_profile(ref)
        profiles[profile_key(profile, ref)] = profile
    input_values = dict(data.get("input", {}))
    env_format = os.environ.get("DRIFTLINE_INPUT_FORMAT")
    if env_format:
        input_values["format"] = env_format
    try:
        input_settings = InputSettings.from_mapping(input_values)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}" if path else str(exc)) from None
    return Config(
        detectors,
        model_detectors,
        profiles,
        topics,
        data.get("worker", {}),
        data.get("kafka", {}),
        input_settings,
    )


def layered(cls: type[T], toml: Mapping[str, Any], flags: Mapping[str, Any]) -> T:
    """A settings dataclass from its TOML table, ``DRIFTLINE_<FIELD>`` variables and flags
    (later wins); strings from the environment are converted to the field's type."""
    values: dict[str, Any] = dict(toml)
    for f in fields(cls):  # type: ignore[arg-type]
        env = os.environ.get(f"DRIFTLINE_{f.name.upper()}")
        if env is not None:
            values[f.name] = _convert(f.name, str(f.type), env)
    values.update({k: v for k, v in flags.items() if v is not None})
    from_mapping = getattr(cls, "from_mapping", None)
    return from_mapping(values) if from_mapping else cls(**values)


def _convert(name: str, kind: str, text: str) -> Any:
    try:
        if kind.startswith("bool"):
            if text.lower() not in _BOOL_WORDS:
                raise ValueError
            return _BOOL_WORDS[text.lower()]
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(
            f"environment variable DRIFTLINE_{name.upper()}={text!r} is not a valid {kind}"
        ) from None
    return text


def required_topics(config: Config) -> list[str]:
    """Every topic a worker with this configuration reads or writes (what must exist
    before it starts): the re-keyed topic only for foreign formats, their input topics
    instead of the predictions topic (Seldon's model topics are found by pattern)."""
    t = config.topics
    names = [n for n in t.all() if n not in (t.predictions, t.rekeyed)]
    if not config.input.foreign:
        return [t.predictions, *names]
    names.append(t.rekeyed)
    if config.input.format != "seldon":
        names += list(config.input.topics) or [t.predictions]
    return names
