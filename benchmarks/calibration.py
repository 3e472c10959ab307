"""Calibration check: realised false-alarm rate of every test family against its budget.

At the default budget false alarms are too rare to count, so this runs at a small budget
(default 1,000 events per model, so about one false signal per 1,000 events in all) on
stationary streams and counts raw signals (before the decision policy merges them) per
test family. A ratio near or below 1 means the thresholds deliver the promised rate; the
policy's de-duplication then only lowers it.

    python benchmarks/calibration.py [--budget 1000] [--predictions 300000] [--seeds 2]
"""

from __future__ import annotations

import argparse
from collections import Counter

from detectors.engine import Engine
from detectors.settings import DetectorSettings
from detectors.signal import Signal
from streams.simulate import StreamSpec, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=1_000)
    parser.add_argument("--predictions", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    settings = DetectorSettings(false_alarm_budget_events=args.budget)
    signals: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    monitored = 0
    n_tests = 0
    for seed in range(args.seeds):
        events = generate(
            StreamSpec(
                scenario="stationary",
                n_predictions=args.predictions,
                change_at=args.predictions,
                seed=500 + seed,
            )
        )
        engine = Engine(settings)
        for i in range(0, len(events), 4096):
            engine.process(events[i : i + 4096])
            for versions in engine.monitors.values():
                for monitor in versions.values():
                    if monitor.policy is not None and not hasattr(monitor.policy, "_tap"):
                        _tap(monitor.policy, signals)
        monitor = next(iter(engine.monitors["credit-risk"].values()))
        n_tests = monitor.n_tests
        tests = Counter(spec.detector for c in monitor.channels for spec in c.specs)
        tests["window_psi"] = sum(len(c.feature_names) for c in monitor.channels)
        tests["cusum_error_rate"] = settings.error_rate_designs
        monitored += args.predictions - settings.warmup_events
    arl = args.budget * n_tests
    print(f"{n_tests} tests, per-test ARL {arl:,.0f}, {monitored:,} monitored events")
    print(f"{'test family':<22} {'tests':>5} {'signals':>8} {'nominal':>9} {'ratio':>6}")
    for family in sorted(tests):
        nominal = monitored * tests[family] / arl
        ratio = signals[family] / nominal if nominal else 0.0
        print(f"{family:<22} {tests[family]:>5} {signals[family]:>8} {nominal:>9.1f} {ratio:>6.2f}")


def _tap(policy: object, counter: Counter[str]) -> None:
    """Count every signal the policy receives (the policy still sees them all)."""
    original = policy.process  # type: ignore[attr-defined]

    def process(signals: list[Signal], reports: list) -> list:
        for s in signals:
            counter[s.detector] += 1
        return original(signals, reports)

    policy.process = process  # type: ignore[attr-defined]
    policy._tap = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
