"""Configuration layering: defaults < TOML < DRIFTLINE_* environment < flags."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from driftline.schemas.exceptions import ConfigError
from driftline.streams.cli import _worker_parts, build_parser, main
from driftline.streams.config import Topics, load_config


def parts(tmp_path, toml: str, *flags: str):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return _worker_parts(build_parser().parse_args(["worker", "--config", str(path), *flags]))


def test_environment_overrides_file_and_flags_override_environment(tmp_path, monkeypatch) -> None:
    """Each later source wins, and strings from the environment get the field's type."""
    toml = (
        '[worker]\ngroup_id = "from-file"\ncheckpoint_interval_s = 2.0\n'
        "[detectors]\nwarmup_events = 500\n"
    )
    monkeypatch.setenv("DRIFTLINE_GROUP_ID", "from-env")
    monkeypatch.setenv("DRIFTLINE_WARMUP_EVENTS", "700")
    monkeypatch.setenv("DRIFTLINE_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("DRIFTLINE_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("DRIFTLINE_FEEDBACK_ENABLED", "False")
    config, kafka, worker = parts(tmp_path, toml, "--group-id", "from-flag")
    assert (worker.group_id, worker.checkpoint_interval_s) == ("from-flag", 2.0)
    assert config.detectors.warmup_events == 700
    assert config.detectors.feedback_enabled is False
    assert (kafka.enable_idempotence, kafka.bootstrap_servers) == (False, "env:9092")


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("DRIFTLINE_METRICS_PORT", "nine", "DRIFTLINE_METRICS_PORT='nine' is not a valid int"),
        ("DRIFTLINE_ENABLE_IDEMPOTENCE", "maybe", "is not a valid bool"),
        ("DRIFTLINE_FEEDBACK_ENABLED", "maybe", "feedback_enabled must be true or false"),
        ("DRIFTLINE_SECURITY_PROTOCOL", "SASL_SSL", "needs sasl_mechanism"),
        (
            "DRIFTLINE_COMPRESSION_TYPE",
            "brotli",
            "compression_type must be one of none, gzip, snappy, lz4, zstd, got 'brotli'",
        ),
    ],
)
def test_bad_environment_values_are_named(tmp_path, monkeypatch, env, value, message) -> None:
    """A wrong environment value fails with the variable's name and what was expected."""
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=message):
        parts(tmp_path, "")


def test_unknown_sections_and_worker_settings_are_refused(tmp_path) -> None:
    """Typos in the TOML file are errors, not silently ignored settings."""
    with pytest.raises(ConfigError, match="unknown section"):
        parts(tmp_path, "[wroker]\n")
    with pytest.raises(ConfigError, match="unknown worker setting"):
        parts(tmp_path, "[worker]\ncheckpoint_every = 3\n")
    with pytest.raises(ConfigError, match="unknown kafka setting"):
        parts(tmp_path, "[kafka]\nbootstrap = 'x'\n")
    path = tmp_path / "m.toml"
    path.write_text("[models.fraud]\nwarmup_evnts = 1\n")
    with pytest.raises(ConfigError, match="warmup_evnts"):
        load_config(path)


def test_a_removed_setting_says_what_replaced_it(tmp_path) -> None:
    """A setting of the fixed-window feedback tests is refused with what to use instead."""
    path = tmp_path / "old.toml"
    path.write_text("[detectors]\nfeedback_persistence = 3\n")
    with pytest.raises(ConfigError, match=r"feedback_persistence was removed.*feedback_alpha"):
        load_config(path)


def test_topics_create_makes_every_topic(broker, tmp_path, capsys) -> None:
    """`driftline topics create` creates all topics once; a second run changes nothing."""
    flags = ["--bootstrap-servers", broker, "--partitions", "3"]
    names = {f"--{role}-topic": f"tc.{role}" for role in Topics.names()}
    args = ["topics", "create", *flags, *[x for kv in names.items() for x in kv]]
    assert main(args) == 0
    assert main(args) == 0
    assert "created: none" in capsys.readouterr().out.splitlines()[-1]

    async def described() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            topics = await admin.describe_topics(list(names.values()))
            return {t["topic"]: len(t["partitions"]) for t in topics}
        finally:
            await admin.close()

    found = asyncio.run(described())
    assert found == {
        name: 1 if name.endswith(("state", "references")) else 3 for name in names.values()
    }


