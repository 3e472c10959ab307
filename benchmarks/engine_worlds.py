"""Engine throughput per world, beside another commit's engine in the same run.

What the model stage's per-step work costs where it shows: a dense stream (the
simulator's mean shift, one event every 10 ms), a canary on it, a daily-retrained lender
whose labels come by outcome (held for a day before they are compared, one step every
64 items), and a recommender feedback loop. Each world runs through `Engine` in batches
of ``--batch`` events (a replayed backlog), in a fresh process per tree and round,
alternating; the figures are medians of events per CPU second.

    python benchmarks/engine_worlds.py [--against cc56b32] [--rounds 3] [--batch 8192]

``--against`` takes a commit with the `driftline` namespace (cc56b32 and later): its
files are unpacked with ``git archive`` and put first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# The script's own folder is on sys.path.
import commits

WORLDS = ("mean_shift", "canary", "lender", "recommender")

_RUN = """
import json, sys, time
tree, batch = sys.argv[1], int(sys.argv[2])
if tree:
    sys.path.insert(0, tree)
from driftline.detectors.engine import Engine
from driftline.streams.simulation.loops import simulate
from driftline.streams.simulation.traffic import StreamSpec, generate, with_canary

def stationary(seed):
    return generate(StreamSpec(scenario="stationary", n_predictions=100_000,
                               change_at=100_000, seed=seed))

worlds = {
    "mean_shift": lambda: generate(StreamSpec(scenario="mean_shift", n_predictions=100_000,
                                              change_at=50_000, seed=3)),
    "canary": lambda: with_canary(stationary(5), 0.1, 0.12, 5),
    "lender": lambda: simulate("daily_credit_loop", 1),
    "recommender": lambda: simulate("recommender_loop", 1),
}
rates = {}
for name, make in worlds.items():
    events = make()
    engine = Engine()
    started = time.process_time()
    for i in range(0, len(events), batch):
        engine.process(events[i : i + batch])
    rates[name] = len(events) / (time.process_time() - started)
print(json.dumps(rates))
"""


def run(tree: str, batch: int) -> dict[str, float]:
    """Events per CPU second per world, in a fresh process (``tree``: another commit's
    files, or "" for this one)."""
    out = subprocess.run(
        [sys.executable, "-c", _RUN, tree, str(batch)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree or os.path.dirname(os.path.abspath(__file__)),
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def unpack(rev: str, into: str) -> str:
    """Commit ``rev`` as files under ``into``; one line and exit when it has no
    `driftline` namespace to put first on the path."""
    commits.unpack(rev, into)
    if not os.path.isdir(f"{into}/driftline"):
        raise SystemExit(f"--against {rev}: only commits with the driftline namespace")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="another commit to run beside this tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8_192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ""}
        if args.against:
            trees = {args.against: unpack(args.against, tmp), **trees}
        found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                found[name].append(run(tree, args.batch))
    medians = {
        name: {w: statistics.median(r[w] for r in runs) for w in WORLDS}
        for name, runs in found.items()
    }
    print(f"events per CPU s, median of {args.rounds}, batches of {args.batch:,}")
    print(f"{'world':<12}" + "".join(f"{name:>14}" for name in medians), end="")
    print(f"{'ratio':>8}" if args.against else "")
    for world in WORLDS:
        row = "".join(f"{m[world]:>14,.0f}" for m in medians.values())
        ratio = (
            f"{medians['this tree'][world] / medians[args.against][world]:>8.2f}"
            if args.against
            else ""
        )
        print(f"{world:<12}{row}{ratio}")


if __name__ == "__main__":
    main()
