"""Unbounded cardinality at scale: a new model id, version, segment value, category and
feature name on every event, at the default settings.

Prints, per quarter of the stream, the resident memory, the compressed checkpoint
bytes of the engine (what the worker writes), the models and versions holding state,
and the evictions counted; flat figures once the bounds are reached are the target.
The default runs 1,000,000 predictions (each with its outcome: 2,000,000 events).

    python benchmarks/cardinality.py [--predictions 1000000] [--one-model]
"""

from __future__ import annotations

import argparse
import resource
import time
import zlib

import orjson

from driftline.detectors.engine import Engine
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.traffic import hostile

BATCH = 4_096
"""Events per engine call, as replay batches them."""


def rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--one-model", action="store_true", help="one model, new everything else")
    args = parser.parse_args()
    tune_gc()
    engine = Engine()
    s = engine.settings
    print(
        f"{args.predictions:,} predictions; bounds: max_models={s.max_models}, "
        f"max_versions_per_model={s.max_versions_per_model}, "
        f"max_monitored_features={s.max_monitored_features}, "
        f"feedback_max_tags={s.feedback_max_tags}"
    )
    quarter = 2 * args.predictions // 4
    total = 2 * args.predictions
    batch = []
    started = time.perf_counter()
    seen = 0
    for event in hostile(args.predictions, one_model=args.one_model):
        batch.append(event)
        if len(batch) == BATCH or seen + len(batch) == total:
            engine.process(batch)
            before, seen = seen, seen + len(batch)
            batch = []
            if seen // quarter != before // quarter or seen == total:
                report(engine, seen, started)


def report(engine: Engine, seen: int, started: float) -> None:
    state = orjson.dumps(engine.state(), option=orjson.OPT_SERIALIZE_NUMPY)
    print(
        f"  {seen:>10,} events  peak RSS {rss_mb():7.1f} MB  checkpoint "
        f"{len(zlib.compress(state, 1)) / 1e6:6.2f} MB  models "
        f"{len(engine.monitors):,}  evicted models "
        f"{engine.counts['evicted_models']:,}  evicted versions "
        f"{engine.counts['evicted_versions']:,}  "
        f"({seen / (time.perf_counter() - started):,.0f} events/s)"
    )


if __name__ == "__main__":
    main()
