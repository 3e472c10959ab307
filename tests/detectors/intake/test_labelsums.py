"""Labels summed by the input stage: with slices on and a performance figure in the
profile (binary, multiclass or regression), a slice's labels reach the model stage as
sums per version, prediction minute and outcome; they hold what the labels did, and the
model stage decides on them as it does on the labels (concept drift, promotions, paired
shadows, canaries), a slice or a part of a held minute later at most."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import orjson
import pytest

from driftline.detectors.drift.reference import (
    ReferenceBuilder,
    ReferenceProfile,
    label_values,
    prediction_errors,
)
from driftline.detectors.engine import Engine
from driftline.detectors.intake.labelsums import (
    OTHER,
    LabelGroup,
    LabelSums,
    sums_from_wire,
    sums_to_wire,
)
from driftline.detectors.intake.stage import LABEL, LABEL_SUMS, LABELS, Intake, item_to_wire
from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.versions.maturity import COHORT_MS, LOG_DELAY_BINS
from driftline.detectors.versions.registry import ModelVersions
from driftline.schemas.records import Event, Prediction
from driftline.streams.replay import Staged
from driftline.streams.simulation.traffic import (
    StreamSpec,
    as_task,
    generate,
    with_canary,
    with_promotion,
)
from tests.detectors.versions.test_registry import _outcome_ordered_stream

SETTINGS = DetectorSettings(
    slice_ms=2_000, warmup_events=2_000, window_events=2_000, label_warmup_events=1_000
)
"""Slices of 200 predictions (and about 100 labels) at the simulator's 10 ms spacing."""
MODEL = "credit-risk"


def labelled_profile(events: list[Event], model_id: str = MODEL) -> ReferenceProfile:
    """A profile of ``events``' predictions with their labels (a performance figure)."""
    labels = {e.request_id: e.label for e in events if type(e) is not Prediction}
    builder = ReferenceBuilder(SETTINGS, 20_000)
    for e in events:
        if type(e) is Prediction:
            builder.add(e.features, e.prediction, labels.get(e.request_id))
    return builder.build("training", model_id)


def training(seed: int = 99) -> ReferenceProfile:
    return labelled_profile(generate(StreamSpec(n_predictions=20_000, seed=seed)))


def _decisions(
    events: list[Event],
    profile: ReferenceProfile,
    settings: DetectorSettings = SETTINGS,
    model_id: str = MODEL,
) -> list[dict]:
    """Decisions of both stages on 4 partitions, every field."""
    return _staged(events, profile, settings, model_id)[0]


def _staged(
    events: list[Event], profile: ReferenceProfile, settings: DetectorSettings, model_id: str
) -> tuple[list[dict], Staged]:
    """`_decisions`, and both stages as the stream left them."""
    staged = Staged(StagedPipeline(4, settings, {model_id: profile}))
    out = []
    for i in range(0, len(events), 4_096):
        out += staged.process(events[i : i + 4_096])
    out += staged.flush()
    return [d.to_dict(0) for d in out], staged


