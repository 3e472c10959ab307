"""``driftline replay``: the detectors and decision policy over a recorded JSONL stream."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from driftline.detectors.decision import Decision
from driftline.detectors.engine import Engine
from driftline.detectors.intake.clock import PartitionClock
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.deadletter import DeadLetter
from driftline.schemas.decode import DEFAULT_MAX_MESSAGE_BYTES, FUTURE_TIMESTAMP, decode
from driftline.schemas.exceptions import DecodeError
from driftline.schemas.formats import InputSettings, SourceRecord
from driftline.schemas.formats.recorded import record_from_line
from driftline.schemas.records import Event
from driftline.streams.formats.ingest import ForeignIntake
from driftline.streams.formats.ingest import letter as foreign_letter
from driftline.streams.kafka import partition_for

REPLAY_BATCH_EVENTS = 4_096
"""Events decoded before the detectors run: large enough to amortise numpy's per-call
cost, small enough to keep a batch's arrays in cache."""

PROGRESS_INTERVAL_S = 0.5
"""How often the progress line is redrawn on a terminal."""


@dataclass(slots=True)
class ReplayResult:
    """What a replay saw and decided."""

    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    lines: int = 0
    seconds: float = 0.0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    pairs: dict[str, int] = field(default_factory=dict)
    """Pairing counts of a foreign format's requests and responses (empty otherwise)."""


