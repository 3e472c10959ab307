"""The worker's settings: TOML ``[worker]``, environment ``DRIFTLINE_<NAME>``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driftline.detectors.settings import check_table
from driftline.schemas.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Worker behaviour. TOML ``[worker]``; environment ``DRIFTLINE_<NAME>``."""

    group_id: str = "driftline"
    """Consumer group; also names this deployment's checkpoints in the state topic."""
    checkpoint_interval_s: float = 5.0
    """Each shard's state is written about this often (one shard at a time, the turns
    spread over the interval): a crash re-reads about this much input. Five seconds
    keeps the checkpoint cost near 1 % of a busy worker's time."""
    max_batch_records: int = 5_000
    """Records per fetch: large enough to amortise per-batch numpy cost."""
    fetch_timeout_ms: int = 50
    """Wait for records when idle; bounds added latency at low traffic."""
    session_timeout_ms: int = 10_000
    """Consumer group session (aiokafka's default). Some brokers delay joins by half of it."""
    heartbeat_interval_ms: int = 3_000
    metrics_port: int | None = None
    """Port of the Prometheus endpoint; None disables it."""
    ui_port: int | None = None
    """Port of the live view (`streams.views.live`); None disables it."""
    shutdown_timeout_s: float = 30.0
    """Upper bound on the final checkpoint and client shutdown after SIGTERM/SIGINT."""
    published_memory: int = 10_000
    """Decision ids remembered per shard, so restarts and other shards do not republish."""
    align_max_records: int = 50_000
    """Records held back per input partition while the other topic catches up (see
    `Worker._aligned`); beyond this they are processed without waiting."""
    align_max_wait_s: float = 2.0
    """Longest wait for a topic that has not answered a fetch yet before processing the
    other one alone."""
    startup_timeout_s: float = 60.0
    """How long the worker waits for a broker at start-up (retrying with backoff) before
    it exits non-zero with one line naming the address: long enough for a broker started
    by the same compose file or deployment, short enough that a wrong address is seen."""
    data_dir: str | None = None
    """Where the faust host keeps its small control data; default
    ``$XDG_STATE_HOME/driftline`` (``~/.local/state/driftline``), never the current
    directory."""
    idle_after_ms: int = 2_000
    """How long an input partition must have had nothing new before it tells the model
    stage it is idle (so the merges stop waiting for it). A live partition catches up
    after every fetch; declaring it idle at once let the merges release the other
    partitions past it, and its next items arrived behind them, merged out of order
    ("late"): 65 % of a 3k-events/s live stream on 4 partitions, measured. Two seconds is
    far above the gap between records of a partition with traffic, and delays the tail
    of a stream that really paused by only that much."""
    publish_timeout_s: float = 120.0
    """How long an output refused for a reason that can pass (broker away, leader
    election, delivery timeout), or a read of the state of newly assigned partitions, is
    retried before the worker stops. Two minutes rides
    out a broker restart; a longer outage stops the worker cleanly (nothing committed
    past the undelivered output) for its supervisor to restart."""
    state_trim_interval_s: float = 300.0
    """How often superseded checkpoints are deleted from the state topic on brokers that
    keep them (see `streams.checkpointing.trim`); 0 never deletes. Each trim reads the state
    topic once, which the trims themselves keep small."""

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> WorkerSettings:
        check_table(cls, values, "worker")
        settings = cls(**values)
        if settings.checkpoint_interval_s <= 0 or settings.max_batch_records <= 0:
            raise ConfigError("checkpoint_interval_s and max_batch_records must be positive")
        if settings.startup_timeout_s < 0:
            raise ConfigError(
                f"startup_timeout_s must be 0 or positive, got {settings.startup_timeout_s}"
            )
        if settings.publish_timeout_s <= 0:
            raise ConfigError(
                f"publish_timeout_s must be positive, got {settings.publish_timeout_s}"
            )
        if settings.state_trim_interval_s < 0:
            raise ConfigError(
                f"state_trim_interval_s must be 0 or positive, got {settings.state_trim_interval_s}"
            )
        return settings