def test_sums_hold_what_the_labels_did() -> None:
    """Every label of the stream is in one group once: counts, errors, Brier scores and
    estimate gaps add up to the labels' own (from the blocks the same labels travel in
    without a performance figure), the delays' histogram to their bins, the groups' keys
    to their version, minute and outcome; sums read back from the wire are equal."""
    events = generate(StreamSpec(n_predictions=6_000, seed=4))
    summed_items = Intake(SETTINGS, profiles={MODEL: training()}).process(events)[MODEL]
    blocks = [i.event for i in Intake(SETTINGS).process(events)[MODEL] if i.kind == LABELS]
    sums = [i.event for i in summed_items if i.kind == LABEL_SUMS]
    assert sums and not [i for i in summed_items if i.kind in (LABEL, LABELS)]

    predictions = [p for b in blocks for p in b.predictions]
    labels = [y for b in blocks for y in b.labels]
    error, brier, estimate, outcome = label_values("binary", predictions, labels, 0.5, True)
    groups = [g for s in sums for g in s.groups]
    assert sum(g.n for g in groups) == len(labels) == sum(s.events for s in sums)
    assert sum(g.errors for g in groups) == error.sum()
    assert sum(g.scored for g in groups) == len(labels)
    assert sum(g.brier for g in groups) == pytest.approx(brier.sum())
    assert sum(g.brier_sq for g in groups) == pytest.approx((brier**2).sum())
    assert sum(g.gap_sum for g in groups) == pytest.approx((error - estimate).sum())

    t0 = np.array([t for b in blocks for t in b.prediction_ts])
    ts = np.array([t for b in blocks for t in b.outcome_ts])
    keys = Counter(zip((t0 - t0 % COHORT_MS).tolist(), outcome.astype(int).tolist(), strict=True))
    found: Counter[tuple[int, int]] = Counter()
    for g in groups:
        found[(g.cohort, g.outcome)] += g.n
    assert found == keys
    assert all(g.version == "v1" for g in groups)
    bins = np.searchsorted(LOG_DELAY_BINS, np.log10(np.maximum(ts - t0, 1) / 1000), "right")
    delays: Counter[tuple[int, int]] = Counter()
    for s in sums:
        for o, b, c in s.delays:
            delays[(o, b)] += c
    assert delays == Counter(zip(outcome.astype(int).tolist(), bins.tolist(), strict=True))

    for s in sums:
        assert sums_from_wire(MODEL, orjson.loads(orjson.dumps(sums_to_wire(s)))) == s


def test_a_hot_slice_goes_as_one_sum_and_survives_a_checkpoint() -> None:
    """Blocks sent full in a hot slice are gathered into one sum per slice (the model
    stage's items per slice do not grow with the labels), every label still counted
    once; what was gathered is in the input stage's state, and an intake restored from it
    mid-slice sends what the uninterrupted one sends."""
    events = generate(StreamSpec(n_predictions=12_000, seed=6, event_ms=1))
    columns = Intake(SETTINGS, block_bytes=4_000)
    joined = columns.process(events)[MODEL] + columns.flush_slices()[MODEL]
    joined = [i for i in joined if i.kind == LABELS]
    labels = sum(b.event.events for b in joined)

    def intake() -> Intake:
        return Intake(SETTINGS, profiles={MODEL: training()}, block_bytes=4_000)

    whole = intake()
    items = whole.process(events)[MODEL] + whole.flush_slices().get(MODEL, [])
    sums = [i.event for i in items if i.kind == LABEL_SUMS]
    numbers = [s.number for s in sums]
    assert len(numbers) == len(set(numbers)) and len(sums) < len(joined) / 3
    assert sum(s.events for s in sums) == labels

    first = intake()
    cut = 7_001
    before = first.process(events[:cut])[MODEL]
    assert MODEL in first.held_sums
    state = orjson.loads(orjson.dumps(first.state()))
    second = intake()
    second.restore(state)
    after = second.process(events[cut:])[MODEL] + second.flush_slices().get(MODEL, [])

    def labelled(found: list) -> list:
        return [(i.seq, item_to_wire(i)) for i in found if i.kind in (LABELS, LABEL_SUMS)]

    assert labelled(before + after) == labelled(items)


