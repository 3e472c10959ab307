"""What the feedback-loop checks add to the per-event cost, and how fast loops are found.

Cost: the same events through the engine twice, once as published (with ``segment``,
``action``, ``exploration`` and independent outcomes, so the feedback-loop monitor runs)
and once with those fields stripped (so it does not); the ratio of the two throughputs,
best of ``--repeat`` runs each, interleaved so machine noise hits both alike. The engine is
the worker's per-event work apart from Kafka and decoding, so the worker's relative cost
is lower than the engine's.

The headline figure is a typical tabular model (the 12-feature seeded stream) at about
18,000 predictions an hour with a district segment, an action and independent reports.
The loop simulations are also measured, as an upper bound: one feature each and only about
1,400 events per hourly bucket, so the per-bucket evaluation weighs far more per event
than at production volumes.

Detection: every loop simulation and control on ``--seeds`` seeds, with the bucket (hour)
and the predictions served when the loop was flagged.

    python benchmarks/feedback_cost.py [--seeds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np

from detectors.engine import Engine
from schemas.records import Event, Outcome, Prediction
from streams.loops import HOUR_MS, SIMULATIONS, TS0_MS, simulate
from streams.runtime import tune_gc
from streams.simulate import StreamSpec, generate

BATCH = 4_096


def run(events: list[Event]) -> tuple[float, list]:
    engine = Engine()
    out = []
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    return len(events) / (time.perf_counter() - started), out


def stripped(events: list[Event]) -> list[Event]:
    """The same traffic without the fields feedback-loop detection reads."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, Prediction):
            out.append(replace(e, segment=None, action=None, exploration=False))
        elif isinstance(e, Outcome) and e.independent:
            out.append(replace(e, independent=False, segment=None))
        else:
            out.append(e)
    return out


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
                replace(
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


def cost(name: str, events: list[Event], repeat: int) -> None:
    plain = stripped(events)
    with_loops, without = [], []
    for _ in range(repeat):
        with_loops.append(run(events)[0])
        without.append(run(plain)[0])
    best_with, best_without = max(with_loops), max(without)
    added = 1e6 / best_with - 1e6 / best_without
    print(
        f"{name:<26} {len(events):>8,} events: {best_with:>8,.0f} ev/s with feedback fields, "
        f"{best_without:>8,.0f} without: +{added:.2f} us per event "
        f"({best_without / best_with - 1:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as replay and the worker do

    cost("tabular model (12 features)", tabular(), args.repeat)
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
