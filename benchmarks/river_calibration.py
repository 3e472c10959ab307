"""How often River's detectors false-alarm on the unit normal scores driftline feeds them,
per event, against the parameter that is meant to bound it (seeded).

`detectors.drift.river_bridge.channel_parameters` turns a per-test average run length into
each detector's parameter. A union bound over ADWIN's checks (``delta`` = checks / ARL)
proved about 2,000 times too strict on scores: ADWIN false-alarms about once per
2,050 / ``delta`` events at ``delta`` = 0.1 and once per 4,500 / ``delta`` at 0.01 (the
ratio keeps falling as ``delta`` shrinks), so ``delta`` = `ADWIN_SCORE_EVENTS` / ARL still
keeps the rate under 1 / ARL. The HDDMs' Hoeffding and McDiarmid bounds are stated for
the value range (scores clipped to +-4 and scaled to [0, 1]), and they raised nothing in
the events measured even at a confidence of 0.1, so they keep the union bound; KSWIN (a
KS test per event) is too slow to measure at these lengths and keeps it too.

    python benchmarks/river_calibration.py [--events 30000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from river import drift
from river.drift import binary

from driftline.detectors.drift.river_bridge import ADWIN_SCORE_EVENTS, HDDM_CLIP


def false_alarms(detector: object, values: list[float]) -> int:
    found = 0
    for v in values:
        detector.update(v)  # type: ignore[attr-defined]
        found += detector.drift_detected  # type: ignore[attr-defined]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(2)
    z = rng.normal(size=args.events)
    scores = z.tolist()
    print(f"{args.events:,} unit normal scores, seed 2; ADWIN_SCORE_EVENTS = {ADWIN_SCORE_EVENTS}")
    columns = ("parameter", "alarms", "events per alarm", "x parameter")
    print(
        f"{'detector':<8} "
        + " ".join(f"{c:>{w}}" for c, w in zip(columns, (10, 7, 18, 12), strict=True))
    )
    for delta in (0.1, 0.01, 0.001):
        n = args.events if delta < 0.1 else args.events // 10
        started = time.perf_counter()
        found = false_alarms(drift.ADWIN(delta=delta, clock=32), scores[:n])
        per = n / found if found else float("inf")
        print(
            f"{'adwin':<8} {delta:>10g} {found:>7} {per:>18,.0f} {per * delta:>12,.0f}"
            f"   ({time.perf_counter() - started:.0f} s)"
        )
    scaled = (
        (np.clip(z[:2_000_000], -HDDM_CLIP, HDDM_CLIP) + HDDM_CLIP) / (2 * HDDM_CLIP)
    ).tolist()
    for name, cls in (("hddm_a", binary.HDDMA), ("hddm_w", binary.HDDMW)):
        for confidence in (0.1, 0.01):
            found = false_alarms(
                cls(drift_confidence=confidence, warning_confidence=min(0.5, 5 * confidence)),
                scaled,
            )
            per = len(scaled) / found if found else float("inf")
            print(
                f"{name:<8} {confidence:>10g} {found:>7} {per:>18,.0f} {per * confidence:>12,.0f}"
            )


if __name__ == "__main__":
    main()
