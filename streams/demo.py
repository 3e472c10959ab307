"""``driftline demo``: everything on one machine, nothing to install or start first.

Starts the embedded broker on a free loopback port, creates the topics, runs the worker,
and plays a simulated model fleet into it while printing decisions as they arrive:

* ``credit-risk`` — stationary, then one input feature shifts (data and prediction drift);
* ``fraud-score`` — stationary, then the relationship between inputs and labels changes
  (concept drift, seen once the delayed labels arrive);
* ``churn`` — stationary throughout: it should stay quiet;
* ``pricing`` — a canary version takes 15 % of traffic and makes more errors than the
  stable version: it is rolled back;
* ``patrol-allocation`` — a model that sends patrols where its own patrols found incidents
  (a runaway feedback loop), while citizen reports, observed independently of patrols,
  stay even across districts: flagged as ``feedback_loop``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import replace
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import encode
from driftline.schemas.records import Event, Prediction
from driftline.streams.broker import EmbeddedBroker, free_port
from driftline.streams.config import Config
from driftline.streams.kafka import KafkaSettings, create_topics
from driftline.streams.simulation.loops import policing
from driftline.streams.simulation.traffic import StreamSpec, generate, with_canary
from driftline.streams.worker import Worker, WorkerSettings

DEMO_PARTITIONS = 2
"""Input partitions: enough to show sharded state, few enough for quick warm-ups."""

DEMO_DETECTORS = DetectorSettings(
    warmup_events=3_000, window_events=2_000, label_warmup_events=1_000
)
"""Shorter warm-ups and windows than production defaults, so a minute shows everything."""

DEMO_WORKER = WorkerSettings(
    group_id="driftline-demo",
    checkpoint_interval_s=1.0,
    session_timeout_ms=6_000,
    heartbeat_interval_ms=500,
)
"""Short group timeouts: the embedded broker delays joins by half the session timeout."""

STATUS_INTERVAL_S = 5.0
"""How often the status line is printed."""

SEND_TICK_S = 0.05
"""Traffic is sent in small bursts at this interval to hold the requested rate."""

COLOURS = {"alert": "\033[33m", "retrain": "\033[36m", "rollback": "\033[31m"}
RESET = "\033[0m"


def fleet(rate: int, duration_s: float, seed: int) -> list[Event]:
    """The demo's traffic, interleaved across five models, in send order."""
    per_model = max(int(rate * duration_s / 5), 3_000)
    # 24 simulated hours of patrols: each patrol is a prediction and an outcome, plus about
    # 200 citizen reports an hour.
    patrols = max((per_model - 24 * 200) // 48, 150)
    streams = [
        generate(
            StreamSpec(
                scenario="mean_shift",
                n_predictions=per_model,
                change_at=int(per_model * 0.35),
                seed=seed,
                model_id="credit-risk",
            )
        ),
        generate(
            StreamSpec(
                scenario="concept",
                n_predictions=per_model,
                change_at=int(per_model * 0.5),
                seed=seed + 1,
                model_id="fraud-score",
                label_delay=(200, 1_000),
            )
        ),
        generate(
            StreamSpec(
                scenario="stationary",
                n_predictions=per_model,
                change_at=per_model,
                seed=seed + 2,
                model_id="churn",
            )
        ),
        with_canary(
            generate(
                StreamSpec(
                    scenario="stationary",
                    n_predictions=per_model,
                    change_at=per_model,
                    seed=seed + 3,
                    model_id="pricing",
                    label_delay=(100, 500),
                    label_rate=0.8,
                )
            ),
            share=0.15,
            flip=0.2,
            seed=seed + 3,
        ),
        policing(seed + 4, "loop", patrols=patrols),
    ]
    out: list[Event] = []
    for i in range(max(len(s) for s in streams)):
        out += [s[i] for s in streams if i < len(s)]
    return out


def describe(d: dict, colour: bool) -> str:
    kind = d["type"].upper()
    if colour:
        kind = f"{COLOURS.get(d['type'], '')}{kind}{RESET}"
    features = ", ".join(d["features"][:3]) or "-"
    if d.get("segment"):
        features += "  segment: " + ", ".join(f"{k}={v}" for k, v in d["segment"].items())
    impact = d["impact"]
    ev = d["evidence"]
    detail = f"{ev['statistic']}={ev['value']:.3g} (threshold {ev['threshold']:.3g})"
    if d.get("from_version"):
        detail += f", back from {d['from_version']} to {d['to_version']}"
    model = f"{d['model_id']}@{d['model_version']}"
    effect = f"{impact['effect_size']:.3f} {impact.get('effect_unit', '')}"
    return (
        f"{time.strftime('%H:%M:%S')}  {kind:<8} {d['kind']:<24} {model}"
        f"  features: {features}  effect: {effect}"
        f"  {detail}; {ev['window']['count']} events of evidence"
    )


async def _send(
    bootstrap: str,
    config: Config,
    events: list[Event],
    rate: int,
    stopping: asyncio.Event,
    sent: list[int],
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        per_tick = max(1, int(rate * SEND_TICK_S))
        started = time.monotonic()
        for i in range(0, len(events), per_tick):
            if stopping.is_set():
                break
            for event in events[i : i + per_tick]:
                topic = (
                    config.topics.predictions
                    if isinstance(event, Prediction)
                    else config.topics.outcomes
                )
                await producer.send(topic, encode(event), key=event.request_id.encode())
                sent[0] += 1
            ahead = started + (i + per_tick) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def _show(
    bootstrap: str, config: Config, out: TextIO, stopping: asyncio.Event, shown: list[int]
) -> None:
    consumer = AIOKafkaConsumer(
        config.topics.alerts,
        config.topics.retrain,
        config.topics.rollback,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    colour = out.isatty()
    seen: set[str] = set()
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    d = orjson.loads(record.value)
                    if d["decision_id"] in seen:
                        continue
                    seen.add(d["decision_id"])
                    shown[0] += 1
                    print(describe(d, colour), file=out, flush=True)
    finally:
        await consumer.stop()


async def run_demo(
    duration_s: float,
    rate: int,
    seed: int = 0,
    out: TextIO = sys.stdout,
    ui_port: int | None = None,
) -> int:
    """Run the whole demo; returns the number of decisions shown. The live view is served
    on ``ui_port`` (a free port when None)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print("driftline demo: starting the embedded broker ...", file=out, flush=True)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        kafka = KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)
        config = replace(Config(), detectors=DEMO_DETECTORS)
        await create_topics(kafka, config.topics, DEMO_PARTITIONS)
        print(
            f"broker on {bootstrap} (pid {broker.process.pid if broker.process else '?'}); "
            f"topics created; {rate:,} events/s for {duration_s:.0f} s",
            file=out,
        )
        print(
            "scenes: credit-risk input shift at 35 %, fraud-score concept change at 50 %, "
            "pricing runs a bad canary on 15 % of its traffic, patrol-allocation feeds on "
            "its own patrols' findings, churn stays stationary\n",
            file=out,
            flush=True,
        )
        events = fleet(rate, duration_s, seed)
        port = ui_port if ui_port is not None else free_port()
        worker = Worker(config, kafka, replace(DEMO_WORKER, ui_port=port))
        print(f"live view: http://127.0.0.1:{port}/  (open it now)\n", file=out, flush=True)
        sent, shown = [0], [0]
        tasks = [
            asyncio.create_task(worker.run()),
            asyncio.create_task(_send(bootstrap, config, events, rate, stopping, sent)),
            asyncio.create_task(_show(bootstrap, config, out, stopping, shown)),
        ]
        started = time.monotonic()
        next_status = started + STATUS_INTERVAL_S
        while not stopping.is_set() and time.monotonic() - started < duration_s:
            await asyncio.sleep(0.2)
            if any(t.done() and t.exception() for t in tasks):
                break
            if time.monotonic() >= next_status:
                next_status += STATUS_INTERVAL_S
                processed = sum(s.consumed for s in worker.shards.values())
                print(
                    f"  [{time.monotonic() - started:4.0f} s] sent {sent[0]:,}  "
                    f"processed {processed:,}  decisions {shown[0]}",
                    file=out,
                    flush=True,
                )
        stopping.set()
        worker.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    print(f"\ndemo finished: {shown[0]} decisions; broker stopped.", file=out, flush=True)
    return shown[0]
