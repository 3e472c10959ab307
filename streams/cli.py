"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any

import orjson

from driftline.detectors.decision import Decision
from driftline.detectors.pipeline import StagedPipeline
from driftline.schemas.decode import encode
from driftline.schemas.exceptions import ConfigError, DriftlineError
from driftline.schemas.formats import FORMATS as INPUT_FORMATS
from driftline.schemas.formats.recorded import record_to_line
from driftline.streams.app import run_app
from driftline.streams.config import (
    Config,
    Topics,
    layered,
    load_config,
    load_profile,
    profile_key,
    required_topics,
)
from driftline.streams.kafka import (
    KafkaSettings,
    create_topics,
    preflight,
    publish_profile,
    wait_for_broker,
)
from driftline.streams.logs import FORMATS, LEVELS, configure
from driftline.streams.reference_build import DEFAULT_MAX_ROWS, build_profile
from driftline.streams.replay import (
    Progress,
    Staged,
    decision_line,
    iter_lines,
    replay,
    replay_records,
    summary_table,
)
from driftline.streams.runtime import tune_gc
from driftline.streams.simulation.foreign import to_foreign
from driftline.streams.simulation.loops import SIMULATIONS
from driftline.streams.simulation.loops import simulate as simulate_loop
from driftline.streams.simulation.traffic import SCENARIOS, StreamSpec, generate, with_canary
from driftline.streams.views.live import LiveView, observe, version_scores
from driftline.streams.views.report import read_decisions, render
from driftline.streams.worker import WorkerSettings


def _replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise DriftlineError(f"input file {path} does not exist")
    config = _with_input_format(load_config(args.config, args.reference), args)
    tune_gc()
    # The worker's two stages, at any partition count: the same decisions as a worker.
    engine = Staged(
        StagedPipeline(args.partitions, config.detectors, config.references, config.model_detectors)
    )
    reported: list[dict] = []
    view = LiveView(max_samples=REPORT_SAMPLES) if args.report else None
    with ExitStack() as stack:
        out = stack.enter_context(Path(args.out).open("wb")) if args.out else None

        def emit(decisions: list[Decision]) -> None:
            for d in decisions:
                line = decision_line(d)
                if view is not None:
                    reported.append(orjson.loads(line))
                    view.add_decision(reported[-1])
                if out is not None:
                    out.write(line)
                elif not args.quiet:
                    sys.stdout.buffer.write(line)

        progress = Progress(path.stat().st_size)

        def on_batch(lines: int) -> None:
            progress(lines)
            if view is not None:
                _sample_replay(view, engine)

        try:
            if config.input.foreign:
                result = replay_records(
                    iter_lines(path), engine, config.input, config.topics.outcomes, emit, on_batch
                )
            else:
                result = replay(iter_lines(path), engine, str(path), emit, on_batch)
        finally:
            progress.done()
    if args.dead_letters:
        with Path(args.dead_letters).open("wb") as dead:
            for letter in result.dead_letters:
                dead.write(letter.to_json() + b"\n")
    if view is not None:
        _sample_replay(view, engine)
        page = render(reported, f"driftline replay of {path.name}", str(path), view.charts())
        Path(args.report).write_text(page)
    print(summary_table(result, engine), file=sys.stderr)
    return 0


REPORT_SAMPLES = 5_000
"""Drift-statistic samples kept per series for a replay's report (one per batch of 4,096
lines: the first of 20 million lines are dropped from the chart, not from the decisions)."""


def _sample_replay(view: LiveView, engine: Staged) -> None:
    """One sample of a replay for its report, at the latest prediction's event time."""
    model = engine.pipeline.engine
    latest = max(
        (
            info.last_ts
            for registry in model.versions.values()
            for info in registry.versions.values()
        ),
        default=None,
    )
    if latest is None:
        return
    joins = engine.join_counts
    status = {
        "processed": engine.counts.get("events", 0),
        "joined": joins.get("joined", 0),
        "expired_unlabelled": joins.get("expired_unlabelled", 0),
    }
    observe(view, [model], version_scores([model]), status, latest / 1000.0)


def _report(args: argparse.Namespace) -> int:
    path = Path(args.decisions)
    if not path.exists():
        raise DriftlineError(f"decisions file {path} does not exist")
    with path.open("rb") as lines:
        decisions = read_decisions(lines, str(path))
    Path(args.out).write_text(render(decisions, args.title or f"driftline: {path.name}", str(path)))
    print(f"{len(decisions)} decision(s) -> {args.out}", file=sys.stderr)
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
    if args.feedback_sim is not None:
        events = simulate_loop(args.feedback_sim, args.seed)
    else:
        spec = StreamSpec(
            scenario=args.scenario,
            n_predictions=args.predictions,
            change_at=args.change_at if args.change_at is not None else args.predictions // 2,
            seed=args.seed,
            model_id=args.model_id,
        )
        events = generate(spec)
        if args.canary_share:
            if not 0 < args.canary_share < 1:
                raise ConfigError(f"--canary-share must be in (0, 1), got {args.canary_share}")
            if not 0 <= args.canary_flip <= 1:
                raise ConfigError(f"--canary-flip must be in [0, 1], got {args.canary_flip}")
            events = with_canary(events, args.canary_share, args.canary_flip, args.seed)
    if args.input_format and args.input_format != "driftline":
        traffic = to_foreign(events, args.input_format, "predictions", "outcomes")
        with Path(args.out).open("wb") as fh:
            for record in traffic.records:
                fh.write(record_to_line(record) + b"\n")
        if traffic.features:
            names = ", ".join(f'"{n}"' for n in traffic.features)
            print(f"features = [{names}]  # under [input]: input-0's columns", file=sys.stderr)
        return 0
    with Path(args.out).open("wb") as fh:
        for event in events:
            fh.write(encode(event) + b"\n")
    return 0


