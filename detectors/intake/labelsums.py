"""A slice's labels summed by the input stage, so that the model stage's work on a hot
model's labels is per slice, not per label.

A block of labels (`detectors.intake.blocks`) still hands the model stage one value per
label, which it converts and tests (about 1.5 us a label, measured by
``benchmarks/stage2_cost.py``). Where every reader of those labels needs only sums, the
input stage sends the sums instead (`LabelSums`), grouped by what the model stage holds
them by: the version, the minute the predictions were made (the label maturity's cohort,
`detectors.versions.maturity.COHORT_MS`) and the outcome (0 or 1, or `OTHER` for any
other label). Per group: labels, errors, the Brier score's and the realised-minus-estimated
error's sums and sums of squares, and the group's last label (time and id, what a
decision it triggers names); per outcome, a histogram of the label delays (the
maturity's bins). The model stage's readers take these as they take the columns: the
label maturity learns its horizon from the histograms, the cohorts wait for it
(`ModelVersions.observe_label_sums`), the concept monitor runs its CUSUM bank and windows
on a group's count of errors (`ConceptMonitor.update_sums`: a sum's increment is exactly
its labels', and a bank on sums can be later, never earlier, than on the labels, see
`detectors.stats.latch.LatchingBank.update`), and the version history and the promoted
champion's comparison and a live canary's take a group's counts. Outcomes that judged two versions'
predictions on the same request (a champion and a challenger or shadow) are also counted
per pair of versions and minute (the later of the two predictions', where the model
stage holds a pair): pairs, and those where only one of the two was right, which is all
the paired comparison reads (`PairedComparison.update_counts`).

The cost per slice is then that of its groups: two per minute of predictions its labels
judge and version (and one per minute and pair of versions), whatever the labels'
number.

A label is judged as the concept monitor of its version judges it: by the task and the
residual tolerance of the version's performance figure (`LabelSums.rules`, which the
model stage's monitors check against their own). A block is summed (`summed`) only where
nothing it holds needs a label by itself:

* the model's concept test is the CUSUM bank (River's detectors read label by label);
* the profile of each of its versions has a performance figure of one task, binary,
  multiclass or regression (the input stage judges labels as the concept monitor does:
  the task known before the first label);
* every label can be judged: a binary model's predictions are floats and its labels 0 or
  1 (`binary_label_values`), a regression's predictions and labels are numbers.

A regression's version comparisons read no error (as for its labels one by one, whose
error needs the tolerance only the concept monitor has), and its sums count no pairs.

A live canary is compared with its stable version on summed labels too
(`ModelVersions.compare_canary_sums`): a group also holds the sum and sum of squares of
its labels' log10 delays, so each labelled metric (error rate, Brier score, outcome
latency) takes a group's count, sum and sum of squares on its version's side at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from driftline.detectors.drift.reference import binary_label_values, prediction_error
from driftline.detectors.intake.blocks import LabelBlock
from driftline.detectors.versions.maturity import COHORT_MS, LOG_DELAY_BINS, OTHER

SUMMED_TASKS = ("binary", "multiclass", "regression")
"""Tasks whose labels may be summed (a ranking's predictions never travel in a block)."""


class Rule(NamedTuple):
    """How a version's labels are judged: its performance figure's task and residual
    tolerance (a regression's; None for the others), as its concept monitor does."""

    task: str
    tolerance: float | None


class LabelGroup(NamedTuple):
    """One version's labels of predictions made in one minute, with one outcome."""

    version: str
    cohort: int
    """Start of the minute the predictions were made in (epoch ms)."""
    outcome: int
    """The label: 0 or 1, or `OTHER` (a label that is neither, as a multiclass model's)."""
    n: int
    errors: int
    scored: int
    """Labels with a Brier score (the prediction a probability, ``scores_are_probabilities``)."""
    brier: float
    brier_sq: float
    gap_sum: float
    """Sum of realised minus estimated error over the scored labels."""
    gap_sq: float
    latency: float
    """Sum of the labels' log10 delays in seconds (a canary's outcome latency)."""
    latency_sq: float
    last_ts: int
    """Event time of the group's last outcome (in arrival order)."""
    last_event_id: str


class PairGroup(NamedTuple):
    """Outcomes that judged two versions' predictions on the same requests (a champion
    and a challenger or shadow), in one minute: the later of the two predictions'."""

    first: str
    second: str
    """The two versions, ``first < second``."""
    cohort: int
    n: int
    first_only: int
    """Pairs where only ``first`` was right."""
    second_only: int
    last_ts: int
    last_event_id: str


class LabelSums(NamedTuple):
    """A model's labels of (a part of) one slice from one input partition, summed."""

    model_id: str
    number: int
    """The slice: event time // ``slice_ms``."""
    first_event_id: str
    """The first outcome's event id (names the item)."""
    first_prediction_ts: int
    """The earliest prediction judged (the span of delays that could be seen)."""
    delays: list[list[int]]
    """``[outcome, bin, count]`` of the log delays (`LOG_DELAY_BINS`), per outcome."""
    groups: list[LabelGroup]
    """Per version, minute and outcome: every label, paired or not."""
    pairs: list[PairGroup]
    """Per two versions and minute: the outcomes that judged both."""
    rules: dict[str, Rule]
    """Per version, how its labels were judged."""

    @property
    def events(self) -> int:
        """Labels summed."""
        return sum(g.n for g in self.groups)

    @property
    def ts(self) -> int:
        """The latest of its outcomes' event times."""
        return max(g.last_ts for g in self.groups)

    @property
    def event_id(self) -> str:
        return f"labelsums/{self.number}/{self.first_event_id}"


def summed(
    block: LabelBlock, rules: Mapping[str, Rule], threshold: float, scored: bool
) -> LabelSums | None:
    """The block's labels summed, each judged by its version's rule (``rules``, one task
    for all), or None when a label cannot be judged (see the module's notes)."""
    found = judged(block, rules, threshold, scored)
    if found is None:
        return None
    error, brier, estimate, outcome = found
    t0 = np.asarray(block.prediction_ts, dtype=np.int64)
    ts = np.asarray(block.outcome_ts, dtype=np.int64)
    names = sorted(set(block.versions))
    if len(names) == 1:
        version = np.zeros(len(t0), np.int64)
    else:
        index = {name: i for i, name in enumerate(names)}
        version = np.fromiter((index[v] for v in block.versions), np.int64, len(t0))
    cohort = t0 - t0 % COHORT_MS
    keys = np.stack([version, cohort, outcome.astype(np.int64)], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    size = len(unique)
    scored_rows = np.isfinite(brier)
    gap = np.where(scored_rows, error - estimate, 0.0)
    b = np.where(scored_rows, brier, 0.0)

    def by_group(weights: np.ndarray) -> list[float]:
        return np.bincount(inverse, weights=weights, minlength=size).tolist()

    counts = np.bincount(inverse, minlength=size).tolist()
    errors = by_group(error)
    n_scored = by_group(scored_rows.astype(np.float64))
    brier_sum, brier_sq = by_group(b), by_group(b * b)
    gap_sum, gap_sq = by_group(gap), by_group(gap * gap)
    log_delay = np.log10(np.maximum(ts - t0, 1) / 1000.0)
    latency, latency_sq = by_group(log_delay), by_group(log_delay * log_delay)
    last = np.zeros(size, np.int64)
    last[inverse] = np.arange(len(t0))  # the group's last row (rows in arrival order)
    groups = []
    for g, ((v, c, o), row) in enumerate(zip(unique.tolist(), last.tolist(), strict=True)):
        group = LabelGroup(
            names[int(v)], int(c), int(o), counts[g], round(errors[g]), round(n_scored[g]),
            brier_sum[g], brier_sq[g], gap_sum[g], gap_sq[g], latency[g], latency_sq[g],
            block.outcome_ts[row], block.event_ids[row],
        )  # fmt: skip
        groups.append(group)
    width = len(LOG_DELAY_BINS)
    bins = np.minimum(np.searchsorted(LOG_DELAY_BINS, log_delay, "right"), width - 1)
    # One key per outcome and bin (`OTHER`'s are negative: floor division gives it back).
    pairs, tally = np.unique(outcome.astype(np.int64) * width + bins, return_counts=True)
    delays = [
        [k // width, k % width, c] for k, c in zip(pairs.tolist(), tally.tolist(), strict=True)
    ]
    single = block.outcomes[-1] == len(t0) - 1  # every outcome judged one prediction
    regression = any(rule.task == "regression" for rule in rules.values())
    paired = [] if single or regression else _pairs(block, error, cohort)
    return LabelSums(
        block.model_id, block.number, block.event_ids[0], int(t0.min()), delays, groups,
        paired, {version: rules[version] for version in names},
    )  # fmt: skip


def judged(
    block: LabelBlock, rules: Mapping[str, Rule], threshold: float, scored: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per label: the error (1 or 0), Brier score and estimated error (NaN unless a
    binary model's probability) and outcome (a binary model's label, else `OTHER`), as
    `detectors.drift.reference.label_values` gives them with the concept monitor's
    tolerance; None when the versions' tasks differ or a label cannot be judged."""
    tasks = {rules[version].task for version in set(block.versions)}
    if len(tasks) != 1 or not tasks <= set(SUMMED_TASKS):
        return None
    if tasks == {"binary"}:
        return binary_label_values(block.predictions, block.labels, threshold, scored)
    (task,) = tasks
    errors = [
        prediction_error(task, p, y, threshold, rules[v].tolerance)
        for p, y, v in zip(block.predictions, block.labels, block.versions, strict=True)
    ]
    if None in errors:
        return None
    nothing = np.full(len(errors), math.nan)
    other = np.full(len(errors), float(OTHER))  # only a binary model's labels are classes
    return np.asarray(errors, dtype=np.float64), nothing, nothing.copy(), other


def _pairs(block: LabelBlock, error: np.ndarray, cohort: np.ndarray) -> list[PairGroup]:
    """The discordance of every two versions' labels of one outcome, per minute (the later
    of their predictions', where the model stage holds a pair's rows)."""
    outcomes, versions = block.outcomes, block.versions
    right = (error == 0.0).tolist()
    minute = cohort.tolist()
    found: dict[tuple[str, str, int], list[Any]] = {}
    start, n = 0, len(outcomes)
    while start < n:
        stop = start + 1
        while stop < n and outcomes[stop] == outcomes[start]:
            stop += 1
        for i in range(start, stop):
            for j in range(i + 1, stop):
                a, b = (i, j) if versions[i] < versions[j] else (j, i)
                if versions[a] == versions[b]:
                    continue
                key = (versions[a], versions[b], max(minute[a], minute[b]))
                entry = found.get(key)
                if entry is None:
                    entry = found[key] = [0, 0, 0, 0, ""]
                entry[0] += 1
                entry[1] += right[a] and not right[b]
                entry[2] += right[b] and not right[a]
                entry[3], entry[4] = block.outcome_ts[start], block.event_ids[start]
        start = stop
    return [PairGroup(*key, *entry) for key, entry in sorted(found.items())]


def merge_sums(first: LabelSums, then: LabelSums) -> LabelSums:
    """The sums of two blocks of one model's slice, ``then``'s labels after ``first``'s."""
    groups = {(g.version, g.cohort, g.outcome): g for g in first.groups}
    for g in then.groups:
        key = (g.version, g.cohort, g.outcome)
        was = groups.get(key)
        if was is None:
            groups[key] = g
            continue
        groups[key] = LabelGroup(
            g.version, g.cohort, g.outcome, was.n + g.n, was.errors + g.errors,
            was.scored + g.scored, was.brier + g.brier, was.brier_sq + g.brier_sq,
            was.gap_sum + g.gap_sum, was.gap_sq + g.gap_sq, was.latency + g.latency,
            was.latency_sq + g.latency_sq, g.last_ts, g.last_event_id,
        )  # fmt: skip
    delays: dict[tuple[int, int], int] = {}
    for outcome, bin_, count in (*first.delays, *then.delays):
        delays[(outcome, bin_)] = delays.get((outcome, bin_), 0) + count
    pairs = {(p.first, p.second, p.cohort): p for p in first.pairs}
    for p in then.pairs:
        pair_key = (p.first, p.second, p.cohort)
        held = pairs.get(pair_key)
        pairs[pair_key] = p if held is None else p._replace(
            n=held.n + p.n,
            first_only=held.first_only + p.first_only,
            second_only=held.second_only + p.second_only,
        )  # fmt: skip
    return LabelSums(
        first.model_id,
        first.number,
        first.first_event_id,
        min(first.first_prediction_ts, then.first_prediction_ts),
        [[o, b, c] for (o, b), c in sorted(delays.items())],
        sorted(groups.values(), key=lambda g: (g.version, g.cohort, g.outcome)),
        [pairs[pair_key] for pair_key in sorted(pairs)],
        {**first.rules, **then.rules},
    )


def sums_to_wire(sums: LabelSums) -> list[Any]:
    """The fields of a `LabelSums` after its model id (which travels once per message)."""
    return [
        sums.number,
        sums.first_event_id,
        sums.first_prediction_ts,
        sums.delays,
        [list(g) for g in sums.groups],
        [list(p) for p in sums.pairs],
        {version: list(rule) for version, rule in sums.rules.items()},
    ]


def sums_from_wire(model_id: str, row: Sequence[Any]) -> LabelSums:
    """Inverse of `sums_to_wire`; also reads the sums of the build before (`_BEFORE_RULES`),
    which may still be on the summaries topic or in an input stage's checkpoint."""
    if len(row) == len(LabelSums._fields) - 2:
        row = [*row, None]
    if len(row) != len(LabelSums._fields) - 1:
        raise ValueError(f"label sums have 7 fields, got {len(row)}")
    number, first_event_id, first_prediction_ts, delays, groups, pair_rows, rule_rows = row
    if not groups:
        raise ValueError("label sums hold no group")
    made = [_record(LabelGroup, _group_row(g), "a label group") for g in groups]
    if rule_rows is None:
        rule_rows = {g.version: _BEFORE_RULES for g in made}
    if any(g.outcome not in _OUTCOMES or not 0 <= g.errors <= g.n or g.n < 1 for g in made):
        raise ValueError("a label group's counts are out of range")
    for outcome, bin_, count in delays:
        if outcome not in _OUTCOMES or not 0 <= bin_ < len(LOG_DELAY_BINS) or count < 1:
            raise ValueError("a label delay count is out of range")
    pairs = [_record(PairGroup, p, "a pair group") for p in pair_rows]
    if any(p.n < 1 or p.first_only + p.second_only > p.n or p.first >= p.second for p in pairs):
        raise ValueError("a pair group's counts or versions are out of range")
    rules = {
        version: _record(Rule, rule, "a version's rule") for version, rule in rule_rows.items()
    }
    if any(rule.task not in SUMMED_TASKS for rule in rules.values()) or {
        g.version for g in made
    } - set(rules):
        raise ValueError("label sums name a task they cannot hold or lack a version's rule")
    return LabelSums(
        model_id, number, first_event_id, first_prediction_ts, delays, made, pairs, rules
    )


_OUTCOMES = (0, 1, OTHER)

_BEFORE_RULES = Rule("binary", None)
"""Sums of the build before this one have no rules: it summed binary models' labels
only."""

_BEFORE_LATENCY = 2
"""Fields a group of that build lacks (its delays' sums, `LabelGroup.latency`)."""


def _group_row(row: Sequence[Any]) -> Sequence[Any]:
    """A group's row; one of the build before gets NaN for its delays' sums (null on the
    wire, which has no NaN), which the model stage takes as not known (no canary is
    compared on such a group)."""
    at = LabelGroup._fields.index("latency")
    if len(row) == len(LabelGroup._fields) - _BEFORE_LATENCY:
        row = [*row[:at], None, None, *row[at:]]
    if len(row) > at and row[at] is None:
        row = [*row[:at], math.nan, math.nan, *row[at + _BEFORE_LATENCY :]]
    return row


_Record = TypeVar("_Record", LabelGroup, PairGroup, Rule)


def _record(kind: type[_Record], row: Sequence[Any], name: str) -> _Record:
    """A group read back from its row, which must hold every field."""
    if len(row) != len(kind._fields):
        raise ValueError(f"{name} has {len(kind._fields)} fields, got {len(row)}")
    return kind(*row)


__all__ = [
    "OTHER",
    "SUMMED_TASKS",
    "LabelGroup",
    "LabelSums",
    "PairGroup",
    "Rule",
    "judged",
    "merge_sums",
    "summed",
    "sums_from_wire",
    "sums_to_wire",
]
