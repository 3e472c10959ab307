"""River's drift detectors on the labelled error stream, behind driftline's budget and policy.

``concept_detector = "adwin" | "ddm" | "hddm_a" | "hddm_w"`` replaces the concept CUSUM
bank with one of River's detectors (``"cusum"``, the default, keeps the bank). The wrapper
gives each the same contract as the bank:

* **One budget.** The detector's parameter comes from the per-test average run length
  ``arl`` the model's false-alarm budget gives (`calibrated_parameters`): ADWIN's
  ``delta`` and the HDDMs' ``drift_confidence`` bound the probability of a false alarm per
  check, so they are set to checks per event over ``arl``; DDM's ``drift_threshold`` is
  the normal quantile of ``1 - 1 / arl``. These are conservative (a union bound per
  check); ``benchmarks/moa_quality.py`` measures the realised rates and delays.
* **One decision per change.** After a detection the wrapper latches: River is no longer
  fed and a reverse test (`detectors.latch`) watches for the error rate's return to the
  reference. On recovery River starts again from a fresh detector.
* **Exact restarts.** State is River's own object, pickled, and loaded through an
  unpickler that admits River's classes and nothing else (a state record cannot run
  code).

Not offered, and why: KSWIN (a Kolmogorov-Smirnov test on 0/1 errors is all ties),
PageHinkley (its state needs ``getattr`` to unpickle, which an allow-list cannot admit
safely), EDDM (its ``beta`` is a ratio of error distances with no mapping to a
false-alarm rate).
"""

from __future__ import annotations

import base64
import io
import pickle
from collections import deque
from typing import Any

import numpy as np
from river import drift
from river.drift import binary
from scipy.special import ndtri

from detectors.cusum import Alarm
from detectors.latch import BERNOULLI, LatchingBank
from schemas.exceptions import ConfigError

ERROR_DETECTORS = ("adwin", "ddm", "hddm_a", "hddm_w")
"""River detectors selectable for the error stream (besides the default ``cusum``)."""

ADWIN_CLOCK = 32
"""ADWIN checks for a cut every this many updates (River's default)."""

DDM_WARM_START = 1_000
"""Events before DDM records its minimum: at the strict threshold the budget gives (6 sd
rather than River's 3), a minimum taken at River's 30 events has a standard error so wide
that the threshold is never reached."""

RECENT = 1_000
"""Errors kept to estimate the rate a detection found (the evidence and the reverse
test's design)."""

_ALLOWED = {
    ("collections", "deque"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"),
}


def calibrated_parameters(name: str, arl: float) -> dict[str, float]:
    """River parameters whose false-alarm rate is at most one per ``arl`` events.

    >>> calibrated_parameters("ddm", 1e9)
    {'drift_threshold': 5.998, 'warning_threshold': 4.998, 'warm_start': 1000}
    >>> calibrated_parameters("adwin", 1e9)
    {'delta': 3.2e-08}
    """
    if name == "adwin":
        return {"delta": min(0.002, ADWIN_CLOCK / arl)}
    if name in ("hddm_a", "hddm_w"):
        confidence = min(0.001, 1 / arl)
        return {"drift_confidence": confidence, "warning_confidence": min(0.005, 5 * confidence)}
    if name == "ddm":
        k = round(float(ndtri(1 - 1 / arl)), 3)
        return {
            "drift_threshold": k,
            "warning_threshold": round(max(k - 1, k / 2), 3),
            "warm_start": DDM_WARM_START,
        }
    raise ConfigError(
        f"concept_detector {name!r} is not known; use cusum or one of {', '.join(ERROR_DETECTORS)}"
    )


def _make(name: str, params: dict[str, float]) -> Any:
    if name == "adwin":
        return drift.ADWIN(delta=params["delta"], clock=ADWIN_CLOCK)
    if name == "hddm_a":
        return binary.HDDMA(**params)
    if name == "hddm_w":
        return binary.HDDMW(**params)
    return binary.DDM(
        warm_start=int(params["warm_start"]),
        drift_threshold=params["drift_threshold"],
        warning_threshold=params["warning_threshold"],
    )


class _RiverOnly(pickle.Unpickler):
    """Loads River's detector classes and the few plain types they hold; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("river.") or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in detector state")


class RiverErrorDetector:
    """One River detector on a 0/1 error stream, latched between detections."""

    def __init__(self, name: str, arl: float, p0: float, p1: float) -> None:
        self.name = name
        self.params = calibrated_parameters(name, arl)
        self.detector = _make(name, self.params)
        self.recent: deque[int] = deque(maxlen=RECENT)
        self.watch = LatchingBank(np.array([BERNOULLI]), np.array([p0]), np.array([p1]))
        self.watch.calibrate(np.array([np.inf]), arl)

    def redesign(self, arl: float, p0: float, p1: float) -> None:
        """A refreshed reference: a new recovery watch (River's detector keeps its state)."""
        self.watch = LatchingBank(np.array([BERNOULLI]), np.array([p0]), np.array([p1]))
        self.watch.calibrate(np.array([np.inf]), arl)

    @property
    def latched(self) -> bool:
        return bool(self.watch.latched[0])

    def update(self, e: np.ndarray) -> list[Alarm]:
        """Feed 0/1 errors; detections and recoveries in order (``statistic`` of a
        detection is the error rate it estimates)."""
        out: list[Alarm] = []
        n = len(e)
        pos = 0
        while pos < n:
            if self.latched:
                crossings = self.watch.update(e[pos:, None], np.ones((n - pos, 1), dtype=bool))
                if not crossings:
                    return out
                row = pos + crossings[0].row
                out.append(Alarm(row, 0, 0.0, crossings[0].run_length, True))
                self.detector = _make(self.name, self.params)
                self.recent.clear()
                pos = row + 1
                continue
            for i in range(pos, n):
                bit = int(e[i])
                self.recent.append(bit)
                self.detector.update(bit)
                if self.detector.drift_detected:
                    rate = float(np.mean(self.recent))
                    out.append(Alarm(i, 0, rate, len(self.recent)))
                    self.watch.latch(0, rate)
                    pos = i + 1
                    break
            else:
                return out
        return out

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "detector": base64.b64encode(pickle.dumps(self.detector)).decode("ascii"),
            "recent": list(self.recent),
            "watch": self.watch.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            return  # another detector was configured: start this one fresh
        raw = base64.b64decode(state["detector"])
        self.detector = _RiverOnly(io.BytesIO(raw)).load()
        self.recent = deque(state["recent"], maxlen=RECENT)
        self.watch.restore(state["watch"])