def _with_input_format(config: Config, args: argparse.Namespace) -> Config:
    """``--input-format`` over ``[input] format``."""
    chosen = getattr(args, "input_format", None)
    if chosen is None:
        return config
    return dataclass_replace(config, input=dataclass_replace(config.input, format=chosen))


def _worker_parts(args: argparse.Namespace) -> tuple[Config, KafkaSettings, WorkerSettings]:
    config = _with_input_format(load_config(args.config, args.reference), args)
    topic_flags = {
        name: getattr(args, f"{name}_topic")
        for name in Topics.names()
        if getattr(args, f"{name}_topic", None)
    }
    if topic_flags:
        config = dataclass_replace(config, topics=dataclass_replace(config.topics, **topic_flags))
    kafka = layered(
        KafkaSettings,
        config.kafka,
        {
            "bootstrap_servers": args.bootstrap_servers,
            "enable_idempotence": False if getattr(args, "no_idempotence", False) else None,
        },
    )
    worker = layered(
        WorkerSettings,
        config.worker,
        {
            "group_id": getattr(args, "group_id", None),
            "metrics_port": getattr(args, "metrics_port", None),
            "ui_port": getattr(args, "ui_port", None),
            "checkpoint_interval_s": getattr(args, "checkpoint_interval", None),
        },
    )
    return config, kafka, worker


def _worker(args: argparse.Namespace) -> int:
    config, kafka, settings = _worker_parts(args)
    tune_gc()
    asyncio.run(wait_for_broker(kafka, settings.startup_timeout_s))
    asyncio.run(preflight(kafka, required_topics(config)))
    return run_app(config, kafka, settings)


def _topics_create(args: argparse.Namespace) -> int:
    config, kafka, _ = _worker_parts(args)
    created = asyncio.run(
        create_topics(kafka, config.topics, args.partitions, args.replication_factor)
    )
    existing = sorted(set(config.topics.all()) - set(created))
    print(
        f"created: {', '.join(created) or 'none'}; already there: {', '.join(existing) or 'none'}"
    )
    return 0


def _reference_publish(args: argparse.Namespace) -> int:
    config, kafka, _ = _worker_parts(args)
    profile = load_profile(args.profile)
    key = profile_key(profile, args.profile)
    asyncio.run(publish_profile(kafka, config.topics.references, key, profile))
    print(f"published {args.profile} as {key!r} to {config.topics.references}", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from driftline.streams.demo import run_demo  # noqa: PLC0415 (imports the simulator only when needed)

    tune_gc()
    asyncio.run(run_demo(args.duration, args.rate, args.seed, ui_port=args.ui_port))
    return 0


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """--config and --reference, shared by every command that builds a Config."""
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="PROFILE",
        help="reference profile file (repeatable)",
    )


def _kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        help="host:port list (env DRIFTLINE_BOOTSTRAP_SERVERS, default localhost:9092)",
    )
    _config_flags(parser)
    parser.add_argument(
        "--no-idempotence",
        action="store_true",
        help="plain producer (for brokers without idempotent producers)",
    )
    for name in Topics.names():
        parser.add_argument(f"--{name}-topic", help=f"name of the {name} topic")


def _version() -> str:
    try:
        return importlib.metadata.version("driftline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _logging_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="driftline's log level; faust and aiokafka chatter shows only at debug (default info)",
    )
    flags.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text, or json: one object per line for log pipelines (default text)",
    )
    return flags


LOGGING_FLAGS = _logging_flags()
"""``--log-level`` and ``--log-format``, on every command."""


