"""Feedback-loop detection on worlds the tests do not use (`benchmarks/feedback_worlds.py`).

Every world's loop and its controls on ``--seeds`` seeds, through the engine at default
settings (what `driftline replay` and the worker run). Per world and variant: how many
seeds were flagged, the delay from the loop's onset in hours and in predictions served,
the severity, and the decisions of other kinds per stream (a control is never to be
flagged; decisions of other kinds are listed by kind, since some are justified: a loop
that moves the model's scores is prediction drift too).

The information limit beside the dispatch figure: the hours after the onset at which a
test that knew the onset, the reference share and the allocation path exactly would reach
the same threshold, ``z = (a(t) - r) / sqrt(r (1 - r) / (reports per hour * t))``, the
reference (~19 reports an hour) being the scarce side.

    python benchmarks/feedback_quality.py [--seeds 10] [--worlds dispatch,feed,lending]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter

import numpy as np
from feedback_worlds import HOUR, WORLDS, World  # the script's own folder is on sys.path

from detectors.engine import Engine
from detectors.onset import threshold
from detectors.settings import DetectorSettings
from schemas.records import Prediction

BATCH = 4_096


def run(world: World) -> tuple[list, np.ndarray, np.ndarray]:
    """Decisions, and the event time and predictions served at each position."""
    engine = Engine(DetectorSettings())
    out = []
    events = world.events
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    ts = np.fromiter((e.ts for e in events), np.int64, len(events))
    served = np.cumsum([type(e) is Prediction for e in events])
    return out, ts, served


def dispatch_limit(world: World, z: float) -> float | None:
    """Hours after the onset at which an oracle gap test reaches ``z`` (see the module
    docstring), on this world's realised allocation of its top district."""
    per_hour: dict[int, Counter[str]] = {}
    reports: Counter[str] = Counter()
    for e in world.events:
        hour = (e.ts - world.onset_ts) // HOUR
        if type(e) is Prediction:
            per_hour.setdefault(hour, Counter())[e.segment["district"]] += 1
        elif e.independent and hour < 0:
            reports[e.segment["district"]] += 1
    before = sum(reports.values())
    rate = before / max(1, -min(per_hour))
    last = max(per_hour)
    top = per_hour[last].most_common(1)[0][0]
    r = reports[top] / before
    for t in range(1, last + 1):
        a = sum(per_hour[h][top] for h in range(0, t)) / sum(
            sum(per_hour[h].values()) for h in range(0, t)
        )
        if (a - r) / math.sqrt(r * (1 - r) / (rate * t)) >= z:
            return float(t)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--worlds", default=",".join(WORLDS))
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"{'world':<10} {'variant':<12} {'flagged':>8} {'delay h (median, range)':>26} "
        f"{'predictions':>12} {'severity':>9} {'limit h':>8}  other decisions per stream"
    )
    for name in args.worlds.split(","):
        generate, controls, loop = WORLDS[name]
        for variant in (loop, *controls):
            flagged, hours, served_at, severities, limits = 0, [], [], Counter(), []
            others: Counter[str] = Counter()
            for seed in range(args.seeds):
                world = generate(seed, variant)
                decisions, ts, served = run(world)
                loops = [d for d in decisions if d.kind == "feedback_loop" and d.type == "alert"]
                others.update(f"{d.kind}/{d.type}" for d in decisions if d.kind != "feedback_loop")
                others.update(
                    f"feedback_loop/{d.type}"
                    for d in decisions
                    if d.kind == "feedback_loop" and d.type != "alert"
                )
                if loops:
                    flagged += 1
                    first = loops[0]
                    hours.append((first.ts - world.onset_ts) / HOUR)
                    onset_served = served[int(np.searchsorted(ts, world.onset_ts))]
                    served_at.append(int(served[first.seq] - onset_served))
                    severities[first.severity] += 1
                if name == "dispatch" and variant == loop:
                    z = threshold(DetectorSettings().feedback_alpha, 5 * 12)
                    found = dispatch_limit(world, z)
                    if found is not None:
                        limits.append(found)
            delay = (
                f"{statistics.median(hours):.1f} ({min(hours):.1f}-{max(hours):.1f})"
                if hours
                else "-"
            )
            predictions = f"{statistics.median(served_at):,.0f}" if served_at else "-"
            limit = f"{statistics.median(limits):.0f}" if limits else "-"
            other = (
                ", ".join(f"{k} {v / args.seeds:.1f}" for k, v in sorted(others.items())) or "none"
            )
            print(
                f"{name:<10} {variant:<12} {flagged:>4}/{args.seeds:<3} {delay:>26} "
                f"{predictions:>12} {','.join(sorted(severities)) or '-':>9} {limit:>8}  {other}",
                flush=True,
            )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