def test_settings_out_of_range_are_one_line_each(tmp_path) -> None:
    """A state trim interval below 0, an unknown channel detector (globally or for one
    model), a switch that is not a boolean and a negative canary period are refused with
    the setting's name."""
    with pytest.raises(ConfigError, match="state_trim_interval_s must be 0 or positive"):
        parts(tmp_path, "[worker]\nstate_trim_interval_s = -1\n")
    path = tmp_path / "d.toml"
    path.write_text('[detectors]\ndata_detector = "adwn"\n')
    with pytest.raises(ConfigError, match=r"data_detector 'adwn' is not known; use one of cusum"):
        load_config(path)
    path.write_text('[models.fraud]\nprediction_detector = "page_hinkley"\n')
    with pytest.raises(ConfigError, match=r"prediction_detector 'page_hinkley' is not known"):
        load_config(path)
    path.write_text('[models.dispatch]\nscores_are_probabilities = "maybe"\n')
    with pytest.raises(ConfigError, match=r"scores_are_probabilities must be true or false"):
        load_config(path)
    path.write_text("[models.dispatch]\nscores_are_probabilities = false\n")
    assert not load_config(path).model_detectors["dispatch"].scores_are_probabilities
    path.write_text("[models.fraud]\ncanary_items_ms = -1\n")
    with pytest.raises(ConfigError, match=r"canary_items_ms must be 0 or positive, got -1"):
        load_config(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[detectors]\nslice_ms = 1.5\n", "detector setting slice_ms must be an integer, got 1.5"),
        ("[models.fraud]\nwarmup_events = true\n", "warmup_events must be an integer, got True"),
        ("[detectors]\nconcept_detector = 3\n", "concept_detector must be a string, got 3"),
        ('[worker]\nidle_after_ms = "2s"\n', "worker setting idle_after_ms must be an integer"),
        ("[worker]\ncheckpoint_interval_s = true\n", "checkpoint_interval_s must be a number"),
        ("[worker]\ngroup_id = 5\n", "worker setting group_id must be a string, got 5"),
        ('[kafka]\nenable_idempotence = "yes"\n', "enable_idempotence must be true or false"),
        ('[input]\npair_ttl_ms = "1m"\n', r"\[input\] setting pair_ttl_ms must be an integer"),
        ("[topics]\nalerts = 7\n", r"\[topics\] setting alerts must be a string, got 7"),
        (
            '[topics]\ndecisions = "d"\n',
            r"unknown \[topics\] setting\(s\): decisions; known: alerts",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_naming_the_setting(tmp_path, toml, message) -> None:
    """Every settings table is checked against its fields' types when it is read: a
    float slice length, a string duration, a number for a name, a string for a switch.
    Before, most reached the worker as they were (a TypeError once running, or a float
    where counts are kept)."""
    with pytest.raises(ConfigError, match=message) as raised:
        parts(tmp_path, toml)
    assert "\n" not in str(raised.value)


def test_integers_are_numbers_for_settings_that_take_any_number(tmp_path) -> None:
    """TOML writes whole numbers without a point: a setting that takes any number takes
    them, and keeps its value."""
    config, _, worker = parts(
        tmp_path,
        "[worker]\ncheckpoint_interval_s = 2\n[detectors]\nfalse_alarm_budget_events = 500000\n",
    )
    assert worker.checkpoint_interval_s == 2
    assert config.detectors.false_alarm_budget_events == 500_000


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("detectors = 3\n", r"\[detectors\] must be a table of settings"),
        ("worker = [1]\n", r"\[worker\] must be a table of settings"),
        ("[models]\nfraud = 3\n", r"models must be tables of settings, \[models.<model_id>\]"),
        ("references = 5\n", "references must be a list of reference profile paths"),
        ("references = [5]\n", "references must be a list of reference profile paths"),
    ],
)
def test_a_section_of_the_wrong_shape_is_one_line(tmp_path, toml, message) -> None:
    """A section that is not the table (or list) its settings are read from is named;
    these were Python tracebacks (a TypeError or an AttributeError)."""
    with pytest.raises(ConfigError, match=message) as raised:
        parts(tmp_path, toml)
    assert "\n" not in str(raised.value)


def test_one_reference_path_may_be_written_as_a_string(tmp_path) -> None:
    """``references = "p.json"`` is the list of that one path, not of its characters."""
    with pytest.raises(ConfigError, match=r"reference profile p\.json does not exist"):
        parts(tmp_path, 'references = "p.json"\n')