def test_blocks_whose_labels_are_read_one_by_one_stay_columns() -> None:
    """No performance figure, a River concept detector, a regression figure without a
    tolerance (its labels cannot be judged): the labels go in blocks. A shadow's labels
    paired with the champion's on one outcome are summed, each in its version's groups
    and the outcome in its pair's."""
    events = generate(StreamSpec(n_predictions=4_000, seed=5))

    def kinds(settings: DetectorSettings, profile: ReferenceProfile | None, stream) -> set[int]:
        profiles = {MODEL: profile} if profile is not None else {}
        return {i.kind for i in Intake(settings, profiles=profiles).process(stream)[MODEL]}

    profile = training()
    assert LABEL_SUMS in kinds(SETTINGS, profile, events)
    assert LABEL_SUMS not in kinds(SETTINGS, None, events)
    river = replace(SETTINGS, concept_detector="adwin")
    assert LABEL_SUMS not in kinds(river, profile, events)
    assert profile.performance is not None
    regression = replace(profile, performance=replace(profile.performance, task="regression"))
    assert LABEL_SUMS not in kinds(SETTINGS, regression, events)
    shadowed = with_promotion(events, at=1_000, flip=0.0, seed=5, shadow_old=True)
    items = Intake(SETTINGS, profiles={MODEL: profile}).process(shadowed)[MODEL]
    assert LABELS not in {i.kind for i in items}
    sums = [i.event for i in items if i.kind == LABEL_SUMS]
    pairs = [p for s in sums for p in s.pairs]
    assert pairs and {(p.first, p.second) for p in pairs} == {("v1", "v2")}
    shadow = sum(g.n for s in sums for g in s.groups if g.version == "v1" and g.cohort > 0)
    assert sum(p.n for p in pairs) <= shadow


@pytest.mark.parametrize("seed", [7, 10])
def test_summed_labels_move_concept_drift_by_at_most_two_slices(seed: int) -> None:
    """The simulator's concept change: the concept drift decision on sums comes within two slices
    of label by label's (slices off: every label an item), and none on a stationary
    stream, on sums or items."""
    profile = training()
    spec = StreamSpec(scenario="concept", n_predictions=30_000, change_at=15_000, seed=seed)
    events = generate(spec)
    first = [
        next(d for d in found if d["kind"] == "concept_drift")
        for found in (
            _decisions(events, profile, replace(SETTINGS, slice_ms=0)),
            _decisions(events, profile),
        )
    ]
    assert abs(first[1]["ts"] - first[0]["ts"]) <= 2 * SETTINGS.slice_ms
    assert first[1]["evidence"]["trigger_event_id"].startswith("o")
    quiet = generate(StreamSpec(n_predictions=30_000, seed=seed))
    for settings in (SETTINGS, replace(SETTINGS, slice_ms=0)):
        assert not [d for d in _decisions(quiet, profile, settings) if d["kind"] == "concept_drift"]


def test_a_monitor_without_the_figure_warms_up_on_sums() -> None:
    """The input stages have the profile with its figure, the model stage one without (a
    profile published at run time reaches workers one by one): the concept monitor has
    no offline figure and learns its reference from the first summed labels, then finds
    the error rise; a stationary stream gives no concept drift."""
    unlabelled = ReferenceBuilder(SETTINGS, 20_000)
    for e in generate(StreamSpec(n_predictions=20_000, seed=99)):
        if type(e) is Prediction:
            unlabelled.add(e.features, e.prediction)
    stage_two = unlabelled.build("training", MODEL)

    def run(events):
        pipeline = StagedPipeline(4, SETTINGS, {MODEL: training()})
        pipeline.engine.profiles = {MODEL: stage_two}  # the input stages keep theirs
        staged = Staged(pipeline)
        found = []
        for i in range(0, len(events), 4_096):
            found += staged.process(events[i : i + 4_096])
        monitor = pipeline.engine.monitors[MODEL]["v1"].concept
        assert not monitor.offline and monitor.reference_rate is not None
        # Learnt from whole rows of sums (from labels it takes exactly the warm-up's).
        assert monitor.reference_count > SETTINGS.label_warmup_events
        return [d for d in found + staged.flush() if d.kind == "concept_drift"]

    spec = StreamSpec(scenario="concept", n_predictions=30_000, change_at=15_000, seed=7)
    events = generate(spec)
    change_ts = sorted(e.ts for e in events if type(e) is Prediction)[spec.change_at]
    found = run(events)
    assert found and min(d.ts for d in found) > change_ts
    assert run(generate(StreamSpec(n_predictions=30_000, seed=7))) == []


