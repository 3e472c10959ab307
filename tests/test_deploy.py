"""docker-compose.yml cannot run here (no Docker): check that its wiring agrees with the
worker's configuration, the CLI and the Prometheus/Grafana files."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import yaml

from detectors.settings import DetectorSettings
from streams.cli import build_parser
from streams.kafka import KafkaSettings
from streams.metrics import Metrics
from streams.worker import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_are_all_there() -> None:
    """Kafka (KRaft), topic creation, worker, Prometheus and Grafana."""
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", "worker", "prometheus", "grafana"}
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(kafka_env)


def test_worker_environment_names_real_settings() -> None:
    """Every DRIFTLINE_* variable in the compose file is a setting the worker reads."""
    known = {
        f"DRIFTLINE_{f.name.upper()}"
        for cls in (KafkaSettings, WorkerSettings, DetectorSettings)
        for f in fields(cls)
    }
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
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
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
