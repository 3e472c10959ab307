"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import orjson

from detectors.decision import Decision
from detectors.engine import Engine
from schemas.decode import encode
from schemas.exceptions import DriftlineError
from streams.config import load_config
from streams.reference_build import DEFAULT_MAX_ROWS, build_profile
from streams.replay import Progress, decision_line, iter_lines, replay, summary_table
from streams.runtime import tune_gc
from streams.simulate import SCENARIOS, StreamSpec, generate


def _replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise DriftlineError(f"input file {path} does not exist")
    config = load_config(args.config, args.reference)
    tune_gc()
    engine = Engine(config.detectors, config.references, config.model_detectors)
    with ExitStack() as stack:
        out = stack.enter_context(Path(args.out).open("wb")) if args.out else None

        def emit(decisions: list[Decision]) -> None:
            for d in decisions:
                line = decision_line(d)
                if out is not None:
                    out.write(line)
                elif not args.quiet:
                    sys.stdout.buffer.write(line)

        progress = Progress(path.stat().st_size)
        try:
            result = replay(iter_lines(path), engine, str(path), emit, progress)
        finally:
            progress.done()
    if args.dead_letters:
        with Path(args.dead_letters).open("wb") as dead:
            for letter in result.dead_letters:
                dead.write(letter.to_json() + b"\n")
    print(summary_table(result, engine), file=sys.stderr)
    return 0


def _reference_build(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    profile = build_profile(
        args.input,
        model_id=args.model_id,
        model_version=args.model_version,
        name=args.name,
        settings=config.detectors,
        max_rows=args.max_rows,
        label_column=args.label_column,
        prediction_column=args.prediction_column,
    )
    Path(args.out).write_bytes(orjson.dumps(profile.to_dict(), option=orjson.OPT_INDENT_2))
    perf = profile.performance
    print(
        f"wrote {args.out}: {profile.count:,} rows, {len(profile.numeric)} numeric and "
        f"{len(profile.categorical)} categorical features"
        + (f", offline error rate {perf.error_rate:.4f} ({perf.task})" if perf else ", no labels"),
        file=sys.stderr,
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    spec = StreamSpec(
        scenario=args.scenario,
        n_predictions=args.predictions,
        change_at=args.change_at if args.change_at is not None else args.predictions // 2,
        seed=args.seed,
        model_id=args.model_id,
    )
    with Path(args.out).open("wb") as fh:
        for event in generate(spec):
            fh.write(encode(event) + b"\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Watch ML models in production: drift, regressions, feedback loops.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="run the detectors over a recorded JSONL stream")
    rp.add_argument("file", help="JSONL file of prediction and outcome events")
    rp.add_argument("--out", help="write decisions here as JSONL (default: stdout)")
    rp.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="PROFILE",
        help="reference profile file (repeatable)",
    )
    rp.add_argument("--config", help="TOML configuration file")
    rp.add_argument("--dead-letters", help="write dead letters here as JSONL")
    rp.add_argument("--quiet", action="store_true", help="do not print decisions to stdout")
    rp.set_defaults(func=_replay)

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    rb = ref_sub.add_parser("build", help="build a profile from training/validation data")
    rb.add_argument("input", help="JSONL (events or {features, prediction, label}) or CSV")
    rb.add_argument("--out", required=True, help="profile file to write")
    rb.add_argument("--model-id", required=True)
    rb.add_argument("--model-version", help="limit the profile to one version")
    rb.add_argument("--name", help="profile name (default: the input file's stem)")
    rb.add_argument("--config", help="TOML configuration file (its [detectors] table)")
    rb.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    rb.add_argument("--label-column", default="label")
    rb.add_argument("--prediction-column", default="prediction")
    rb.set_defaults(func=_reference_build)

    sim = sub.add_parser("simulate", help="write a seeded synthetic stream as JSONL")
    sim.add_argument("--scenario", choices=SCENARIOS, default="mean_shift")
    sim.add_argument("--predictions", type=int, default=100_000)
    sim.add_argument("--change-at", type=int)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--model-id", default="credit-risk")
    sim.add_argument("--out", required=True)
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DriftlineError as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