def test_summed_labels_wait_for_their_cohort_when_delays_depend_on_the_outcome() -> None:
    """Positive labels a day after the negatives, summed: the label maturity learns the
    horizon from the sums' delay histograms and the sums wait for their cohort, so a
    calibrated model shows no estimate gap and no concept drift; read as they come
    (label_maturity_quantile = 0) the early sums are mostly negatives, and the same
    model is reported as making fewer errors than its scores say. The sums still held
    at the end are counted as held labels (`ModelVersions.labels_held`)."""
    events = _outcome_ordered_stream(5)
    profile = labelled_profile(_outcome_ordered_stream(6), "lender")
    settings = replace(DetectorSettings(), slice_ms=60_000)
    matured, staged = _staged(events, profile, settings, "lender")
    assert [d for d in matured if d["kind"] in ("performance_estimate_gap", "concept_drift")] == []
    registry = staged.pipeline.engine.versions["lender"]
    held = sum(c.n for c in registry.summed.pending.values())
    assert registry.held.count == 0 and staged.pipeline.engine.labels_held == held > 0
    eager_settings = replace(settings, label_maturity_quantile=0)
    eager = _decisions(events, profile, eager_settings, "lender")
    gaps = [d for d in eager if d["kind"] == "performance_estimate_gap"]
    assert [d["evidence"]["value"] < 0 for d in gaps] == [True]


def test_a_worse_promotion_is_rolled_back_on_summed_labels() -> None:
    """v2 replaces v1 and errs about 5 points more: rolled back on sums after about the labelled
    events label by label needs (within a quarter, plus a slice's); an equal v2 is left
    alone."""
    profile = training()
    settings = replace(DetectorSettings(), slice_ms=2_000)
    base = generate(StreamSpec(n_predictions=120_000, seed=91))

    def rollback(events, settings):
        found = [d for d in _decisions(events, profile, settings) if d["type"] == "rollback"]
        return found[0] if found else None

    worse = with_promotion(base, at=60_000, flip=0.12, seed=91)
    on_items = rollback(worse, replace(settings, slice_ms=0))
    on_sums = rollback(worse, settings)
    assert on_items is not None and on_sums is not None
    assert (on_sums["kind"], on_sums["model_version"]) == ("promotion_regression", "v2")
    n_items = on_items["evidence"]["candidate"]["events"]
    n_sums = on_sums["evidence"]["candidate"]["events"]
    assert n_sums <= 1.25 * n_items + 100, (n_sums, n_items)
    equal = with_promotion(base, at=60_000, flip=0.0, seed=91)
    assert rollback(equal, settings) is None


def test_a_shadow_rolls_a_worse_promotion_back_on_summed_pairs() -> None:
    """v2 replaces v1, which goes on scoring the same requests as a shadow, and v2 errs
    about 5 points more: the paired comparison on the input stage's discordance counts rolls it
    back to v1 after about the pairs label by label needs (within a quarter, plus a
    slice's); with v2 as good as v1, no paired decision."""
    profile = training()
    base = generate(StreamSpec(n_predictions=50_000, seed=93))

    def paired(events, settings):
        return [
            d
            for d in _decisions(events, profile, settings)
            if d["detector"]["name"] == "paired_discordance_e_process"
        ]

    worse = with_promotion(base, at=15_000, flip=0.12, seed=93, shadow_old=True)
    on_items = paired(worse, replace(SETTINGS, slice_ms=0))
    on_sums = paired(worse, SETTINGS)
    assert [(d["type"], d["kind"]) for d in on_sums] == [("rollback", "promotion_regression")]
    assert [(d["type"], d["kind"]) for d in on_items] == [("rollback", "promotion_regression")]
    pairs = on_sums[0]["evidence"]["window"]["count"], on_items[0]["evidence"]["window"]["count"]
    assert pairs[0] <= 1.25 * pairs[1] + 100, pairs
    equal = with_promotion(base, at=15_000, flip=0.0, seed=93, shadow_old=True)
    assert paired(equal, SETTINGS) == []


