"""Feedback-loop detection on worlds the tests do not use (`benchmarks/feedback_worlds.py`).

Every world's loop and its controls on ``--seeds`` seeds, through the engine at default
settings (what `driftline replay` and the worker run). Per world and variant: how many
seeds were flagged, the delay from the loop's onset in hours and in predictions served,
the severity, and the decisions of other kinds per stream (a control is never to be
flagged; decisions of other kinds are listed by kind, since some are justified: a loop
that moves the model's scores is prediction drift too).

The information limit beside the dispatch figure: the reference (~19 reports an hour) is
the scarce side, so the allocation share ``a`` of a district is compared with its share
``r`` of reports over the same window of ``w`` hours, ``z = (a_w - r) / sqrt(r (1 - r) /
(R w))``. With ``a`` rising by ``s`` an hour from ``r`` at the onset, the mean gap over the
last ``w`` of ``t`` hours is ``s (t - w / 2)``; the best window is ``w = 2t/3``, and the
threshold ``z*`` is reached at ``t = 1.5 (z* sqrt(r (1 - r) / R) / s)^(2/3)`` hours (from
each seed's realised slope over the first day and reference share before the onset, at
the model's threshold for five districts, two directions and a dozen scales).

    python benchmarks/feedback_quality.py [--seeds 10] [--worlds dispatch,feed,lending]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter
from dataclasses import replace

import numpy as np
from feedback_worlds import HOUR, WORLDS, World  # the script's own folder is on sys.path

from driftline.detectors.engine import Engine
from driftline.detectors.intake.stage import no_action_words
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.stats.onset import MIN_BEFORE, threshold
from driftline.schemas.records import Prediction

BATCH = 4_096
NOT_ACTED = no_action_words(DetectorSettings())


def run(
    world: World, settings: DetectorSettings, not_probabilities: bool = False
) -> tuple[list, np.ndarray, np.ndarray]:
    """Decisions, and the event time and predictions served at each position;
    ``not_probabilities``: the deployment declares that the world's model's scores are not
    probabilities (``scores_are_probabilities = false`` for it)."""
    events = world.events
    declared = replace(settings, scores_are_probabilities=False)
    models = {e.model_id for e in events[:1_000]} if not_probabilities else set()
    engine = Engine(settings, model_settings=dict.fromkeys(models, declared))
    out = []
    for i in range(0, len(events), BATCH):
        out += engine.process(events[i : i + BATCH])
    ts = np.fromiter((e.ts for e in events), np.int64, len(events))
    served = np.cumsum([type(e) is Prediction for e in events])
    return out, ts, served


def dispatch_limit(world: World, z: float) -> float | None:
    """Hours after the onset at which the same-window gap test of the district that gains
    most reaches ``z`` at best (see the module docstring), from this world's realised
    slope of that district's share over the first day and its reference share before
    the onset."""
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
    day = range(0, 24)
    shares = {d: [per_hour[h][d] / sum(per_hour[h].values()) for h in day] for d in per_hour[0]}
    slopes = {d: float(np.polyfit(list(day), v, 1)[0]) for d, v in shares.items()}
    top = max(slopes, key=lambda d: slopes[d])
    if slopes[top] <= 0:
        return None
    r = reports[top] / before
    return 1.5 * (z * math.sqrt(r * (1 - r) / rate) / slopes[top]) ** (2 / 3)


def share_limit(world: World, z: float, history_hours: int) -> float | None:
    """Hours after the onset at which the allocation test could first reach ``z`` with
    hindsight: the same difference in log odds (a segment's share of the acted-on
    predictions against its share of requests, the last ``w`` hourly buckets against all
    before them within ``history_hours``), on this world's realised counts, at the best
    ``w`` and for the segment and direction that move most, with binomial noise only (no
    overdispersion) and no correction for trying many windows. On the same counts the
    monitor's own test (windows on a ladder, the same segments and directions, variance
    inflated by an overdispersion of at least 1) cannot cross earlier."""
    acted: dict[int, Counter[str]] = {}
    asked: dict[int, Counter[str]] = {}
    for e in world.events:
        if type(e) is not Prediction or not e.segment:
            continue
        hour = (e.ts - world.onset_ts) // HOUR
        segment = next(iter(e.segment.values()))
        asked.setdefault(hour, Counter())[segment] += 1
        if e.action is not None and str(e.action).lower() not in NOT_ACTED:
            acted.setdefault(hour, Counter())[segment] += 1
    first, last = min(asked), max(asked)
    hours = np.arange(first, last + 1)
    segments = sorted({s for c in asked.values() for s in c})
    a = np.array([[acted.get(h, Counter())[s] for s in segments] for h in hours], float)
    q = np.array([[asked.get(h, Counter())[s] for s in segments] for h in hours], float)
    start = int(np.searchsorted(hours, 0))
    for end in range(start + 1, len(hours) + 1):
        lo = max(0, end - history_hours)
        ca, cq = a[lo:end][::-1].cumsum(axis=0), q[lo:end][::-1].cumsum(axis=0)
        ta, tq = ca[-1], cq[-1]
        best = 0.0
        for w in range(1, end - lo - MIN_BEFORE + 1):
            aw, qw = ca[w - 1], cq[w - 1]
            ab, qb = ta - aw, tq - qw
            terms = [(aw, aw.sum()), (ab, ab.sum()), (qw, qw.sum()), (qb, qb.sum())]
            logits, variances = zip(*(_logit(x, n) for x, n in terms), strict=True)
            change = (logits[0] - logits[2]) - (logits[1] - logits[3])
            zs = np.abs(change) / np.sqrt(sum(variances))
            best = max(best, float(zs.max()))
        if best >= z:
            return float(hours[end - 1] + 1)
    return None


def _logit(x: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    p = (x + 0.5) / (n + 1.0)
    return np.log(p / (1.0 - p)), 1.0 / ((n + 1.0) * p * (1.0 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--worlds", default=",".join(WORLDS))
    parser.add_argument(
        "--alpha", type=float, default=None, help="feedback_alpha (default: the setting's)"
    )
    parser.add_argument("--per-seed", action="store_true", help="each loop seed's delay and limit")
    parser.add_argument(
        "--not-probabilities",
        default="",
        help="worlds whose models are declared scores_are_probabilities = false (comma-separated)",
    )
    args = parser.parse_args()
    settings = DetectorSettings(**({} if args.alpha is None else {"feedback_alpha": args.alpha}))
    print(f"feedback_alpha = {settings.feedback_alpha}")
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
                declared = name in args.not_probabilities.split(",")
                decisions, ts, served = run(world, settings, declared)
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
                found = None
                if name == "dispatch" and variant == loop:
                    z = threshold(settings.feedback_alpha, 2 * 5 * 12)
                    found = dispatch_limit(world, z)
                    if found is not None:
                        limits.append(found)
                if name == "lending" and variant == loop:
                    z = threshold(settings.feedback_alpha, 2 * 3 * 12)
                    found = share_limit(world, z, settings.feedback_history_buckets)
                    if found is not None:
                        limits.append(found)
                if args.per_seed and variant == loop:
                    mine = f"{hours[-1]:.0f}" if loops else "-"
                    bound = f"{found:.0f}" if found is not None else "-"
                    print(f"    seed {seed}: flagged at {mine} h, limit {bound} h", flush=True)
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