def _bounded(kind: type, low: float, high: float | None = None, *, what: str) -> Any:
    """An argparse type: a ``kind`` number from ``low`` to ``high`` (inclusive), refused
    with a one-line usage error naming what it should be."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


POSITIVE = _bounded(int, 1, what="a whole number of 1 or more")
NON_NEGATIVE = _bounded(int, 0, what="a whole number of 0 or more")
SECONDS = _bounded(float, 1e-3, what="a number of seconds above 0")
PORT = _bounded(int, 1, 65_535, what="a port number (1-65535)")


def _command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with the logging flags."""
    return sub.add_parser(name, parents=[LOGGING_FLAGS], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Watch ML models in production: drift, regressions, feedback loops.",
    )
    parser.add_argument("--version", action="version", version=f"driftline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    rp = _command(sub, "replay", help="run the detectors over a recorded JSONL stream")
    rp.add_argument("file", help="JSONL file of prediction and outcome events")
    rp.add_argument("--out", help="write decisions here as JSONL (default: stdout)")
    _config_flags(rp)
    rp.add_argument("--dead-letters", help="write dead letters here as JSONL")
    rp.add_argument("--report", help="also write the decisions as a self-contained HTML report")
    rp.add_argument("--quiet", action="store_true", help="do not print decisions to stdout")
    rp.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="what FILE holds: driftline events (default), or recorded Kafka records of a "
        "KServe, Seldon or mapped log (see README 'Input formats')",
    )
    rp.add_argument(
        "--partitions",
        type=POSITIVE,
        default=1,
        help="shard like a worker reading topics with this many partitions",
    )
    rp.set_defaults(func=_replay)

    rep = _command(sub, "report", help="decisions as one self-contained HTML file")
    rep.add_argument("decisions", help="JSONL of decisions (replay --out, or a decision topic)")
    rep.add_argument("--out", required=True, help="HTML file to write")
    rep.add_argument("--title", help="page title (default: the file's name)")
    rep.set_defaults(func=_report)

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    rb = _command(ref_sub, "build", help="build a profile from training/validation data")
    rb.add_argument("input", help="JSONL (events or {features, prediction, label}) or CSV")
    rb.add_argument("--out", required=True, help="profile file to write")
    rb.add_argument("--model-id", required=True)
    rb.add_argument("--model-version", help="limit the profile to one version")
    rb.add_argument("--name", help="profile name (default: the input file's stem)")
    rb.add_argument("--config", help="TOML configuration file (its [detectors] table)")
    rb.add_argument("--max-rows", type=POSITIVE, default=DEFAULT_MAX_ROWS)
    rb.add_argument("--label-column", default="label")
    rb.add_argument("--prediction-column", default="prediction")
    rb.set_defaults(func=_reference_build)

    wk = _command(sub, "worker", help="the long-running stream worker")
    _kafka_flags(wk)
    wk.add_argument("--group-id", help="consumer group (env DRIFTLINE_GROUP_ID, default driftline)")
    wk.add_argument("--metrics-port", type=PORT, help="serve Prometheus metrics on this port")
    wk.add_argument("--ui-port", type=PORT, help="serve the live view on this port")
    wk.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="format of the input topics (default driftline; [input] format in TOML)",
    )
    wk.add_argument(
        "--checkpoint-interval",
        type=SECONDS,
        metavar="SECONDS",
        help="seconds between state checkpoints (default 5)",
    )
    wk.set_defaults(func=_worker)

    dm = _command(sub, "demo", help="embedded broker, simulated fleet, worker, live decisions")
    dm.add_argument("--duration", type=SECONDS, default=60.0, help="seconds to run (default 60)")
    dm.add_argument("--rate", type=POSITIVE, default=3_000, help="events per second (default 3000)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--ui-port", type=PORT, help="port of the live view (default: a free one)")
    dm.set_defaults(func=_demo)

    tp = sub.add_parser("topics", help="topic administration")
    tp_sub = tp.add_subparsers(dest="topics_command", required=True)
    tc = _command(tp_sub, "create", help="create every topic driftline uses")
    _kafka_flags(tc)
    tc.add_argument(
        "--partitions",
        type=POSITIVE,
        default=4,
        help="partitions of the input, decision and dead-letter topics (default 4)",
    )
    tc.add_argument("--replication-factor", type=POSITIVE, default=1)
    tc.set_defaults(func=_topics_create)

    rpub = _command(ref_sub, "publish", help="send a profile to running workers")
    rpub.add_argument("profile", help="profile file written by 'reference build'")
    _kafka_flags(rpub)
    rpub.set_defaults(func=_reference_publish)

    sim = _command(sub, "simulate", help="write a seeded synthetic stream as JSONL")
    sim.add_argument("--scenario", choices=SCENARIOS, default="mean_shift")
    sim.add_argument("--predictions", type=POSITIVE, default=100_000)
    sim.add_argument("--change-at", type=NON_NEGATIVE)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--model-id", default="credit-risk")
    sim.add_argument(
        "--canary-share",
        type=float,
        default=0.0,
        help="route this share of predictions to a canary version v2",
    )
    sim.add_argument(
        "--canary-flip",
        type=float,
        default=0.12,
        help="share of the canary's scores inverted (0.12: about 5 error-rate points worse)",
    )
    sim.add_argument(
        "--feedback-sim",
        choices=sorted(SIMULATIONS),
        help="a feedback-loop simulation (or its control) instead of --scenario (not named "
        "--loop: faust reads that flag from the command line at import)",
    )
    sim.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="write the traffic as recorded Kafka records of this format (KServe logger "
        "events, Seldon model topics, or a mapped log), for 'replay --input-format'",
    )
    sim.add_argument("--out", required=True)
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
        return int(args.func(args))
    except DriftlineError as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file that cannot be read or written, a port already taken: what the user
        # named, in one line (errno's text and the path).
        where = f": {exc.filename}" if exc.filename else ""
        print(f"driftline: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
