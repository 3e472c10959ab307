"""What the feedback-loop checks add to the per-event cost, and how fast loops are found.

Cost: the same events (with ``segment``, ``action``, ``exploration`` and independent
outcomes) through the engine twice, with feedback-loop detection on and off
(``feedback_enabled``); the ratio of the two throughputs, best of ``--repeat`` runs each,
interleaved so machine noise hits both alike. Decoding the extra fields is not counted: a
producer that sends them pays for it either way.

The headline figure is a typical tabular model (the 12-feature seeded stream) at about
18,000 predictions an hour with a district segment, an action and independent reports.
The loop simulations are also measured, as an upper bound: one feature each and only about
1,400 events per hourly bucket, so the per-bucket evaluation weighs far more per event
than at production volumes.

Detection: every loop simulation and control on ``--seeds`` seeds, with the bucket (hour)
and the predictions served when the loop was flagged.

The tabular stream is also replayed from its encoded lines, both ways: the per-event
cost with decoding included, as `driftline replay` and the worker pay it.

With ``--worker`` the tabular stream also goes through the stream worker on the embedded
broker, with feedback-loop detection on and off (fresh groups each), and the two rates per
CPU second are compared: the worker's per-event cost.

    python benchmarks/feedback_cost.py [--seeds 10] [--repeat 3] [--worker]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import replace

import numpy as np
from msgspec import structs

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Event, Outcome, Prediction
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.loops import HOUR_MS, SIMULATIONS, TS0_MS, simulate
from driftline.streams.simulation.traffic import StreamSpec, generate

BATCH = 4_096


OFF = DetectorSettings(feedback_enabled=False)


def run(events: list[Event], settings: DetectorSettings | None = None) -> tuple[float, list]:
    engine = Engine(settings)
    out = []
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    return len(events) / (time.perf_counter() - started), out


def tabular(predictions: int = 200_000) -> list[Event]:
    """The seeded 12-feature stream, one prediction every 200 ms of event time, with a
    district segment, a patrol/none action, and a citizen report every 20 predictions."""
    rng = np.random.default_rng(7)
    events: list[Event] = []
    base = generate(
        StreamSpec(
            scenario="stationary",
            n_predictions=predictions,
            change_at=predictions,
            seed=7,
            event_ms=200,
        )
    )
    for i, e in enumerate(base):
        district = f"d{rng.integers(5)}"
        if isinstance(e, Prediction):
            events.append(
                structs.replace(
                    e,
                    segment={"district": district},
                    action="patrol" if rng.uniform() < 0.5 else "none",
                    exploration=bool(rng.uniform() < 0.05),
                )
            )
            if i % 20 == 0:
                events.append(
                    Outcome(f"r-{i}", f"r-{i}", e.model_id, e.ts, 1, {"district": district}, True)
                )
        else:
            events.append(e)
    return events


def replay_cost(events: list[Event], repeat: int) -> None:
    """The same comparison through `driftline replay` on the encoded events: the per-event
    cost a user's pipeline pays, decoding included (both runs decode the same bytes)."""
    from driftline.schemas.decode import encode  # noqa: PLC0415
    from driftline.streams.replay import replay  # noqa: PLC0415

    lines = [encode(e) for e in events]
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for on in (True, False):
            result = replay(lines, Engine(None if on else OFF))
            rates[on].append(result.lines / result.seconds)
    best_with, best_without = max(rates[True]), max(rates[False])
    print(
        f"{'tabular, replay (decoding)':<26} {len(lines):>8,} events: {best_with:>8,.0f} ev/s "
        f"with feedback-loop detection, {best_without:>8,.0f} with detection off: "
        f"+{1e6 / best_with - 1e6 / best_without:.2f} us per event "
        f"({best_without / best_with - 1:+.1%})"
    )


def cost(name: str, events: list[Event], repeat: int) -> None:
    with_loops, without = [], []
    for _ in range(repeat):
        with_loops.append(run(events)[0])
        without.append(run(events, OFF)[0])
    best_with, best_without = max(with_loops), max(without)
    added = 1e6 / best_with - 1e6 / best_without
    print(
        f"{name:<26} {len(events):>8,} events: {best_with:>8,.0f} ev/s with feedback-loop "
        "detection, "
        f"{best_without:>8,.0f} with detection off: +{added:.2f} us per event "
        f"({best_without / best_with - 1:+.1%})"
    )


async def worker_cost(events: list[Event], repeat: int) -> None:
    """Worker records per CPU second (steadier than the clock on a noisy machine; the
    worker is busy from its first batch to its last) with feedback-loop detection on and
    off, best of ``repeat`` each."""
    import worker_throughput as wt  # noqa: PLC0415 (a sibling script)

    from driftline.streams.broker import EmbeddedBroker  # noqa: PLC0415
    from driftline.streams.kafka import KafkaSettings, create_topics  # noqa: PLC0415

    rates: dict[str, list[float]] = {"with": [], "without": []}
    on = replace(wt.SETTINGS, feedback_enabled=True)
    off = replace(wt.SETTINGS, feedback_enabled=False)
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        kafka = KafkaSettings(bootstrap_servers=bs, enable_idempotence=False)
        t = wt.topics("fbcost")
        await create_topics(kafka, t, wt.PARTITIONS)
        total = await wt.produce(bs, t, events)
        for i in range(repeat):
            for name, settings in (("with", on), ("without", off)):
                worker = await wt.run_worker(bs, t, f"fb-{name}-{i}", total, 600, settings)
                rates[name].append(worker.rates[1])
    best_with, best_without = max(rates["with"]), max(rates["without"])
    print(
        f"worker, tabular model: {best_with:,.0f} records per CPU s with feedback-loop "
        f"detection, {best_without:,.0f} with it off: +{1e6 / best_with - 1e6 / best_without:.2f}"
        f" us per record ({best_without / best_with - 1:+.1%}; target < 10 %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help="also measure the worker")
    args = parser.parse_args()
    tune_gc()  # as replay and the worker do
    if args.worker:
        asyncio.run(worker_cost(tabular(), args.repeat))

    cost("tabular model (12 features)", tabular(), args.repeat)
    replay_cost(tabular(), args.repeat)
    for name in ("policing_loop", "recommender_loop", "credit_loop"):
        cost(name, simulate(name, 100), args.repeat)

    for name in SIMULATIONS:
        flagged = []
        for seed in range(args.seeds):
            events = simulate(name, seed)
            found = [d for d in run(events)[1] if d.kind == "feedback_loop" and d.type == "alert"]
            if found:
                served = sum(1 for e in events if type(e) is Prediction and e.ts <= found[0].ts)
                flagged.append(((found[0].ts - TS0_MS) // HOUR_MS, served))
        summary = f"{name:<22} flagged on {len(flagged)}/{args.seeds} seeds"
        if flagged:
            summary += (
                f"; bucket (hour) median {statistics.median(b for b, _ in flagged)}, "
                f"predictions served median {statistics.median(n for _, n in flagged):,.0f}"
            )
        print(summary)


if __name__ == "__main__":
    main()
