"""Calibration check: realised false-alarm rate of every test family against its budget.

At the default budget false alarms are too rare to count, so this runs at a small budget
(default 1,000 events per model, so about one false signal per 1,000 events in all) on
stationary streams, the project's simulator and a long-tailed one (bounded, integer,
heavy-tailed, mostly missing and Zipf-categorical features), and counts raw signals
(before the decision policy merges them) per test family. A ratio near or below 1 means
the thresholds deliver the promised rate; the policy's de-duplication then only lowers it.

    python benchmarks/calibration.py [--budget 1000] [--predictions 300000] [--seeds 2]
        [--detector cusum|adwin|kswin|hddm_a|hddm_w]

``--detector`` sets ``data_detector`` and ``prediction_detector``: River's detectors on the
numeric channels are then measured the same way (their signals are ``river_<name>``).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import Signal
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.simulation.traffic import StreamSpec, generate


def long_tail_stream(n: int, seed: int) -> list:
    """Stationary traffic with the features real data has and our simulator lacks: a
    uniform amount, integer ages and years, Poisson counts, a Pareto tail, a mostly
    missing value, Zipf categoricals of 50, 1,000 and 10,000 levels; a calibrated score
    and half the labels 500-5,000 events late."""
    rng = np.random.default_rng(seed)
    columns = {
        "amount": rng.uniform(0.0, 5_000.0, n),
        "age": rng.integers(18, 91, n),
        "year": rng.integers(1990, 2025, n),
        "visits": rng.poisson(2.0, n),
        "balance": rng.pareto(1.2, n) * 1_000.0,
        "sparse": np.where(rng.uniform(size=n) < 0.9, np.nan, rng.normal(0.0, 1.0, n)),
    }
    zipf = {f"cat{levels}": np.minimum(rng.zipf(1.3, n), levels) for levels in (50, 1_000, 10_000)}
    score = 1 / (1 + np.exp(-(columns["age"] - 50) / 15 + np.log1p(columns["visits"]) - 0.5))
    labelled = rng.uniform(size=n) < 0.5
    delay = rng.integers(500, 5_001, n)
    label = (rng.uniform(size=n) < score).astype(int)
    due: dict[int, list[int]] = {}
    for i in np.flatnonzero(labelled):
        due.setdefault(int(i + delay[i]), []).append(int(i))
    events: list = []
    for i in range(n):
        features: dict[str, object] = {
            "amount": float(columns["amount"][i]),
            "age": int(columns["age"][i]),
            "year": int(columns["year"][i]),
            "visits": int(columns["visits"][i]),
            "balance": float(columns["balance"][i]),
            "sparse": None if np.isnan(columns["sparse"][i]) else float(columns["sparse"][i]),
        }
        features.update({k: f"c{int(v[i])}" for k, v in zipf.items()})
        ts = 1_700_000_000_000 + 10 * i
        events.append(
            Prediction(f"p{i}", f"r{i}", "long-tails", "v1", ts, features, float(score[i]))
        )
        for j in due.pop(i, ()):
            events.append(Outcome(f"o{j}", f"r{j}", "long-tails", ts, int(label[j])))
    return events


def measure(name: str, streams: list[list], settings: DetectorSettings, n: int) -> None:
    """Raw signals per test family against the nominal count at this budget."""
    signals: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    monitored = 0
    n_tests = 0
    for events in streams:
        engine = Engine(settings)
        for i in range(0, len(events), 4096):
            engine.process(events[i : i + 4096])
            for versions in engine.monitors.values():
                for monitor in versions.values():
                    if monitor.policy is not None and not hasattr(monitor.policy, "_tap"):
                        _tap(monitor.policy, signals)
        monitor = next(iter(next(iter(engine.monitors.values())).values()))
        n_tests = monitor.n_tests
        tests = Counter(spec.detector for c in monitor.channels for spec in c.specs)
        tests["window_psi"] = sum(len(c.feature_names) for c in monitor.channels)
        tests["cusum_error_rate"] = settings.error_rate_designs
        monitored += n - settings.warmup_events
    arl = settings.false_alarm_budget_events * n_tests
    print(f"\n{name}: {n_tests} tests, per-test ARL {arl:,.0f}, {monitored:,} monitored events")
    print(f"{'test family':<22} {'tests':>5} {'signals':>8} {'nominal':>9} {'ratio':>6}")
    for family in sorted(tests):
        nominal = monitored * tests[family] / arl
        ratio = signals[family] / nominal if nominal else 0.0
        print(f"{family:<22} {tests[family]:>5} {signals[family]:>8} {nominal:>9.1f} {ratio:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=1_000)
    parser.add_argument("--predictions", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--detector", default="cusum")
    args = parser.parse_args()
    settings = DetectorSettings(
        false_alarm_budget_events=args.budget,
        data_detector=args.detector,
        prediction_detector=args.detector,
    )
    n = args.predictions
    simulated = [
        generate(StreamSpec(scenario="stationary", n_predictions=n, change_at=n, seed=500 + s))
        for s in range(args.seeds)
    ]
    measure("simulator (streams.simulation.traffic)", simulated, settings, n)
    measure(
        "long tails (bounded, integer, Poisson, Pareto, 90 % missing, Zipf 50-10,000 levels)",
        [long_tail_stream(n, 700 + s) for s in range(args.seeds)],
        settings,
        n,
    )


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
