"""Version comparisons through the whole engine, on seeded streams.

* An equal canary on 10 % of traffic over about 1,000,000 events (predictions and their
  outcomes) per seed: every decision counts as false (target: none on any of 10 seeds).
* A canary 5 points worse on 10 % of traffic: labelled canary events until the rollback
  (target: median at most 5,000).
* A promoted version 5 points worse than the one it replaced: labelled events of the new
  version until the rollback.

    python benchmarks/version_comparisons.py [--seeds 10] [--events 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from driftline.detectors.engine import Engine
from driftline.streams.simulation.traffic import StreamSpec, generate, with_canary, with_promotion

BATCH = 4_096


def run(events: list) -> list:
    engine = Engine()
    out = []
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    return out


def stationary(seed: int, predictions: int) -> list:
    return generate(
        StreamSpec(
            scenario="stationary", n_predictions=predictions, change_at=predictions, seed=seed
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    # Half the predictions get an outcome: 1.5 events per prediction.
    predictions = int(args.events / 1.5)

    false_decisions = 0
    total_events = 0
    started = time.perf_counter()
    for seed in range(args.seeds):
        events = with_canary(stationary(1_000 + seed, predictions), 0.10, 0.0, seed)
        total_events += len(events)
        decisions = run(events)
        false_decisions += len(decisions)
        kinds = sorted({(d.type, d.kind) for d in decisions})
        print(
            f"equal canary seed {seed}: {len(events):,} events, {len(decisions)} decisions {kinds}"
        )
    elapsed = time.perf_counter() - started
    print(
        f"equal canary: {false_decisions} decisions in {total_events:,} events over "
        f"{args.seeds} seeds ({total_events / elapsed:,.0f} events/s)"
    )

    report(
        "5-point-worse canary on 10 %",
        [
            first_rollback(with_canary(stationary(2_000 + seed, 150_000), 0.10, 0.12, seed))
            for seed in range(args.seeds)
        ],
        "labelled canary events",
        " (target <= 5,000)",
    )
    report(
        "5-point-worse promotion",
        [
            first_rollback(with_promotion(stationary(3_000 + seed, 150_000), 60_000, 0.12, seed))
            for seed in range(args.seeds)
        ],
        "labelled events of the new version",
    )


def first_rollback(events: list) -> int | None:
    """Labelled events of the candidate when it was rolled back, or None."""
    rollbacks = [d for d in run(events) if d.type == "rollback"]
    return rollbacks[0].evidence["candidate"]["events"] if rollbacks else None


def report(name: str, delays: list[int | None], unit: str, target: str = "") -> None:
    found = [d for d in delays if d is not None]
    median = statistics.median(found) if found else "n/a"
    print(
        f"{name}: rolled back on {len(found)}/{len(delays)} seeds, {unit} {sorted(found)}, "
        f"median {median}{target}"
    )


if __name__ == "__main__":
    main()
