"""Prometheus metrics of the stream worker (``driftline_`` prefix, base units)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Produce-to-processed latency buckets, seconds: from the fetch wait to a stalled worker."""

DRIFT_SCORE_MODELS = 200
"""Models with their own ``driftline_drift_score`` series; the rest are not exported, so a
fleet with thousands of model ids cannot blow up the label set."""


class Metrics:
    """The worker's metrics, in a registry of their own (tests create several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "driftline_records_consumed", "Input records fetched, by topic.", ["topic"], registry=r
        )
        self.processed = Counter(
            "driftline_records_processed",
            "Input records decoded and fed to the detectors, by topic.",
            ["topic"],
            registry=r,
        )
        self.duplicates = Counter(
            "driftline_records_duplicate",
            "Input records dropped because their event_id was seen recently.",
            registry=r,
        )
        self.untested_slice_events = Counter(
            "driftline_untested_slice_events",
            "Predictions the input stage summed against another reference profile than "
            "their version's monitor has (a profile published while the version was "
            "monitored): counted, not tested.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "driftline_records_dead_lettered",
            "Input records sent to the dead-letter topic, by topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "driftline_processing_latency_seconds",
            "Time from a record's produce timestamp to the end of its processing (sampled).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "driftline_consumer_lag_records",
            "Records between the consumer position and the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.join_buffer = Gauge(
            "driftline_join_buffer_entries",
            "Predictions waiting for outcomes, plus outcomes waiting for predictions.",
            registry=r,
        )
        self.labels_held = Gauge(
            "driftline_labels_held",
            "Labelled predictions waiting for the minute they were made in to mature (label "
            "maturity: label delays that depend on the outcome), one per version a label "
            "judged; bounded per model (label_maturity_max_held labels one by one, "
            "two weeks of minutes summed).",
            registry=r,
        )
        self.outcomes = Counter(
            "driftline_outcomes",
            "Outcome join results: joined, late, orphaned, duplicate, expired_unlabelled, "
            "null_label.",
            ["status"],
            registry=r,
        )
        self.decisions = Counter(
            "driftline_decisions",
            "Decisions published, by type and kind.",
            ["type", "kind"],
            registry=r,
        )
        self.drift_score = Gauge(
            "driftline_drift_score",
            "Largest sequential-test statistic over its threshold (1 = alarm), by model and kind.",
            ["model_id", "kind"],
            registry=r,
        )
        self.references = Counter(
            "driftline_references",
            "Reference profiles received on the references topic, by outcome.",
            ["status"],
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "driftline_checkpoint_duration_seconds",
            "Time to flush outputs, write state and commit offsets.",
            registry=r,
        )
        self.checkpoint_time = Gauge(
            "driftline_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint that completed (flush, state, commit); an "
            "alert on its age catches a worker that processes but no longer checkpoints.",
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "driftline_checkpoint_bytes",
            "Compressed size of the last checkpoint, by shard (3: input partition 3, m0: "
            "summaries partition 0).",
            ["partition"],
            registry=r,
        )
        self.state_trims = Counter(
            "driftline_state_trims",
            "Attempts to delete superseded checkpoint records from the state topic, by "
            "result (deleted, refused: the broker does not delete records).",
            ["result"],
            registry=r,
        )
        self.state_low_offset = Gauge(
            "driftline_state_low_offset",
            "First offset of the state topic the broker still keeps after the last trim.",
            registry=r,
        )
        self.summary_bytes = Counter(
            "driftline_summaries_bytes",
            "Bytes sent from the input stage to the model stage (the summaries topic).",
            registry=r,
        )
        self.merge_items = Counter(
            "driftline_merge_items",
            "Items the model stage received, by status: merged in order, late (behind "
            "what was released: merged at once), duplicate (re-sent after a crash).",
            ["status"],
            registry=r,
        )
        self.evictions = Counter(
            "driftline_state_evictions",
            "State forgotten to stay within its bounds, by what (model, version, clock): "
            "least recently seen first (see max_models, max_versions_per_model).",
            ["what"],
            registry=r,
        )
        self.pairs = Counter(
            "driftline_pairs",
            "Logged requests and responses of foreign formats (KServe, Seldon), by status: "
            "paired, unanswered (request expired without a response: KServe logs responses "
            "for HTTP 200 only), unmatched_responses (dead-lettered), duplicate_parts "
            "(re-sent records recognised).",
            ["status"],
            registry=r,
        )
        self.rekeyed = Counter(
            "driftline_rekeyed_records",
            "Records of foreign input topics re-keyed by correlation id onto the re-keyed "
            "topic (the join's input when the input format is not driftline's).",
            registry=r,
        )
        self.publish_retries = Counter(
            "driftline_publish_retries",
            "Outputs (decisions, dead letters) re-sent after a refusal that could pass.",
            registry=r,
        )
        self.broker_errors = Counter(
            "driftline_broker_connection_errors",
            "Client errors while the broker connection was lost (fetch, metadata, heartbeat "
            "and connect attempts that failed); logged once per outage, counted here.",
            registry=r,
        )
        self.broker_outages = Counter(
            "driftline_broker_outages",
            "Times the connection to the broker was lost.",
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Expose ``/metrics`` on ``port``; returns the server (``shutdown()`` stops it)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
