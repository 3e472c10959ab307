"""Every threshold, window and budget the detectors use, with its default and the reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from driftline.schemas.config_types import check_types
from driftline.schemas.exceptions import ConfigError

CONCEPT_DETECTORS = ("cusum", "adwin", "ddm", "hddm_a", "hddm_w")
"""Choices of ``concept_detector``."""

CHANNEL_DETECTORS = ("cusum", "adwin", "kswin", "hddm_a", "hddm_w")
"""Choices of ``data_detector`` and ``prediction_detector``."""


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Detector and decision-policy configuration for one model.

    All counts are in events of the model version being watched, never wall time, so
    replay and the worker decide identically.
    """

    false_alarm_budget_events: float = 10_000_000
    """Expected events between two false decisions on a stationary model. Split evenly
    over every test (Bonferroni on rates), so adding features does not add false alarms.
    Ten million keeps a model serving 10 requests/s quiet for about eleven days on
    average, and the thresholds derived from it are conservative, so in practice longer."""

    warmup_events: int = 10_000
    """Without a reference profile, the first events of a version become its reference.
    Ten thousand puts the reference's own error at about 0.01 sd, a tenth of the smallest
    mean shift the sequential tests respond to."""

    label_warmup_events: int = 5_000
    """Without an offline error rate, the first labelled events set the reference error
    rate; 5,000 puts its standard error under 0.7 percentage points at any error rate."""

    reference_uncertainty_z: float = 2.0
    """Tests against an estimated reference take the edge of the estimate's confidence band
    (this many standard errors from it, on the test's own side) as their null: the
    category-share tests (a 5 % share estimated at 4.6 % from the warm-up otherwise drifts
    in ordinary traffic), the invalid and missing-rate tests, the variance tests
    (sqrt(2 / n) on the scores' variance), the small mean designs, River's error-stream
    detectors and the online/offline window. A reference estimated from few events does
    not make ordinary noise look like change. The error-rate bank chooses a margin per
    design instead (`detectors.stats.margin`)."""

    mean_shift_sd: float = 0.3
    """Design mean shift of the sequential tests, in reference standard deviations. The
    tests are fastest for shifts of this size and ignore shifts under half of it (the
    effect-size floor)."""

    mean_shift_designs: int = 2
    """Mean-shift CUSUMs per feature and direction: the design shift and successive
    halvings of it (0.3 and 0.15 sd). A CUSUM designed for 0.3 sd never crosses on a
    persistent 0.15 sd shift and meets a slow ramp only once it has passed 0.15 sd; the
    half design finds both, for about 1 % on every threshold."""

    variance_ratio: float = 1.5
    """Design variance ratio of the scale tests (up by this factor, down by its inverse)."""

    category_ratio: float = 1.5
    """Design relative change of a category's frequency (up by this factor, down by its
    inverse)."""

    category_min_change: float = 0.01
    """Smallest absolute change of a category's frequency the tests are designed for, so
    rare categories need a real change, not a handful of events, to alarm."""

    top_k_categories: int = 20
    """Categories kept per categorical feature; the rest share an ``__other__`` bucket so
    high-cardinality features keep bounded state."""

    low_cardinality_max: int = 20
    """A numeric feature with at most this many distinct reference values is treated as
    categorical: rank transforms of a few tied values are not continuous."""

    quantile_knots: int = 101
    """Reference quantiles kept per numeric feature (percentiles plus min and max) for the
    normal-score transform that makes the tests distribution-free."""

    histogram_bins: int = 10
    """Equal-probability bins of the window histogram test (reference deciles)."""

    window_events: int = 5_000
    """Events per tumbling window for the histogram (PSI and G-test) comparison with the
    reference, and for hysteresis. Small enough to react within a few windows, large
    enough for ten bins to hold about 500 events each."""

    psi_floor: float = 0.05
    """Effect-size floor of the window test: a significant difference with a PSI below this
    is not reported, so large samples do not turn tiny differences into alarms. Half the
    customary 0.1 'moderate shift' mark, so windows confirm shifts the sequential tests
    are designed for."""

    quality_min_change: float = 0.01
    """Smallest rise of a feature's missing/invalid rate the quality test is designed for
    (and at least a doubling of the reference rate)."""

    out_of_range_margin: float = 0.1
    """A numeric input value further outside the reference [min, max] than this fraction
    of the reference range counts as out of range (data quality); predictions are not
    range-checked (their moves are prediction drift)."""

    error_rate_ratio: float = 1.25
    """Design relative rise of the error rate for the concept-drift test."""

    error_rate_min_change: float = 0.03
    """Design absolute rise of the error rate (the larger of the two applies)."""

    concept_detector: str = "cusum"
    """What watches the labelled error stream: ``cusum`` (the bank above) or one of
    River's detectors, ``adwin``, ``ddm``, ``hddm_a``, ``hddm_w``, with their parameters
    derived from the false-alarm budget (`detectors.drift.river_bridge`). The bank is the
    default because it was at least as fast as each of them at the same budget on the
    MOA benchmark (``benchmarks/moa_quality.py``)."""

    data_detector: str = "cusum"
    """What watches each numeric input feature's normal scores for drift: ``cusum`` (the
    mean and variance CUSUMs above) or one of River's detectors, ``adwin``, ``kswin``,
    ``hddm_a``, ``hddm_w``, with parameters derived from the same false-alarm budget
    (`detectors.drift.river_bridge`); quality and window tests stay. Categorical features keep
    their CUSUMs. ``benchmarks/detection_quality.py --detectors`` compares them."""

    prediction_detector: str = "cusum"
    """The same choice for a numeric prediction (a score)."""

    reference_lag_labels: int = 10_000
    """A reference error rate set by the label warm-up goes on learning from labelled
    events this many labels old while no concept test is in alarm (0: never). Ten
    thousand is several times the labels any rise of three points or more takes to
    detect, so a change is found before its labels could join the reference; a drift
    slower than that is partly learned, as every adaptive-window detector does."""

    reference_max_labels: int = 200_000
    """The learning reference stops at this many labels (its margin is then 0.2 points
    at a 0.3 error rate)."""

    error_rate_designs: int = 5
    """CUSUMs in the concept-drift bank, spaced by factors of two from four times the
    design rise above down (at a 0.3 error rate: +31, +16, +7.8, +3.9 and +2 points), so
    small and large rises are both caught near their information limit."""

    label_window_events: int = 1_000
    """Labelled events per window for the online/offline accuracy comparison."""

    accuracy_gap_floor: float = 0.02
    """Smallest online-vs-offline error-rate gap reported as ``online_offline_gap``."""

    classification_threshold: float = 0.5
    """Score at or above which a numeric prediction means the positive class, when labels
    are 0/1 or booleans."""

    scores_are_probabilities: bool = True
    """Whether a numeric prediction in [0, 1] is the probability of the positive class.
    When it is, the model's own scores estimate its error before labels arrive (the
    label-free estimate, compared with realised error as ``performance_estimate_gap`` and
    between versions) and give its Brier score. Set it false, usually per model, for
    scores that are not probabilities (allocation shares, ranking scores, normalised risk
    indices): those comparisons would report the scale of the score, not a fault. Error
    rates at ``classification_threshold`` are kept either way."""

    cooldown_events: int = 10_000
    """After a decision, further signals of the same kind for the same version are merged
    into that decision's episode for at least this many events (no alert storms)."""

    recover_windows: int = 2
    """Consecutive clean windows (after the cooldown) that close a drift episode, so a
    later drift raises a new decision (hysteresis)."""

    sustain_windows: int = 3
    """Consecutive drifted windows after an alert that escalate input or prediction drift
    to a ``retrain`` decision."""

    join_ttl_ms: int = 7 * 24 * 3600 * 1000
    """How long a prediction waits for its outcome (event time). Seven days covers common
    label pipelines (fraud chargebacks take longer: raise it)."""

    max_future_skew_ms: int = 15 * 60 * 1000
    """How far an event's ``ts`` may be ahead of its partition's recent event time (plus
    the produce time elapsed since) before it is dead-lettered as ``future_timestamp``
    instead of moving every watermark (join TTLs, feedback buckets, version half-lives).
    Fifteen minutes covers unsynchronised producer clocks, and is well below
    ``feedback_lateness_ms``, so an admitted event cannot close a bucket early by more than
    a quarter of its lateness. 0 switches the check off."""

    join_max_pending: int = 500_000
    """Cap on predictions waiting for outcomes (memory bound, about 150 bytes each); the
    oldest are expired first and counted."""

    join_memory: int = 100_000
    """Recently joined and recently expired request ids remembered, to count duplicate and
    late outcomes rather than calling them orphans."""

    dedupe_horizon: int = 200_000
    """How many recent event ids are remembered to drop duplicates."""

    max_versions_per_model: int = 8
    """Versions of one model kept in memory; the least recently seen is dropped first."""

    max_models: int = 2_000
    """Models with detector state in one engine (a worker shard sees every model whose
    requests hash to it, so this is the fleet size). A warmed-up model with a dozen
    features holds about 30 KB of checkpoint; beyond the bound the least recently seen
    model is forgotten (counted as ``evicted_models``) and starts a new warm-up if it comes
    back, so a stream of a million distinct model ids cannot grow the state."""

    max_monitored_features: int = 1_000
    """Features per model version that get a reference and a test; when the warm-up saw
    more distinct names, the most frequent are kept (ties by name). Bounds memory and
    checkpoint size against events that carry a new feature name each."""

    rollback_alpha: float = 0.001
    """Probability that an equal canary is ever rolled back, however long it is watched
    (the comparison is anytime-valid). One in a thousand canaries: rare enough that a CD
    pipeline can act without a human."""

    rollback_margin: float = 0.0
    """A canary must be worse than stable by more than this error-rate difference (with
    the whole confidence interval above it) to be rolled back."""

    comparison_tau: float = 0.05
    """Error-rate difference the version comparison is tuned to find fastest (mixing scale
    of its confidence sequence): five points, a regression worth a rollback."""

    paired_prior: float = 20.0
    """Strength of the Beta(a, a) mixture over the share of discordant pairs won by the
    challenger: about +-8 points around a tie, where real differences between versions
    usually lie."""

    comparison_min_labels: int = 200
    """Labelled events on each side before a version comparison may decide."""

    skew_horizon_events: int = 10_000
    """Input drift against an offline profile found within this many predictions of a
    version going live is reported as training-serving skew (``online_offline_gap``), not
    as drift over time."""

    version_half_life_ms: int = 3_600_000
    """Half-life (event time) of the traffic count that decides which champion version is
    the stable one: after a promotion the new champion becomes stable once it has served
    more recent traffic than the old one, not after it has served more in total."""

    promotion_baseline_labels: int = 5_000
    """Labelled events of a champion kept (between this and twice this many, most recent)
    as the baseline a newly promoted version is compared with when the old one no longer
    serves."""

    estimate_gap_margin: float = 0.01
    """Smallest gap between the realised error rate and the label-free estimate from the
    model's own scores reported as ``performance_estimate_gap`` (scores are miscalibrated
    and label-free estimates of this version cannot be trusted)."""

    label_maturity_quantile: float = 0.95
    """Quantile of each outcome's label delays after which a prediction's label is taken
    as in: the version comparisons, realised vs estimated error and the concept monitors
    read labels only of predictions older than that (labels arriving in an order that
    depends on the outcome, repayments before defaults, would otherwise bias them); the
    horizon is 0 while the outcomes' delays do not differ. 0 compares at once."""

    label_maturity_min_labels: int = 30
    """Labels of an outcome value needed before its delays count (for a binary label,
    nothing is compared until both values have this many)."""

    label_maturity_max_held: int = 20_000
    """Labelled events held per model while their cohort matures, for the version
    comparisons and for the concept monitors (`detectors.versions.registry.HeldLabels`,
    `HeldPairs`); beyond it the oldest are read early. Bounds the state of a
    high-volume model whose labels are slow and ordered by outcome."""

    step_ms: int = 10_000
    """Event time between a model's periodic steps in the model stage: reading its
    label-delay horizon, releasing the labels and cohorts held for it, noticing a
    promotion, forgetting versions beyond the bound, and taking the figures decisions
    report of these (a canary's share of traffic, the label maturity). A step falls on
    the first item of the model's merged stream at least this much event time and
    ``step_items`` items after the last one, so where batches end changes nothing:
    replay, a worker under load and a worker restarted after a crash decide and report
    alike. It delays a comparison by up to this much event time only where labels are
    held or a version was promoted; labels that pass straight through (delays that do
    not depend on the outcome) are compared at once."""

    slice_ms: int = 0
    """Event time a *slice* spans for the sequential tests of the data and prediction
    channels, or 0 to test every event. With slices the tests take one row per slice,
    the sums of its events' statistics, so the model stage's test cost is per slice
    (`detectors.stats.latch.LatchingBank.update`), and the input stages sum the slices
    of versions whose reference profile they have (`detectors.intake.slices`) and send
    a slice's joined labels as one block of columns (`detectors.intake.blocks`: they
    reach the concept monitors up to a slice later); a slice
    is tested when something of a later one arrives. A statistic at a slice's end stands
    at or below the events' path, so slices do not add false alarms; they delay an alarm
    (0.1 to 1.6 slices on the simulator's scenarios) and can miss a change that comes and
    goes within one. Channels using River's detectors (``data_detector``,
    ``prediction_detector``) always test per event. Off by default: the delay is paid by
    every model, the saving matters for hot ones (set it per model)."""

    step_items: int = 64
    """Items of a model at least between two of its steps (see ``step_ms``): a sparse
    model replayed from a backlog would otherwise step on nearly every item."""

    outcome_latency_tau: float = 0.1
    """Difference in mean log10 outcome delay (seconds) a canary comparison of outcome
    latency is tuned to find fastest: 0.1 is about 26 % slower outcomes."""

    feedback_enabled: bool = True
    """Feedback-loop detection on predictions that carry ``segment``, ``action`` or
    ``exploration`` (models without those fields cost nothing either way)."""

    feedback_bucket_ms: int = 3_600_000
    """Event-time bucket of the feedback-loop signals (allocation shares, exposure
    diversity, reference shares). An hour suits models serving thousands of requests an
    hour; a loop builds up over days, so slower models want a day."""

    feedback_lateness_ms: int = 3_600_000
    """How far event time must move past a feedback bucket's end before the bucket closes:
    predictions and outcomes arrive on different topics and partitions, not in event-time
    order, and each event counts in its own bucket if it comes within this allowance."""

    feedback_sample_target: int = 4_000
    """Events a feedback bucket should count at least. Above twice this volume a
    deterministic sample of requests (by a hash of ``request_id``, so a prediction and its
    outcome are sampled together) is counted, halving per doubling: the shares and
    diversities are as precise on four thousand events as on a million, and the per-event
    cost falls with volume. A worker's shards share it (each counts its part)."""

    feedback_windows: int = 8
    """Recent buckets whose item counts are kept and pooled for the click reference (the
    items that take half of the exposure, their share of the model's own clicks against
    their share of clicks on exploration traffic)."""

    feedback_history_buckets: int = 336
    """Closed buckets the feedback-loop tests look back over (two weeks of hours), and so
    the longest time scale they test: every test compares the last L buckets with those
    before, for L on a ladder from one bucket up (`detectors.stats.onset`), so a loop that moves
    hourly and a staircase that steps once a day at a retrain are both seen without
    choosing a bucket size. A bucket keeps counts per segment value and a few indices,
    not item counts, so weeks of them are small."""

    feedback_alpha: float = 1e-3
    """False-alarm budget of one model's feedback-loop tests at one bucket close, spread
    over every segment, exposure scope and time scale tested (Bonferroni). The evidence
    accumulates in the after window, so a strict budget costs hours, not days; measured
    on the controls of `benchmarks/feedback_quality.py`."""

    feedback_fdr: float = 0.01
    """Level of the tests that back a concentration finding when no reference is in the
    data (labels only where the model acted, agreement with the labels rising) and of
    the check that exposure concentrated beyond what exploration clicks show."""

    feedback_min_coverage_gap: float = 0.5
    """Smallest difference in label coverage between acted and not-acted predictions that
    counts as selective labels (outcomes observed only where the model acted)."""

    feedback_min_bucket_events: int = 100
    """Events each side of a feedback-loop comparison needs (the actions in the before and
    the after window of an allocation share), and a bucket needs for its exposure
    concentration to enter the series."""

    feedback_min_reference: int = 100
    """Reference outcomes (independent outcomes, outcomes or clicks of exploration traffic)
    a model needs before its reference is used, and an after window needs before it is
    compared with the reference."""

    feedback_max_items: int = 10_000
    """Distinct items counted per bucket and scope for exposure diversity (the rest are
    pooled), bounding memory for large catalogues."""

    feedback_max_tags: int = 1_000
    """Distinct (acted, exploration, segment values) combinations counted per model; later
    new combinations are pooled into one segment ``(other)=(other)``, so a segment with a
    new value per event (a user id put in ``segment`` by mistake) cannot grow the state."""

    feedback_max_cohorts: int = 4
    """Segment keys of a prediction whose exposure is also tracked per cohort (beyond the
    model as a whole)."""

    feedback_no_action: str = (
        "none,no_action,deny,denied,decline,declined,reject,rejected,skip,hold"
    )
    """Comma-separated ``action`` strings that mean the system did not act (compared case
    insensitively); false, 0 and an empty list mean the same. A prediction without an
    ``action`` counts as acted on (it was served)."""

    merge_lateness_ms: int = 60_000
    """How far (event time) the model stage lets a model's furthest input partition run
    ahead of one that has gone quiet before it stops waiting for it (see
    `detectors.intake.merge`). A minute is many times the skew between partitions a worker reads
    side by side, and is the extra wait a model pays only when one of its partitions
    stops carrying it."""

    canary_items_ms: int = 86_400_000
    """Event time after a partition's last canary prediction of a model during which the
    model's predictions still leave that partition as items (with ``slice_ms``): a live
    canary is compared with its stable version prediction by prediction before labels
    come. Then they are summed in slices again (`detectors.intake.canary`). A day: a
    canary that is still rolling out but rarely served keeps its comparison fed."""

    merge_idle_ms: int = 30_000
    """Wall time a lagging partition must also have been silent (for the model) before
    the worker's model stage stops waiting for it: three default session timeouts, so a
    partition whose worker is restarting or rebalancing is waited for, and a backlog read
    unevenly across partitions never makes items late."""

    merge_max_buffered: int = 200_000
    """Items of one model the model stage holds while it waits for a slow partition;
    beyond this everything waiting is released (counted), which bounds memory."""

    def __post_init__(self) -> None:
        positive = (
            "merge_lateness_ms",
            "merge_idle_ms",
            "merge_max_buffered",
            "false_alarm_budget_events",
            "warmup_events",
            "label_warmup_events",
            "error_rate_designs",
            "mean_shift_designs",
            "mean_shift_sd",
            "window_events",
            "label_window_events",
            "join_ttl_ms",
            "join_max_pending",
            "join_memory",
            "dedupe_horizon",
            "max_versions_per_model",
            "max_models",
            "max_monitored_features",
            "top_k_categories",
            "version_half_life_ms",
            "promotion_baseline_labels",
            "step_ms",
            "step_items",
            "comparison_tau",
            "outcome_latency_tau",
            "feedback_bucket_ms",
            "feedback_windows",
            "feedback_history_buckets",
            "feedback_fdr",
            "feedback_max_items",
            "feedback_max_tags",
            "feedback_sample_target",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name} must be positive, got {getattr(self, name)}")
        if self.variance_ratio <= 1 or self.category_ratio <= 1 or self.error_rate_ratio <= 1:
            raise ConfigError("variance_ratio, category_ratio and error_rate_ratio must be > 1")
        if self.histogram_bins < 2 or self.quantile_knots < 3:
            raise ConfigError("histogram_bins must be >= 2 and quantile_knots >= 3")
        if self.feedback_history_buckets < 8:
            raise ConfigError(
                "feedback_history_buckets must be at least 8 for a before and an after window"
            )
        if not 0 < self.feedback_alpha < 1 or not 0 < self.feedback_fdr < 1:
            raise ConfigError("feedback_alpha and feedback_fdr must be in (0, 1)")
        for name in ("data_detector", "prediction_detector"):
            if getattr(self, name) not in CHANNEL_DETECTORS:
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} is not known; "
                    f"use one of {', '.join(CHANNEL_DETECTORS)}"
                )
        if self.concept_detector not in CONCEPT_DETECTORS:
            raise ConfigError(
                f"concept_detector {self.concept_detector!r} is not known; "
                f"use one of {', '.join(CONCEPT_DETECTORS)}"
            )
        if self.reference_lag_labels < 0 or self.reference_max_labels < 0:
            raise ConfigError(
                "settings reference_lag_labels and reference_max_labels must be 0 or positive"
            )
        if self.canary_items_ms < 0:
            raise ConfigError(
                f"setting canary_items_ms must be 0 or positive, got {self.canary_items_ms}"
            )
        if self.slice_ms < 0:
            raise ConfigError(
                f"setting slice_ms must be 0 (every event) or positive, got {self.slice_ms}"
            )
        if self.max_future_skew_ms < 0:
            raise ConfigError(
                f"setting max_future_skew_ms must be 0 (off) or positive, "
                f"got {self.max_future_skew_ms}"
            )
        if not 0 < self.rollback_alpha < 1:
            raise ConfigError(f"rollback_alpha must be in (0, 1), got {self.rollback_alpha}")
        if type(self.scores_are_probabilities) is not bool:
            raise ConfigError(
                "setting scores_are_probabilities must be true or false, "
                f"got {self.scores_are_probabilities!r}"
            )
        if self.warmup_events < 100:
            raise ConfigError("warmup_events must be at least 100 for a usable reference")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for state files and decision evidence."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorSettings:
        """Build from a mapping (a TOML table), rejecting unknown keys and values of the
        wrong type by name."""
        check_table(cls, values, "detector")
        return cls(**values)


REMOVED = {
    name: "the feedback-loop tests accumulate evidence over every time scale now; "
    "tune feedback_alpha (false alarms) instead"
    for name in (
        "feedback_persistence",
        "feedback_min_share_change",
        "feedback_min_gap",
        "feedback_min_entropy_drop",
    )
}
"""Settings that no longer exist, with what replaced them."""


def check_table(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise ConfigError naming a removed setting, every key of ``values`` that is not a
    field of ``cls``, or else the first value of the wrong type (`check_types`): what
    every settings table read from TOML goes through."""
    for name in sorted(set(values) & set(REMOVED)):
        raise ConfigError(f"{what} setting {name} was removed: {REMOVED[name]}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown {what} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    check_types(cls, values, what)
