"""docker-compose.yml cannot run here (no Docker): check that its wiring agrees with the
worker's configuration, the CLI and the Prometheus/Grafana files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields

import pytest
import yaml

from driftline.detectors.settings import DetectorSettings
from driftline.streams.cli import build_parser
from driftline.streams.kafka import KafkaSettings
from driftline.streams.metrics import Metrics
from driftline.streams.worker import WorkerSettings
from tests import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_are_all_there() -> None:
    """Kafka (KRaft), topic creation, worker, Prometheus, Alertmanager and Grafana."""
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "worker", "prometheus", "alertmanager", "grafana"}
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(kafka_env)


def test_worker_environment_names_real_settings() -> None:
    """Every DRIFTLINE_* variable in the compose file is a setting the worker reads."""
    known = {
        f"DRIFTLINE_{f.name.upper()}"
        for cls in (KafkaSettings, WorkerSettings, DetectorSettings)
        for f in fields(cls)
    } | {"DRIFTLINE_INPUT_FORMAT"}
    for name in ("topics", "worker"):
        env = compose()["services"][name].get("environment", {})
        assert set(env) <= known, set(env) - known


def test_bootstrap_servers_point_at_the_internal_listener() -> None:
    """Worker and topic job reach Kafka on the listener Kafka advertises inside compose."""
    services = compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    internal = re.search(r"INTERNAL://([^,]+)", advertised).group(1)
    for name in ("topics", "worker"):
        assert services[name]["environment"]["DRIFTLINE_BOOTSTRAP_SERVERS"] == internal


def test_commands_parse_and_metrics_port_is_scraped() -> None:
    """The worker and topic commands parse; Prometheus scrapes the worker's metrics port."""
    services = compose()["services"]
    parser = build_parser()
    args = parser.parse_args(services["worker"]["command"])
    parser.parse_args(services["topics"]["command"])
    assert f"{args.metrics_port}:{args.metrics_port}" in services["worker"]["ports"]
    assert f"{args.ui_port}:{args.ui_port}" in services["worker"]["ports"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{args.metrics_port}"]


def test_grafana_provisioning_and_dashboard_queries() -> None:
    """Mounted provisioning files exist and every dashboard query uses a real metric."""
    volumes = compose()["services"]["grafana"]["volumes"]
    for volume in volumes:
        assert (ROOT / volume.split(":")[0]).exists(), volume
    names = {m.name for m in Metrics().registry.collect()}
    exported = set()
    for name in names:
        exported |= {name, f"{name}_total", f"{name}_bucket"}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    for panel in dashboard["panels"]:
        for metric in re.findall(r"driftline_[a-z_]+", panel["targets"][0]["expr"]):
            assert metric in exported, metric


def _exported_metrics() -> set[str]:
    exported = set()
    for name in {m.name for m in Metrics().registry.collect()}:
        exported |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return exported


def _rules() -> list[dict]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_use_real_metrics_bounded_labels_and_a_runbook() -> None:
    """Every alerting rule queries metrics the worker exports (or Prometheus' own up),
    has a for, a severity, a summary and a runbook that exists in the README, and groups
    only by bounded labels (never a model id)."""
    exported = _exported_metrics()
    readme = (ROOT / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("### ") or line.startswith("#### ")
    }
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "DriftlineRollbackDecided",
        "DriftlineWorkerDown",
        "DriftlineConsumerLagHigh",
        "DriftlineDeadLetterRate",
        "DriftlineCheckpointStale",
    }
    for rule in rules:
        for metric in re.findall(r"driftline_[a-z_]+", rule["expr"]):
            assert metric in exported, (rule["alert"], metric)
        assert "for" in rule and rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, (rule["alert"], anchor)
        for grouping in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            assert set(map(str.strip, grouping.split(","))) <= {"kind", "topic", "type"}, rule
        assert "model_id" not in rule["expr"]


def test_prometheus_loads_the_rules_and_alertmanager_is_wired() -> None:
    """The rules file is mounted where prometheus.yml looks for it, and the Alertmanager
    example routes critical alerts apart."""
    services = compose()["services"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for path in prometheus["rule_files"]:
        assert (ROOT / mounted[path]).exists(), path
    route = yaml.safe_load((ROOT / "deploy/alertmanager.yml").read_text())["route"]
    assert any('severity="critical"' in m for r in route["routes"] for m in r["matchers"])
    assert "alertmanager" in services


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed "
    "(Debian: apt-get install prometheus); the rules are still checked against the metrics",
)
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template."""
    found = subprocess.run(
        ["promtool", "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
