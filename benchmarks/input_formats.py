"""Replay throughput of the foreign input formats beside driftline's own, same run.

The same simulated traffic (12 features, a score, outcomes for half of the predictions)
is written as driftline events and as a KServe logger, Seldon Core 2 and mapped JSON log
(`streams.simulation.foreign.to_foreign`: some batched requests, some never answered, binary and
structured CloudEvents, protobuf and JSON), then replayed through both stages. Figures
are predictions per second (medians over rounds) and each format's ratio to driftline's,
with the decisions compared by id (they must be equal).

    python benchmarks/input_formats.py [--predictions 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from driftline.detectors.pipeline import StagedPipeline
from driftline.schemas.decode import encode
from driftline.schemas.formats import InputSettings
from driftline.schemas.formats.recorded import record_to_line
from driftline.streams.replay import Staged, replay, replay_records
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.foreign import MAPPING, to_foreign
from driftline.streams.simulation.traffic import StreamSpec, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tune_gc()
    spec = StreamSpec(
        scenario="mean_shift",
        n_predictions=args.predictions,
        change_at=args.predictions // 2,
        seed=1,
    )
    events = generate(spec)
    print(f"{'format':<10} {'records':>9} {'predictions/s':>14} {'ratio':>6}  decisions")
    native_rate = None
    for fmt in ("driftline", "kserve", "seldon", "mapped"):
        if fmt == "driftline":
            lines = [encode(e) for e in events]
            predictions = sum(1 for line in lines if b'"prediction"' in line[:30])
            traffic = None
        else:
            traffic = to_foreign(events, fmt, "logs", "outcomes")
            lines = [record_to_line(r) for r in traffic.records]
            predictions = sum(1 for e in traffic.events if type(e).__name__ == "Prediction")
        rates = []
        decisions: list[str] = []
        for _ in range(args.rounds):
            engine = Staged(StagedPipeline(1))
            started = time.perf_counter()
            if traffic is None:
                result = replay(lines, engine)
            else:
                settings = InputSettings(
                    format=fmt,
                    features=traffic.features,
                    mapping=MAPPING if fmt == "mapped" else {},
                )
                result = replay_records(lines, engine, settings, "outcomes")
            rates.append(predictions / (time.perf_counter() - started))
            decisions = [d.decision_id for d in result.decisions]
        rate = statistics.median(rates)
        if native_rate is None:
            native_rate = rate
            native_ids = decisions
        same = "same ids as driftline" if decisions == native_ids else "DIFFERENT from driftline"
        if traffic is not None:  # the native stream of this format's traffic
            own = replay([encode(e) for e in traffic.events], Staged(StagedPipeline(1)))
            same = (
                "same ids as its driftline stream"
                if decisions == [d.decision_id for d in own.decisions]
                else "DIFFERENT from its driftline stream"
            )
        print(
            f"{fmt:<10} {len(lines):>9,} {rate:>14,.0f} {rate / native_rate:>6.2f}  "
            f"{len(decisions)} ({same})"
        )


if __name__ == "__main__":
    main()
