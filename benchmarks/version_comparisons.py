"""Version comparisons through the whole engine, on seeded streams.

* An equal canary on 10 % of traffic over about 1,000,000 events (predictions and their
  outcomes) per seed: every decision counts as false (target: none on any of 10 seeds).
* A canary 5 points worse on 10 % of traffic: labelled canary events until the rollback
  (target: median at most 5,000).
* A promoted version 5 points worse than the one it replaced: labelled events of the new
  version until the rollback.
* With ``--summed``, the canaries and promotions again through both stages on 4
  partitions with ``slice_ms`` 2,000 and an offline profile with its validation labels,
  so the input stages sum the labels (`detectors.intake.labelsums`), beside the same
  streams label by label (``slice_ms`` 0): the worse canary (labelled canary events),
  equal canaries (every canary decision counts as false), the worse promotion
  (labelled events), the same with the old
  version shadowing the new one (pairs until the paired comparison rolls it back), and
  equal promotions with and without the shadow (every decision on the new version counts
  as false).

    python benchmarks/version_comparisons.py [--seeds 10] [--events 1000000] [--summed]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile
from driftline.detectors.engine import Engine
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import StreamSpec, generate, with_canary, with_promotion

BATCH = 4_096
PARTITIONS = 4
SLICE_MS = 2_000
"""200 predictions a slice at the simulator's 10 ms spacing."""


def run(events: list) -> list:
    engine = Engine()
    out = []
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    return out


def staged(events: list, profile: ReferenceProfile, slice_ms: int) -> list:
    """Both stages on `PARTITIONS` partitions, with ``profile`` for the model."""
    settings = DetectorSettings(slice_ms=slice_ms)
    pipeline = Staged(StagedPipeline(PARTITIONS, settings, {profile.model_id or "": profile}))
    out = []
    for i in range(0, len(events), BATCH):
        out += pipeline.process(events[i : i + BATCH])
    return out + pipeline.flush()


def labelled_profile() -> ReferenceProfile:
    """The simulator's model on stationary traffic, with its validation labels."""
    events = stationary(99, 20_000)
    labels = {e.request_id: e.label for e in events if isinstance(e, Outcome)}
    builder = ReferenceBuilder(DetectorSettings(), 20_000)
    for e in events:
        if type(e) is Prediction:
            builder.add(e.features, e.prediction, labels.get(e.request_id))
    return builder.build("training", events[0].model_id)


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
    parser.add_argument("--summed", action="store_true")
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
    if args.summed:
        summed(args.seeds)


def first_rollback(events: list, runner: Callable[[list], list] = run) -> int | None:
    """Labelled events of the candidate when it was rolled back, or None."""
    rollbacks = [d for d in runner(events) if d.type == "rollback"]
    return rollbacks[0].evidence["candidate"]["events"] if rollbacks else None


def paired_rollback(events: list, runner: Callable[[list], list]) -> int | None:
    """Pairs the paired comparison had read when it rolled the promotion back, or None."""
    found = [
        d
        for d in runner(events)
        if d.type == "rollback" and d.detector["name"] == "paired_discordance_e_process"
    ]
    return found[0].evidence["window"]["count"] if found else None


def summed(seeds: int) -> None:
    """The canaries and promotions through both stages, label by label and with the
    labels summed."""
    profile = labelled_profile()
    for name, slice_ms in (("label by label", 0), ("labels summed", SLICE_MS)):

        def runner(events: list, slice_ms: int = slice_ms) -> list:
            return staged(events, profile, slice_ms)

        def canary(seed: int) -> list:
            return with_canary(stationary(2_000 + seed, 150_000), 0.10, 0.12, seed)

        def promotion(seed: int) -> list:
            return with_promotion(stationary(3_000 + seed, 150_000), 60_000, 0.12, seed)

        report(
            f"5-point-worse canary on 10 %, {PARTITIONS} partitions, {name}",
            [first_rollback(canary(seed), runner) for seed in range(seeds)],
            "labelled canary events",
        )
        equal_canary = sum(
            d.kind == "canary_regression"
            for seed in range(seeds)
            for d in runner(with_canary(stationary(1_000 + seed, 150_000), 0.10, 0.0, seed))
        )
        print(f"equal canaries ({seeds} seeds), {name}: {equal_canary} canary decisions")
        report(
            f"5-point-worse promotion, {PARTITIONS} partitions, {name}",
            [first_rollback(promotion(seed), runner) for seed in range(seeds)],
            "labelled events of the new version",
        )
        report(
            f"the same with the old version shadowing, {name}",
            [
                paired_rollback(
                    with_promotion(
                        stationary(3_000 + seed, 150_000), 60_000, 0.12, seed, shadow_old=True
                    ),
                    runner,
                )
                for seed in range(seeds)
            ],
            "pairs",
        )
        false = 0
        for seed in range(seeds):
            for shadow in (False, True):
                events = with_promotion(
                    stationary(4_000 + seed, 150_000), 60_000, 0.0, seed, shadow_old=shadow
                )
                false += sum(d.model_version == "v2" for d in runner(events))
        print(
            f"equal promotions ({seeds} seeds, with and without a shadow), {name}: "
            f"{false} decisions on v2"
        )


def report(name: str, delays: list[int | None], unit: str, target: str = "") -> None:
    found = [d for d in delays if d is not None]
    median = statistics.median(found) if found else "n/a"
    print(
        f"{name}: rolled back on {len(found)}/{len(delays)} seeds, {unit} {sorted(found)}, "
        f"median {median}{target}"
    )


if __name__ == "__main__":
    main()