def iter_lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines of a JSONL file as bytes (without the newline)."""
    with path.open("rb") as fh:
        for line in fh:
            stripped = line.strip()
            if stripped:
                yield stripped


class Staged:
    """Both stages of the worker over a file: events routed to input partitions like the
    worker's records (Kafka's default partitioner on ``request_id``), an intake per
    partition, merged per model into one model stage. ``driftline replay --partitions N``
    reproduces a worker reading N-partition topics."""

    def __init__(self, pipeline: StagedPipeline) -> None:
        self.pipeline = pipeline

    @property
    def partitions(self) -> int:
        return len(self.pipeline.intakes)

    @property
    def settings(self) -> DetectorSettings:
        return self.pipeline.settings

    @property
    def counts(self) -> dict[str, int]:
        return self.pipeline.counts

    @property
    def join_counts(self) -> dict[str, int]:
        return self.pipeline.join_counts

    def process(self, events: list[Event]) -> list[Decision]:
        n = self.partitions
        if n == 1:
            return self.pipeline.process([events])
        routed: list[list[Event]] = [[] for _ in range(n)]
        for event in events:
            routed[partition_for(event.request_id.encode(), n)].append(event)
        return self.pipeline.process(routed)

    def flush(self) -> list[Decision]:
        return self.pipeline.flush()


class PartitionClocks:
    """A `PartitionClock` per input partition, routed as the worker's records are.

    A file has no broker timestamps: every line counts as produced when the replay
    started (a recorded stream lies in the past), so before a model has a full clock
    window nothing after that instant plus the allowance is admitted, and after it events
    are judged against the model's recent event time alone.
    """

    def __init__(self, partitions: int, max_future_skew_ms: int, started_ms: int) -> None:
        self.clocks = [PartitionClock(max_future_skew_ms) for _ in range(partitions)]
        self.started_ms = started_ms

    def admit(self, events: list[Event]) -> np.ndarray:
        """Which events are admitted (a boolean per event, in order)."""
        ts = np.fromiter((e.ts for e in events), np.int64, len(events))
        produced = np.full(len(ts), self.started_ms, np.int64)
        models = [e.model_id for e in events]
        if len(self.clocks) == 1:
            return self.clocks[0].admit(models, ts, produced)
        n = len(self.clocks)
        parts = np.fromiter(
            (partition_for(e.request_id.encode(), n) for e in events), np.int64, len(events)
        )
        admitted = np.ones(len(events), dtype=bool)
        for p, clock in enumerate(self.clocks):
            where = np.flatnonzero(parts == p)
            if len(where):
                admitted[where] = clock.admit(
                    [models[i] for i in where.tolist()], ts[where], produced[where]
                )
        return admitted

    def message(self, event: Event) -> str:
        n = len(self.clocks)
        p = 0 if n == 1 else partition_for(event.request_id.encode(), n)
        clock = self.clocks[p]
        return (
            f"ts {event.ts} is more than max_future_skew_ms={clock.max_future_skew_ms} ahead "
            f"of model {event.model_id!r}'s recent event time {clock.now(event.model_id)} on "
            f"partition {p}; fix the producer's clock or timestamp units and re-publish"
        )


def replay(
    lines: Iterable[bytes],
    engine: Engine | Staged,
    source: str = "-",
    on_decisions: object = None,
    progress: object = None,
) -> ReplayResult:
    """Decode, dead-letter and process every line; returns decisions and counts.

    ``on_decisions`` (a callable taking a list of decisions) and ``progress`` (a callable
    taking the number of lines read) are optional hooks for the CLI.
    """
    result = ReplayResult()
    batch: list[Event] = []
    append = batch.append
    lines_of: list[tuple[int, bytes]] = []
    """Line number and bytes of each event in ``batch`` (for its dead letter, if any)."""
    keep = lines_of.append
    partitions = engine.partitions if isinstance(engine, Staged) else 1
    clocks = PartitionClocks(
        partitions, engine.settings.max_future_skew_ms, int(time.time() * 1000)
    )
    started = time.perf_counter()
    offset = -1
    for offset, raw in enumerate(lines):
        try:
            append(decode(raw))
            keep((offset, raw))
        except DecodeError as exc:
            _dead_letter(result, DeadLetter(exc.reason, exc.message, source, 0, offset, raw))
        if len(batch) >= REPLAY_BATCH_EVENTS:
            _run(engine, _admitted(clocks, batch, lines_of, source, result), result, on_decisions)
            batch = []
            append = batch.append
            lines_of = []
            keep = lines_of.append
            if callable(progress):
                progress(offset + 1)
    if batch:
        _run(engine, _admitted(clocks, batch, lines_of, source, result), result, on_decisions)
    if isinstance(engine, Staged):
        _deliver(engine.flush(), result, on_decisions)
    result.lines = offset + 1
    result.seconds = time.perf_counter() - started
    return result


def _dead_letter(result: ReplayResult, letter: DeadLetter) -> None:
    result.dead_letters.append(letter)
    result.dead_letter_reasons[letter.reason] += 1


def _admitted(
    clocks: PartitionClocks,
    batch: list[Event],
    lines_of: list[tuple[int, bytes]],
    source: str,
    result: ReplayResult,
) -> list[Event]:
    """The batch without the events dated too far ahead (those become dead letters)."""
    admitted = clocks.admit(batch)
    if admitted.all():
        return batch
    for i in np.flatnonzero(~admitted).tolist():
        offset, raw = lines_of[i]
        message = clocks.message(batch[i])
        _dead_letter(result, DeadLetter(FUTURE_TIMESTAMP, message, source, 0, offset, raw))
    return [e for e, ok in zip(batch, admitted.tolist(), strict=True) if ok]


def _run(engine: Engine | Staged, batch: list[Event], result: ReplayResult, hook: object) -> None:
    _deliver(engine.process(batch), result, hook)


def _deliver(decisions: list[Decision], result: ReplayResult, hook: object) -> None:
    if decisions:
        result.decisions += decisions
        if callable(hook):
            hook(decisions)


class Progress:
    """A one-line progress indicator on stderr for large files (only on a terminal)."""

    def __init__(self, total_bytes: int, stream: IO[str] = sys.stderr) -> None:
        self.total = total_bytes
        self.stream = stream
        self.enabled = stream.isatty() and total_bytes > 5_000_000
        self.started = time.perf_counter()
        self.last = 0.0
        self.bytes_per_line = 0.0

    def __call__(self, lines: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        elapsed = now - self.started
        rate = lines / elapsed if elapsed else 0.0
        self.stream.write(f"\r  {lines:,} events  {rate:,.0f} events/s ")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")


def summary_table(result: ReplayResult, engine: Engine | Staged) -> str:
    """The end-of-replay summary: events, decisions by kind, dead letters by reason."""
    rate = result.lines / result.seconds if result.seconds else 0.0
    rows = [
        ("lines read", f"{result.lines:,}"),
        ("predictions", f"{engine.counts['predictions']:,}"),
        ("outcomes", f"{engine.counts['outcomes']:,}"),
        ("duplicates dropped", f"{engine.counts['duplicates']:,}"),
        ("dead letters", f"{len(result.dead_letters):,}"),
    ]
    rows += [(f"  {reason}", f"{n:,}") for reason, n in sorted(result.dead_letter_reasons.items())]
    join_counts = engine.join_counts if isinstance(engine, Staged) else engine.join.counts
    rows += [(f"join {k}", f"{v:,}") for k, v in join_counts.items()]
    rows += [(f"pairs {k}", f"{v:,}") for k, v in result.pairs.items()]
    models = engine.pipeline.engine if isinstance(engine, Staged) else engine.models
    # Labels whose minute had not matured when the stream ended: no test has read them.
    rows.append(("labels still maturing", f"{models.labels_held:,}"))
    rows.append(("decisions", f"{len(result.decisions):,}"))
    by_kind = Counter(f"{d.type}:{d.kind}" for d in result.decisions)
    rows += [(f"  {k}", f"{v:,}") for k, v in sorted(by_kind.items())]
    rows.append(("throughput", f"{rate:,.0f} events/s ({result.seconds:.2f} s)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def decision_line(decision: Decision) -> bytes:
    """A decision as one JSONL line (``emitted_at`` is wall time)."""
    return orjson.dumps(decision.to_dict(int(time.time() * 1000))) + b"\n"


def replay_records(
    lines: Iterable[bytes],
    engine: Engine | Staged,
    settings: InputSettings,
    outcomes_topic: str,
    on_decisions: object = None,
    progress: object = None,
) -> ReplayResult:
    """`replay` for a foreign input format: recorded Kafka records (see
    `schemas.formats.recorded`), read and paired as the worker's stage 1 reads them after
    re-keying (pairing is by correlation id, so one pairing serves every partition)."""
    result = ReplayResult()
    reader = ForeignIntake(settings, outcomes_topic, DEFAULT_MAX_MESSAGE_BYTES)
    partitions = engine.partitions if isinstance(engine, Staged) else 1
    clocks = PartitionClocks(
        partitions, engine.settings.max_future_skew_ms, int(time.time() * 1000)
    )
    started = time.perf_counter()
    records: list[SourceRecord] = []
    offset = -1

    def run_batch() -> None:
        events, sources, letters, expired, _ = reader.read(records)
        for dead in letters + expired:
            _dead_letter(result, dead)
        if not events:
            return
        admitted = clocks.admit(events)
        if not admitted.all():
            for i in np.flatnonzero(~admitted).tolist():
                message = clocks.message(events[i])
                _dead_letter(result, foreign_letter(FUTURE_TIMESTAMP, message, sources[i]))
            events = [e for e, ok in zip(events, admitted.tolist(), strict=True) if ok]
        _run(engine, events, result, on_decisions)

    for offset, raw in enumerate(lines):
        try:
            records.append(record_from_line(raw, offset))
        except DecodeError as exc:
            _dead_letter(result, DeadLetter(exc.reason, exc.message, "-", 0, offset, raw))
        if len(records) >= REPLAY_BATCH_EVENTS:
            run_batch()
            records = []
            if callable(progress):
                progress(offset + 1)
    if records:
        run_batch()
    if isinstance(engine, Staged):
        _deliver(engine.flush(), result, on_decisions)
    result.lines = offset + 1
    result.seconds = time.perf_counter() - started
    result.pairs = {**reader.pairing.counts, "pending": reader.pairing.size}
    return result
