"""Detection delay against the input topics' partition count (the two-stage pipeline).

The worker reads N-partition topics with an intake per partition and one model stage per
model (`detectors.pipeline`); ``driftline replay --partitions N`` runs the same stages, and
so does this script. For each scenario and seed it prints the delay (predictions served
between the change and the first alert of the right kind) at 1, 4 and 12 partitions,
the ratio 12 / 1 (target: within 1.25x plus the merge's wait), the warm-up length in
model events, and false alarms on stationary streams.

Scenarios: the project's simulator (mean, variance, category, concept, prediction), and
a gradual concept drift on data we did not write: River's MOA Hyperplane generator
(``river.datasets.synth.Hyperplane``, weights drifting every event) served by a logistic
model trained on its first 10,000 events and then frozen.

With ``--slice-ms``, the data and prediction tests run per slice of event time (the
``slice_ms`` setting; with warm-up references the model stage sums the slices): the
delay it costs, against the per-event figures of a run without it. With
``--labelled-profile`` as well, each model has an offline profile with its validation
labels (the simulator's stationary traffic; Hyperplane's first 10,000 events, which the
model was trained on), so the input stages sum the labels too
(`detectors.intake.labelsums`).

    python benchmarks/partitions.py [--seeds 3] [--predictions 60000] [--slice-ms 0]
        [--labelled-profile]
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time

import numpy as np
from river import linear_model
from river.datasets import synth

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Event, Outcome, Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import StreamSpec, generate

BATCH = 4_096
PARTITIONS = (1, 4, 12)
KIND = {
    "mean_shift": "data_drift",
    "variance": "data_drift",
    "categorical": "data_drift",
    "concept": "concept_drift",
    "prediction_only": "prediction_drift",
    "hyperplane_gradual": "concept_drift",
}
EVENT_MS = 10
LABEL_DELAY = (500, 5_000)
"""Outcomes arrive this many events after their prediction (uniform)."""


def hyperplane(n: int, change_at: int, seed: int) -> list[Event]:
    """MOA Hyperplane: stationary until ``change_at``, then its weights drift every event."""
    rng = np.random.default_rng(seed)
    still = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.05)
    moving = synth.Hyperplane(
        seed=seed, n_features=10, n_drift_features=5, mag_change=0.002, noise_percentage=0.05
    )
    model = linear_model.LogisticRegression()
    # Both generators start from the same weights (same seed): the drift begins at the
    # change.
    rows = [x_y for x_y, _ in zip(still, range(change_at), strict=False)]
    rows += [x_y for x_y, _ in zip(moving, range(n - change_at), strict=False)]
    for x, y in rows[:10_000]:
        model.learn_one(x, y)
    events: list[tuple[int, Event]] = []
    for i, (x, y) in enumerate(rows):
        ts = 1_700_000_000_000 + i * EVENT_MS
        score = float(model.predict_proba_one(x).get(1, 0.0))
        request = f"h{seed}-{i}"
        features = {f"x{k}": float(v) for k, v in x.items()}
        events.append(
            (i * 2, Prediction(f"p-{request}", request, "hyper", "v1", ts, features, score))
        )
        delay = int(rng.integers(*LABEL_DELAY))
        events.append(
            (
                (i + delay) * 2 + 1,
                Outcome(f"o-{request}", request, "hyper", ts + delay * EVENT_MS, int(y)),
            )
        )
    events.sort(key=lambda pair: pair[0])
    return [e for _, e in events]


def labelled_profile(events: list[Event], predictions: int) -> ReferenceProfile:
    """An offline profile of the first ``predictions`` predictions of ``events``, with
    their labels."""
    labels = {e.request_id: e.label for e in events if isinstance(e, Outcome)}
    served = [e for e in events if isinstance(e, Prediction)][:predictions]
    builder = ReferenceBuilder(DetectorSettings(), predictions)
    for e in served:
        builder.add(e.features, e.prediction, labels.get(e.request_id))
    return builder.build("training", served[0].model_id)


def run(
    events: list[Event],
    partitions: int,
    settings: DetectorSettings,
    profile: ReferenceProfile | None = None,
) -> list:
    profiles = {} if profile is None else {profile.model_id or "": profile}
    staged = Staged(StagedPipeline(partitions, settings, profiles))
    out = []
    for i in range(0, len(events), BATCH):
        out += staged.process(events[i : i + BATCH])
    return out + staged.flush()


def delay(decisions: list, events: list[Event], change_at: int, kind: str) -> int | None:
    """Predictions served between the change and the first alert of ``kind`` (by event
    time: the merge may reorder partitions within its wait, never across it)."""
    served = sorted(e.ts for e in events if isinstance(e, Prediction))
    change_ts = served[change_at]
    hits = [d.ts for d in decisions if d.type == "alert" and d.kind == kind and d.ts >= change_ts]
    if not hits:
        return None
    return bisect.bisect_right(served, min(hits)) - change_at


def false_alarms(decisions: list, events: list[Event], change_at: int) -> int:
    served = sorted(e.ts for e in events if isinstance(e, Prediction))
    return sum(1 for d in decisions if d.ts < served[change_at])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--predictions", type=int, default=60_000)
    parser.add_argument("--slice-ms", type=int, default=0)
    parser.add_argument("--labelled-profile", action="store_true")
    args = parser.parse_args()
    training = None
    if args.labelled_profile:
        training = labelled_profile(generate(StreamSpec(n_predictions=20_000, seed=99)), 20_000)
    settings = DetectorSettings(slice_ms=args.slice_ms)
    n, change_at = args.predictions, args.predictions // 3
    print(
        f"{n:,} predictions, change after {change_at:,}; warm-up {settings.warmup_events:,} "
        "model events at every partition count (the model stage sees all partitions); "
        f"slice_ms {settings.slice_ms} ({settings.slice_ms // EVENT_MS} predictions a slice)"
        + ("; offline profiles with their labels" if training is not None else "")
    )
    print(f"{'scenario':<20} {'seed':>4} " + " ".join(f"{p:>3}p delay" for p in PARTITIONS))
    ratios: list[float] = []
    started = time.perf_counter()
    for scenario, kind in KIND.items():
        for seed in range(1, args.seeds + 1):
            profile = training
            if scenario == "hyperplane_gradual":
                events = hyperplane(n, change_at, seed)
                if training is not None:
                    profile = labelled_profile(events, 10_000)
            else:
                spec = StreamSpec(
                    scenario=scenario, n_predictions=n, change_at=change_at, seed=seed
                )
                events = generate(spec)
            delays = []
            for p in PARTITIONS:
                found = run(events, p, settings, profile)
                delays.append(delay(found, events, change_at, kind))
            cells = " ".join(f"{d if d is not None else '-':>9}" for d in delays)
            if delays[0] and delays[-1] is not None:
                ratios.append(delays[-1] / delays[0])
            print(f"{scenario:<20} {seed:>4} {cells}")
    if ratios:
        print(
            f"delay at 12 partitions / at 1: median {statistics.median(ratios):.2f}, "
            f"max {max(ratios):.2f}"
        )
    for p in PARTITIONS:
        total = 0
        for seed in range(1, args.seeds + 1):
            spec = StreamSpec(scenario="stationary", n_predictions=n, change_at=n - 1, seed=seed)
            events = generate(spec)
            total += false_alarms(run(events, p, settings, training), events, n - 1)
        print(f"false alarms at {p:>2} partitions on {args.seeds} stationary streams: {total}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
