"""driftline's detectors: pure, deterministic, no I/O.

The same events in the same order give the same decisions, online or in replay.
"""

from detectors.decision import DECISION_TYPES, SEVERITIES, Decision, decision_id
from detectors.drift.categorical import CategoricalChannel
from detectors.drift.concept import ConceptMonitor
from detectors.drift.numeric import NumericChannel
from detectors.drift.reference import (
    CategoricalSummary,
    NumericSummary,
    PerformanceSummary,
    ReferenceBuilder,
    ReferenceProfile,
)
from detectors.engine import Engine, ModelEngine
from detectors.intake.join import JOIN_COUNTERS, Joined, OutcomeJoin, Pending
from detectors.intake.merge import ModelMerge
from detectors.intake.recent import RecentIds
from detectors.intake.stage import Intake, Label, Routed
from detectors.monitor import VersionMonitor
from detectors.policy import DecisionPolicy
from detectors.settings import DetectorSettings
from detectors.signal import BatchMeta, Recovery, Signal, WindowReport
from detectors.stats.cusum import Alarm, CusumBank, bernoulli_kl, gaussian_threshold, wald_threshold
from detectors.stats.latch import LatchingBank

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
