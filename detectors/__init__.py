"""driftline's detectors: pure, deterministic, no I/O.

The same events in the same order give the same decisions, online or in replay.
"""

from detectors.categorical import CategoricalChannel
from detectors.concept import ConceptMonitor
from detectors.cusum import Alarm, CusumBank, bernoulli_kl, gaussian_threshold, wald_threshold
from detectors.decision import DECISION_TYPES, SEVERITIES, Decision, decision_id
from detectors.engine import Engine, ModelEngine
from detectors.intake import Intake, Label, Routed
from detectors.join import JOIN_COUNTERS, Joined, OutcomeJoin, Pending
from detectors.latch import LatchingBank
from detectors.merge import ModelMerge
from detectors.monitor import VersionMonitor
from detectors.numeric import NumericChannel
from detectors.policy import DecisionPolicy
from detectors.recent import RecentIds
from detectors.reference import (
    CategoricalSummary,
    NumericSummary,
    PerformanceSummary,
    ReferenceBuilder,
    ReferenceProfile,
)
from detectors.settings import DetectorSettings
from detectors.signal import BatchMeta, Recovery, Signal, WindowReport

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