def test_held_sums_survive_a_checkpoint() -> None:
    """A snapshot while summed labels wait for their cohort, restored in a fresh engine:
    the decisions after it are those of an uninterrupted run."""
    events = _outcome_ordered_stream(3, 4, rise=(60, 0.15))
    profile = labelled_profile(_outcome_ordered_stream(6), "lender")
    settings = replace(DetectorSettings(), slice_ms=60_000)
    whole = Engine(settings, {"lender": profile})
    uninterrupted = [d.decision_id for d in whole.process(events)]
    assert uninterrupted
    cut = len(events) * 2 // 3
    first = Engine(settings, {"lender": profile})
    before = [d.decision_id for d in first.process(events[:cut])]
    assert first.models.versions["lender"].summed.pending
    state = orjson.loads(orjson.dumps(first.state(), option=orjson.OPT_SERIALIZE_NUMPY))
    second = Engine(settings, {"lender": profile})
    second.restore(state)
    after = [d.decision_id for d in second.process(events[cut:])]
    assert before + after == uninterrupted


def test_sums_of_the_build_before_are_read() -> None:
    """Sums the build before wrote (no rules; groups without their delays' sums), still
    on the summaries topic or in an input stage's checkpoint at an upgrade: read as a
    binary model's, their delays' sums not known (NaN, null on the wire) and kept so
    through another round trip; the model stage holds them without extra sums, so no
    canary compares on them, and counts them as before."""
    events = generate(StreamSpec(n_predictions=3_000, seed=2))
    items = Intake(SETTINGS, profiles={MODEL: training()}).process(events)[MODEL]
    found: LabelSums = next(i.event for i in items if i.kind == LABEL_SUMS)
    row = sums_to_wire(found)
    latency = LabelGroup._fields.index("latency")
    before = [*row[:4], [[*g[:latency], *g[latency + 2 :]] for g in row[4]], row[5]]
    read = sums_from_wire(MODEL, orjson.loads(orjson.dumps(before)))
    assert read.rules == {"v1": ("binary", None)}
    assert all(np.isnan(g.latency) and np.isnan(g.latency_sq) for g in read.groups)
    assert [g.n for g in read.groups] == [g.n for g in found.groups]
    again = sums_from_wire(MODEL, orjson.loads(orjson.dumps(sums_to_wire(read))))
    assert all(np.isnan(g.latency) for g in again.groups)
    registry = ModelVersions(MODEL, SETTINGS)
    registry.horizon = 0.0
    now, _ = registry.observe_label_sums(again, 1)
    assert now and all(c.extra == [] and c.n > 0 for _, c in now)


