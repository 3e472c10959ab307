"""driftline's detectors: pure, deterministic, no I/O.

The same events in the same order give the same decisions, online or in replay.
"""

from driftline.detectors.decision import DECISION_TYPES, SEVERITIES, Decision, decision_id
from driftline.detectors.drift.categorical import CategoricalChannel
from driftline.detectors.drift.concept import ConceptMonitor
from driftline.detectors.drift.numeric import NumericChannel
from driftline.detectors.drift.reference import (
    CategoricalSummary,
    NumericSummary,
    PerformanceSummary,
    ReferenceBuilder,
    ReferenceProfile,
)
from driftline.detectors.engine import Engine, ModelEngine
from driftline.detectors.intake.join import JOIN_COUNTERS, Joined, OutcomeJoin, Pending
from driftline.detectors.intake.merge import ModelMerge
from driftline.detectors.intake.recent import RecentIds
from driftline.detectors.intake.stage import Intake, Label, Routed
from driftline.detectors.monitor import VersionMonitor
from driftline.detectors.policy import DecisionPolicy
from driftline.detectors.settings import DetectorSettings
from driftline.detectors.signal import BatchMeta, Recovery, Signal, WindowReport
from driftline.detectors.stats.cusum import (
    Alarm,
    CusumBank,
    bernoulli_kl,
    gaussian_threshold,
    wald_threshold,
)
from driftline.detectors.stats.latch import LatchingBank

__all__ = [
    "DECISION_TYPES",
    "JOIN_COUNTERS",
    "SEVERITIES",
    "Alarm",
    "BatchMeta",
    "CategoricalChannel",
    "CategoricalSummary",
    "ConceptMonitor",
    "CusumBank",
    "Decision",
    "DecisionPolicy",
    "DetectorSettings",
    "Engine",
    "Intake",
    "Joined",
    "Label",
    "LatchingBank",
    "ModelEngine",
    "ModelMerge",
    "NumericChannel",
    "NumericSummary",
    "OutcomeJoin",
    "Pending",
    "PerformanceSummary",
    "RecentIds",
    "Recovery",
    "ReferenceBuilder",
    "ReferenceProfile",
    "Routed",
    "Signal",
    "VersionMonitor",
    "WindowReport",
    "bernoulli_kl",
    "decision_id",
    "gaussian_threshold",
    "wald_threshold",
]
