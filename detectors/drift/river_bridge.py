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
  fed and a reverse test (`detectors.stats.latch`) watches for the error rate's return to the
  reference. On recovery River starts again from a fresh detector.
* **Exact restarts.** State is River's own object, pickled, and loaded through an
  unpickler that admits River's classes and nothing else (a state record cannot run
  code).

Not offered, and why: KSWIN (a Kolmogorov-Smirnov test on 0/1 errors is all ties),
PageHinkley (its state needs ``getattr`` to unpickle, which an allow-list cannot admit
safely), EDDM (its ``beta`` is a ratio of error distances with no mapping to a
false-alarm rate).

**Numeric inputs and scores.** ``data_detector`` and ``prediction_detector`` = ``"adwin" |
"kswin" | "hddm_a" | "hddm_w"`` put one of River's detectors on each numeric feature of
the channel (`RiverChannel`) in place of its mean and variance CUSUMs; the quality
(invalid-rate) tests and the window tests stay. Each detector reads the feature's normal
scores under the reference (`detectors.drift.numeric`), so it sees a unit-variance stream
whatever the feature's shape; the HDDMs need values in [0, 1] and read the scores
clipped to +-`HDDM_CLIP` and scaled. Parameters come from the per-test ``arl`` as above
(KSWIN's ``alpha`` is the probability of a false alarm per check, and it checks every
event), except ADWIN's, which a seeded measurement on scores sets far looser than its
union bound (`ADWIN_SCORE_EVENTS`). A detection latches the feature: its detector is no
longer fed, and a reverse mean test from the shift it estimated watches for the return
to the reference, as for the error stream. Categorical channels keep their CUSUMs.
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

from driftline.detectors.stats.cusum import Alarm
from driftline.detectors.stats.latch import BERNOULLI, GAUSS_MEAN, LatchingBank
from driftline.schemas.exceptions import ConfigError

ERROR_DETECTORS = ("adwin", "ddm", "hddm_a", "hddm_w")
"""River detectors selectable for the error stream (besides the default ``cusum``)."""

CHANNEL_DETECTORS = ("adwin", "kswin", "hddm_a", "hddm_w")
"""River detectors selectable for numeric input and score channels (besides ``cusum``)."""

KSWIN_WINDOW = 1_000
"""KSWIN's window: its test compares the last `KSWIN_STAT` scores with a sample of the
rest. At a budget-sized alpha (1e-9) a 100-event window (River's default) would need a
shift of about two standard deviations to reach its critical distance; 1,000 brings that
near half of one, at the cost of a sort of the window per event."""

KSWIN_STAT = 300

ADWIN_SCORE_EVENTS = 2_000
"""ADWIN on normal scores gets ``delta`` = this / ARL. Measured (seeded,
``benchmarks/river_calibration.py``): one false alarm per about 2,050 / ``delta`` events at
``delta`` = 0.1 and 4,500 / ``delta`` at 0.01, fewer still per ``delta`` below, so this
keeps the rate under 1 / ARL; the union bound over its checks (32 / ARL, what the error
stream uses) was about 60 times stricter than the budget asks, and slower for it."""

HDDM_CLIP = 4.0
"""Scores are clipped to +-4 and mapped to [0, 1] for the HDDMs, whose Hoeffding and
McDiarmid bounds are stated for the range of the values: a narrower clip makes them
more sensitive, a wider one loses less of the tails."""

SHIFT_EVENTS = 100
"""Scores a detection's shift is estimated from: enough for its sign and rough size, few
enough to be mostly after the change."""

MIN_SHIFT = 0.1
"""Smallest mean shift (in reference sd) a channel detection is taken to have found, for
its recovery test: a detector that saw a change of shape rather than of mean still
latches, and is released once the scores' mean is shown back at the reference."""

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
    ("random", "Random"),  # KSWIN's sampler
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


def channel_parameters(name: str, arl: float) -> dict[str, float]:
    """River parameters for a numeric channel's detector, false-alarming at most once per
    ``arl`` events (union bounds per check, conservative).

    >>> channel_parameters("kswin", 1e9)
    {'alpha': 1e-09, 'window_size': 1000, 'stat_size': 300}
    >>> channel_parameters("hddm_a", 1e9)["drift_confidence"]
    1e-09
    >>> channel_parameters("adwin", 1e9)
    {'delta': 2e-06}
    """
    if name == "kswin":
        return {"alpha": min(0.005, 1 / arl), "window_size": KSWIN_WINDOW, "stat_size": KSWIN_STAT}
    if name == "adwin":
        return {"delta": min(0.1, ADWIN_SCORE_EVENTS / arl)}
    if name in ("hddm_a", "hddm_w"):
        return calibrated_parameters(name, arl)
    raise ConfigError(
        f"detector {name!r} is not known for a numeric channel; use cusum or one of "
        f"{', '.join(CHANNEL_DETECTORS)}"
    )