def test_sums_read_back_from_the_wire_are_checked() -> None:
    """A field missing, no group, a count out of range, a delay bin out of range."""
    events = generate(StreamSpec(n_predictions=3_000, seed=2))
    items = Intake(SETTINGS, profiles={MODEL: training()}).process(events)[MODEL]
    found: LabelSums = next(i.event for i in items if i.kind == LABEL_SUMS)
    row = sums_to_wire(found)
    with pytest.raises(ValueError, match="7 fields"):
        sums_from_wire(MODEL, row[:-2])  # (6 are the build before's, read)
    with pytest.raises(ValueError, match="no group"):
        sums_from_wire(MODEL, [*row[:4], [], *row[5:]])
    group = list(row[4][0])
    group[4] = group[3] + 1  # more errors than labels
    with pytest.raises(ValueError, match="out of range"):
        sums_from_wire(MODEL, [*row[:4], [group], *row[5:]])
    with pytest.raises(ValueError, match="delay"):
        sums_from_wire(MODEL, [*row[:3], [[0, len(LOG_DELAY_BINS), 1]], *row[4:]])
    with pytest.raises(ValueError, match="pair group"):
        sums_from_wire(MODEL, [*row[:5], [["v2", "v1", 0, 3, 1, 1, 5, "o"]], row[6]])
    with pytest.raises(ValueError, match="rule"):
        sums_from_wire(MODEL, [*row[:6], {"v1": ["ranking", None]}])
    with pytest.raises(ValueError, match="rule"):
        sums_from_wire(MODEL, [*row[:6], {}])


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_labels_of_other_tasks_are_summed_as_their_concept_monitor_judges_them(task: str) -> None:
    """A multiclass and a regression model with a performance figure: their labels go as
    sums, whose errors are those the concept monitor finds with the figure's task and
    tolerance and whose outcome is `OTHER` (no label is 0 or 1); the concept change is
    found within three slices of label by label (labels that are not 0 or 1 wait for
    their minute to mature, and a held minute is read in parts of 25 labels or more,
    `detectors.versions.maturity.PART_VALUES`), a stationary stream gives no concept
    drift."""
    events = as_task(generate(StreamSpec(n_predictions=6_000, seed=4)), task, 4)
    training_events = generate(StreamSpec(n_predictions=20_000, seed=99))
    profile = labelled_profile(as_task(training_events, task, 99))
    assert profile.performance is not None and profile.performance.task == task
    tolerance = profile.performance.residual_tolerance
    assert (tolerance is None) == (task == "multiclass")
    summed_items = Intake(SETTINGS, profiles={MODEL: profile}).process(events)[MODEL]
    sums = [i.event for i in summed_items if i.kind == LABEL_SUMS]
    assert sums and not [i for i in summed_items if i.kind in (LABEL, LABELS)]
    assert {g.outcome for s in sums for g in s.groups} == {OTHER}
    assert {s.rules["v1"] for s in sums} == {(task, tolerance)}
    blocks = [i.event for i in Intake(SETTINGS).process(events)[MODEL] if i.kind == LABELS]
    predictions = [p for b in blocks for p in b.predictions]
    labels = [y for b in blocks for y in b.labels]
    errors = prediction_errors(task, predictions, labels, 0.5, tolerance)
    assert sum(g.errors for s in sums for g in s.groups) == errors.sum() > 0
    assert sum(g.scored for s in sums for g in s.groups) == 0  # no probability: no Brier

    spec = StreamSpec(scenario="concept", n_predictions=30_000, change_at=15_000, seed=7)
    changed = as_task(generate(spec), task, 7)
    change_ts = sorted(e.ts for e in changed if type(e) is Prediction)[spec.change_at]
    first = [
        next(d for d in found if d["kind"] == "concept_drift")
        for found in (
            _decisions(changed, profile, replace(SETTINGS, slice_ms=0)),
            _decisions(changed, profile),
        )
    ]
    assert first[1]["ts"] > change_ts
    assert abs(first[1]["ts"] - first[0]["ts"]) <= 3 * SETTINGS.slice_ms
    quiet = as_task(generate(StreamSpec(n_predictions=30_000, seed=7)), task, 7)
    assert not [d for d in _decisions(quiet, profile) if d["kind"] == "concept_drift"]


def test_a_regressions_summed_errors_reach_no_version_comparison() -> None:
    """A promotion that errs more, as a multiclass model: rolled back on its summed labels
    as a binary model is. As a regression: not (label by label, its version comparisons
    read no error either), while its concept monitor reads the same sums."""
    base = generate(StreamSpec(n_predictions=120_000, seed=91))
    # Promoted a quarter in: these labels wait for their minute to mature (a horizon
    # of about 50 s), and the promotion is noticed once v2 serves most recent traffic.
    worse = with_promotion(base, at=30_000, flip=0.12, seed=91)
    settings = replace(DetectorSettings(), slice_ms=2_000)
    training_events = generate(StreamSpec(n_predictions=20_000, seed=99))
    kinds = {}
    for task in ("multiclass", "regression"):
        profile = labelled_profile(as_task(training_events, task, 99))
        found = _decisions(as_task(worse, task, 91), profile, settings)
        kinds[task] = {d["kind"] for d in found if d["type"] == "rollback"}
    assert kinds == {"multiclass": {"promotion_regression"}, "regression": set()}


