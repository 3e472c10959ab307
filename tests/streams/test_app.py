"""The faust-hosted worker: references published to running workers take effect."""

from __future__ import annotations

import asyncio
import signal
import time

import orjson

from driftline.detectors.drift.reference import ReferenceBuilder
from driftline.detectors.settings import DetectorSettings
from driftline.streams.cli import main
from driftline.streams.simulation.traffic import StreamSpec
from tests.conftest import stream
from tests.kafka_helpers import (
    decisions,
    produce,
    setup_topics,
    start_worker_process,
    topics_for,
    wait_committed,
    write_config,
)


async def test_published_reference_is_used_by_a_running_worker(broker, tmp_path) -> None:
    """A profile sent with `driftline reference publish` reaches the running worker's faust
    agent; a version first seen afterwards is compared with it, so a stream shifted from
    its very first event (invisible against its own warm-up) is reported as drift."""
    topics = topics_for("refs")
    await setup_topics(broker, topics, 1)
    train = stream(StreamSpec(scenario="stationary", n_predictions=8_000, change_at=8_000, seed=61))
    builder = ReferenceBuilder(DetectorSettings(), 10_000)
    for e in train:
        if hasattr(e, "features"):
            builder.add(e.features, e.prediction)
    profile = tmp_path / "train.json"
    profile.write_bytes(orjson.dumps(builder.build("train", "credit-risk").to_dict()))

    config = write_config(
        tmp_path / "w.toml", topics, "g-refs", {"warmup_events": 3_000, "window_events": 2_000}
    )
    log = tmp_path / "worker.log"
    worker = start_worker_process(broker, config, log)
    try:
        publish = [
            "reference",
            "publish",
            str(profile),
            "--config",
            str(config),
            "--bootstrap-servers",
            broker,
        ]
        assert await asyncio.to_thread(main, publish) == 0
        deadline = time.monotonic() + 60
        while "loaded for credit-risk" not in log.read_text():
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        live = list(
            stream(
                StreamSpec(
                    scenario="mean_shift",
                    n_predictions=12_000,
                    change_at=0,
                    seed=62,
                    mean_shift_sd=0.5,
                )
            )
        )
        total = sum((await produce(broker, topics, live)).values())
        await wait_committed(broker, "g-refs", topics, 1, total, timeout_s=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=40)
    assert code == 0, log.read_text()[-3000:]
    # Shifted from the first live event on: training-serving skew against the profile.
    drift = [
        d
        for d in await decisions(broker, topics)
        if d["evidence"].get("comparison") == "training_serving_skew"
    ]
    assert drift, log.read_text()[-3000:]
    assert (drift[0]["features"][0], drift[0]["evidence"]["reference"]) == ("x0", "profile:train")
