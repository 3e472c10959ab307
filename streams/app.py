"""The faust application that hosts the worker.

faust-streaming owns what it is good at and where its per-message cost is irrelevant: the
process lifecycle (start-up, signals, orderly shutdown of every service). The
prediction/outcome hot path stays on aiokafka batches inside the `DetectorService` (see
streams/worker/worker.py for the measured reason), and so does the references topic:
every worker must read all of it, which a faust agent in the app's consumer group does
not do (`streams.worker.references`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import faust
import mode

from driftline.streams.config import Config
from driftline.streams.kafka import KafkaSettings
from driftline.streams.worker import Worker, WorkerSettings

log = logging.getLogger("driftline.app")


def _credentials(kafka: KafkaSettings) -> Any:
    options = kafka.client_options()
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


def data_dir(settings: WorkerSettings) -> Path:
    """The faust host's data directory (see `WorkerSettings.data_dir`)."""
    if settings.data_dir:
        return Path(settings.data_dir)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "driftline" / settings.group_id


def build_app(
    config: Config, kafka: KafkaSettings, settings: WorkerSettings
) -> tuple[faust.App, Worker]:
    """The faust App hosting one `Worker`, and that worker."""
    worker = Worker(config, kafka, settings)
    datadir = data_dir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.group_id}-control",
        broker=[f"kafka://{host}" for host in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(kafka),
        # No web server, no tables, no agents: the app only hosts the worker's service.
        web_enabled=False,
        datadir=str(datadir),
        store="memory://",
        autodiscover=False,
        topic_partitions=1,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        # Rebalances must not wait for streams to drain (they would hang on a quiet topic).
        stream_wait_empty=False,
    )

    class DetectorService(mode.Service):
        """Runs the aiokafka worker for as long as the app runs."""

        run_task: asyncio.Task[None] | None = None

        async def on_started(self) -> None:
            self.run_task = asyncio.ensure_future(worker.run())

        async def on_stop(self) -> None:
            worker.stop()
            if self.run_task is not None and not self.run_task.done():
                await asyncio.wait_for(self.run_task, settings.shutdown_timeout_s)

        @mode.Service.task
        async def _watch(self) -> None:
            # A worker that fails (say, a missing topic) takes the whole app down.
            while not self.should_stop:
                if self.run_task is not None and self.run_task.done():
                    error = self.run_task.exception()
                    if error is not None:
                        log.error("worker failed: %s", error)
                        await self.crash(error)
                    return
                await self.sleep(0.2)

    app.service(DetectorService)
    return app, worker


def run_app(config: Config, kafka: KafkaSettings, settings: WorkerSettings) -> int:
    """Run the hosted worker until SIGTERM/SIGINT; returns the process exit code."""
    app, _ = build_app(config, kafka, settings)
    # Logging is set up by the command (`streams.logs`): mode must not replace it.
    runner = faust.Worker(app, quiet=True, redirect_stdouts=False, override_logging=False)
    # Its start-up spinner writes terminal escapes even into a pipe or a log file.
    runner.spinner = None
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