def test_a_canary_is_compared_on_summed_labels() -> None:
    """A canary on 10 % of traffic whose labels the input stages sum (its predictions go
    as items): about 5 points worse, rolled back on the same metric within a quarter (and
    a slice's labels) of the labelled canary events label by label needs (1,245 against
    1,208, measured); its outcomes a minute later, the
    outcome-latency alert as label by label; equal, nothing on any canary metric on
    three seeds."""
    profile = training()
    base = generate(StreamSpec(n_predictions=60_000, seed=61))
    items = replace(SETTINGS, slice_ms=0)

    def canary_decisions(events, settings):
        found = _decisions(events, profile, settings)
        return [d for d in found if d["kind"] == "canary_regression"]

    worse = with_canary(base, 0.10, 0.12, 61)
    on_items, on_sums = (canary_decisions(worse, s)[0] for s in (items, SETTINGS))
    assert on_sums["type"] == on_items["type"] == "rollback"
    metric = on_sums["detector"]["config"]["metric"]
    assert metric == on_items["detector"]["config"]["metric"] in ("error_rate", "brier_score")
    n_items = on_items["evidence"]["candidate"]["events"]
    n_sums = on_sums["evidence"]["candidate"]["events"]
    assert n_sums <= 1.25 * n_items + 100, (n_sums, n_items)

    later = with_canary(base, 0.10, 0.0, 62, outcome_delay_ms=60_000)
    for settings in (items, SETTINGS):
        metrics = [d["detector"]["config"]["metric"] for d in canary_decisions(later, settings)]
        assert metrics == ["outcome_latency"]

    for seed in (63, 64, 65):
        equal = with_canary(generate(StreamSpec(n_predictions=60_000, seed=seed)), 0.10, 0.0, seed)
        assert canary_decisions(equal, SETTINGS) == []


def test_a_profile_replaced_mid_slice_sends_what_the_old_one_judged_apart() -> None:
    """A regression model's profile replaced (its residual tolerance doubled) while a hot
    slice's sums are held: the held sums go as they were judged, the rest of the slice as
    sums of its own under the new rule, and every label is counted once, judged by the
    profile the input stage had when its block closed."""
    task = "regression"
    events = as_task(generate(StreamSpec(n_predictions=12_000, seed=8, event_ms=1)), task, 8)
    old = labelled_profile(as_task(generate(StreamSpec(n_predictions=20_000, seed=99)), task, 99))
    assert old.performance is not None and old.performance.residual_tolerance is not None
    tolerance = old.performance.residual_tolerance
    new = replace(old, performance=replace(old.performance, residual_tolerance=2 * tolerance))
    cut = 7_001

    intake = Intake(SETTINGS, profiles={MODEL: old}, block_bytes=4_000)
    items = intake.process(events[:cut])[MODEL]
    assert MODEL in intake.held_sums  # a slice half summed under the old rule
    intake.profiles[MODEL] = new
    items += intake.process(events[cut:])[MODEL] + intake.flush_slices().get(MODEL, [])
    sums = [i.event for i in items if i.kind == LABEL_SUMS]
    rules = [s.rules["v1"] for s in sums]
    switch = rules.index((task, 2 * tolerance))
    assert set(rules[:switch]) == {(task, tolerance)}
    assert set(rules[switch:]) == {(task, 2 * tolerance)}
    assert sums[switch - 1].number == sums[switch].number  # the slice split in two sums

    # The same blocks travel as columns without a profile: those closed before the
    # change are judged by the old tolerance, the rest by the new.
    columns = Intake(SETTINGS, block_bytes=4_000)
    before = [i.event for i in columns.process(events[:cut])[MODEL] if i.kind == LABELS]
    after = columns.process(events[cut:])[MODEL] + columns.flush_slices().get(MODEL, [])
    after = [i.event for i in after if i.kind == LABELS]
    expected = 0
    for blocks, rule in ((before, tolerance), (after, 2 * tolerance)):
        predictions = [p for b in blocks for p in b.predictions]
        labels = [y for b in blocks for y in b.labels]
        expected += int(prediction_errors(task, predictions, labels, 0.5, rule).sum())
    assert sum(s.events for s in sums) == sum(b.events for b in before + after)
    assert sum(g.errors for s in sums for g in s.groups) == expected > 0
