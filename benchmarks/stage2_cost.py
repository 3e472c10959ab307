"""The model stage's cost per slice of event time, against how many events a slice holds.

Issue 9's target: stage 2's cost per slice independent of the events in it (stage 1
summarising each slice, stage 2 testing the summaries). The same number of slices is
served at three densities (a prediction every 100, 10 and 1 ms of event time: 100 to
10,000 a slice) through both stages on 4 partitions (`Staged`, what ``driftline replay
--partitions 4`` runs), and only the model stage's CPU time is counted
(`ModelEngine.process` on the merged items). A slice is 10 s of event time (the model
stage's step). Three set-ups, in the same run:

- ``items``: today's default (``slice_ms`` 0, a warm-up reference): every prediction
  and label travels to the model stage as an item and is tested there;
- ``blocks``: an offline reference profile without a performance figure and
  ``slice_ms`` 10,000: the input stage sums each slice's predictions, the model stage
  tests the sums; the labels (half the predictions get one) come in blocks of columns
  per slice (`detectors.intake.blocks`), which the model stage reads label by label
  (in numpy): the concept monitor, the version comparisons' labelled rows, the label
  maturity;
- ``label sums``: the same profile with its validation labels (a binary performance
  figure): the input stage sums each slice's labels too, per version, prediction minute
  and outcome (`detectors.intake.labelsums`), and the model stage reads the sums;
- ``no labels``: the same without outcomes, which isolates the predictions' share.

With ``--task multiclass`` or ``--task regression`` the simulator's stream and its
profile are made another task's (`driftline.streams.simulation.traffic.as_task`): the
label sums then hold that task's errors (a regression's at its profile's tolerance).

Were the cost per slice independent of its events, the slice cost column would stay
near 1 as the density grows. The last lines give the labels' share per label (the
set-up's CPU less the ``no labels`` one's, over the outcomes). Without labels, what grows
is bounded: a window test closes at the end of the first slice that fills
``window_events`` (2,000 here), so at most one per slice, and the model stage's fixed
cost per call.

    python benchmarks/stage2_cost.py [--slices 30] [--rounds 3] [--task binary]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import orjson

from driftline.detectors.drift.reference import ReferenceBuilder, ReferenceProfile
from driftline.detectors.engine import ModelEngine
from driftline.detectors.intake.wire import encode_items
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.decode import encode
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import StreamSpec, as_task, generate

PARTITIONS = 4
BATCH = 4_096
SPACINGS_MS = (100, 10, 1)
SETTINGS = DetectorSettings(warmup_events=3_000, window_events=2_000, label_warmup_events=1_000)
SLICE_MS = 10_000


def offline_profile(labelled: bool = False, task: str = "binary") -> ReferenceProfile:
    """A training profile of the simulator's model (its stationary traffic, as ``task``'s,
    `as_task`); with ``labelled``, its validation labels too (the profile's performance
    figure)."""
    builder = ReferenceBuilder(SETTINGS, 20_000)
    stream = generate(StreamSpec(scenario="stationary", n_predictions=20_000, seed=99))
    events = as_task(stream, task, 99)
    labels = {e.request_id: e.label for e in events if isinstance(e, Outcome)}
    for e in events:
        if type(e) is Prediction:
            builder.add(e.features, e.prediction, labels.get(e.request_id) if labelled else None)
    return builder.build("training", "credit-risk")


class TimedEngine(ModelEngine):
    """The model stage, adding up the CPU time of its `process` calls, and the bytes its
    items would take on the summaries topic (format 3, outside the timing)."""

    cpu_s = 0.0
    wire_bytes = 0

    def process(self, items):  # type: ignore[no-untyped-def]
        self.wire_bytes += len(orjson.dumps(encode_items(items)))
        started = time.process_time()
        try:
            return super().process(items)
        finally:
            self.cpu_s += time.process_time() - started


def model_stage_cpu(
    spacing_ms: int,
    predictions: int,
    profile: ReferenceProfile | None = None,
    label_rate: float = 0.5,
    task: str = "binary",
) -> tuple[float, int, float, float]:
    """CPU seconds of the model stage, events served, event-time seconds covered, and the
    summaries' bytes over the input's (with ``profile``: summed per slice by the input
    stage)."""
    spec = StreamSpec(
        scenario="mean_shift",
        n_predictions=predictions,
        change_at=predictions // 2,
        seed=11,
        event_ms=spacing_ms,
        label_rate=label_rate,
    )
    events = as_task(generate(spec), task, 11)
    settings = SETTINGS if profile is None else replace(SETTINGS, slice_ms=SLICE_MS)
    profiles = {} if profile is None else {"credit-risk": profile}
    pipeline = StagedPipeline(PARTITIONS, settings, profiles)
    engine = TimedEngine(settings, profiles)
    for intake in pipeline.intakes:
        intake.slicer.profiles = engine.profiles
    pipeline.engine = engine
    staged = Staged(pipeline)
    for i in range(0, len(events), BATCH):
        staged.process(events[i : i + BATCH])
    pipeline.flush()
    span_s = (max(e.ts for e in events) - min(e.ts for e in events)) / 1000
    share = engine.wire_bytes / sum(len(encode(e)) for e in events)
    return engine.cpu_s, len(events), span_s, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", choices=("binary", "multiclass", "regression"), default="binary")
    args = parser.parse_args()
    step_s = SLICE_MS / 1000
    print(
        f"{args.slices} slices of {step_s:.0f} s of event time through both stages on "
        f"{PARTITIONS} partitions; model stage CPU only, median of {args.rounds}; "
        f"a {args.task} model"
    )
    print(
        f"{'set-up':>10} {'spacing':>8} {'events/slice':>13} {'slices':>7} {'us/event':>9} "
        f"{'ms/slice':>9} {'slice cost x sparsest':>22} {'summaries/input bytes':>22}"
    )
    profile = offline_profile(task=args.task)
    labelled = offline_profile(labelled=True, task=args.task)
    cpu_by: dict[tuple[str, int], tuple[float, int]] = {}
    for name, used, labels in (
        ("items", None, 0.5),
        ("blocks", profile, 0.5),
        ("label sums", labelled, 0.5),
        ("no labels", profile, 0.0),
    ):
        first_per_slice = None
        for spacing in SPACINGS_MS:
            predictions = args.slices * SLICE_MS // spacing
            runs = [
                model_stage_cpu(spacing, predictions, used, labels, args.task)
                for _ in range(args.rounds)
            ]
            cpu = statistics.median(r[0] for r in runs)
            events, span_s = runs[0][1], runs[0][2]
            cpu_by[(name, spacing)] = (cpu, events)
            slices = max(span_s / step_s, 1.0)
            per_slice = cpu / slices
            first_per_slice = first_per_slice or per_slice
            print(
                f"{name:>10} {spacing:>6}ms {events / slices:>13,.0f} {slices:>7,.0f} "
                f"{cpu / events * 1e6:>9.1f} {per_slice * 1000:>9.2f} "
                f"{per_slice / first_per_slice:>22.1f} {runs[0][3]:>22.3f}"
            )
    # The same predictions with and without their labels: what the labels add, per label
    # (the outcomes are the events the no-labels set-up does not have).
    for name in ("blocks", "label sums"):
        shares = []
        for spacing in SPACINGS_MS:
            (with_cpu, with_events), (without_cpu, without_events) = (
                cpu_by[(name, spacing)],
                cpu_by[("no labels", spacing)],
            )
            outcomes = with_events - without_events
            # A short run (a few slices of sparse traffic) can end before any label comes.
            share = "n/a" if outcomes <= 0 else f"{(with_cpu - without_cpu) / outcomes * 1e6:.1f}"
            shares.append(share)
        print(
            f"labels in {name} ({name} minus no labels, per label) at "
            f"{' / '.join(f'{s}ms' for s in SPACINGS_MS)}: {' / '.join(shares)} us a label"
        )


if __name__ == "__main__":
    main()