def _make_channel(name: str, params: dict[str, float], seed: int) -> Any:
    if name == "kswin":
        return drift.KSWIN(
            alpha=params["alpha"],
            window_size=int(params["window_size"]),
            stat_size=int(params["stat_size"]),
            seed=seed,
        )
    return _make(name, params)


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


class RiverChannel:
    """One River detector per feature of a numeric channel, on the features' normal
    scores, each latched between a detection and the return of its mean to the
    reference. Alarms name their feature by ``column = offset + feature``; a detection's
    ``statistic`` is the mean score since the detector's window began (the shift, in
    reference sd)."""

    def __init__(self, name: str, features: int, offset: int) -> None:
        self.name = name
        self.features = features
        self.offset = offset
        self.params: dict[str, float] = {}
        self.detectors: list[Any] = []
        self.recent: list[deque[float]] = [deque(maxlen=RECENT) for _ in range(features)]
        # Recovery watches: column f for a shift up, features + f for one down.
        designs = np.r_[np.full(features, MIN_SHIFT), np.full(features, -MIN_SHIFT)]
        self.watch = LatchingBank(
            np.full(2 * features, GAUSS_MEAN), np.zeros(2 * features), designs
        )

    def calibrate(self, arl: float) -> None:
        """Parameters from the per-test ``arl``; detectors start afresh."""
        self.params = channel_parameters(self.name, arl)
        self.detectors = [_make_channel(self.name, self.params, f) for f in range(self.features)]
        self.watch.calibrate(np.full(2 * self.features, np.inf), arl)

    def _value(self, z: float) -> float:
        if self.name in ("hddm_a", "hddm_w"):
            return (min(max(z, -HDDM_CLIP), HDDM_CLIP) + HDDM_CLIP) / (2 * HDDM_CLIP)
        return z

    def update(self, z: np.ndarray, valid: np.ndarray) -> list[Alarm]:
        """Feed a batch of scores (events x features); detections and recoveries in
        order of the events."""
        out: list[Alarm] = []
        for f in range(self.features):
            out += self._feature(f, z[:, f], valid[:, f])
        out.sort(key=lambda a: (a.row, a.column))
        return out

    def _watching(self, f: int) -> int | None:
        """The recovery watch column of a latched feature (None: not latched)."""
        if self.watch.latched[f]:
            return f
        if self.watch.latched[self.features + f]:
            return self.features + f
        return None

    def _feature(self, f: int, z: np.ndarray, valid: np.ndarray) -> list[Alarm]:
        out: list[Alarm] = []
        n = len(z)
        pos = 0
        column = self.offset + f
        while pos < n:
            watch = self._watching(f)
            if watch is not None:
                t = np.zeros((n - pos, 2 * self.features))
                ok = np.zeros((n - pos, 2 * self.features), dtype=bool)
                t[:, watch] = np.where(valid[pos:], z[pos:], 0.0)
                ok[:, watch] = valid[pos:]
                crossings = [c for c in self.watch.update(t, ok) if c.column == watch]
                if not crossings:
                    return out
                row = pos + crossings[0].row
                out.append(Alarm(row, column, 0.0, crossings[0].run_length, True))
                self.detectors[f] = _make_channel(self.name, self.params, f)
                self.recent[f].clear()
                pos = row + 1
                continue
            detector = self.detectors[f]
            recent = self.recent[f]
            for i in range(pos, n):
                if not valid[i]:
                    continue
                value = float(z[i])
                recent.append(value)
                detector.update(self._value(value))
                if detector.drift_detected:
                    shift = self._shift(recent)
                    out.append(Alarm(i, column, shift, len(recent)))
                    if shift >= 0:
                        self.watch.latch(f, max(shift, MIN_SHIFT))
                    else:
                        self.watch.latch(self.features + f, min(shift, -MIN_SHIFT))
                    pos = i + 1
                    break
            else:
                return out
        return out

    @staticmethod
    def _shift(recent: deque[float]) -> float:
        """The mean score after the change a detector just found: of the last
        `SHIFT_EVENTS` scores (ADWIN's own estimate after its cut still mixes in much of
        the time before)."""
        last = list(recent)[-SHIFT_EVENTS:]
        return float(np.mean(last)) if last else 0.0

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "detectors": [
                base64.b64encode(pickle.dumps(d)).decode("ascii") for d in self.detectors
            ],
            "recent": [list(r) for r in self.recent],
            "watch": self.watch.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name or len(state["detectors"]) != self.features:
            return  # another detector or feature set: keep the fresh ones
        self.detectors = [
            _RiverOnly(io.BytesIO(base64.b64decode(raw))).load() for raw in state["detectors"]
        ]
        self.recent = [deque(r, maxlen=RECENT) for r in state["recent"]]
        self.watch.restore(state["watch"])
