"""Streams driftline was not built on: River's MOA concept-drift generators, a model trained
on the pre-drift part and then frozen, and labels that arrive late or never.

Independent of `streams.simulation.traffic` (the project's own simulator, which the tests and the
detectors were tuned on): the inputs come from `river.datasets.synth` (SEA, Agrawal with its
uniform salaries and integer ages and years, Hyperplane, RandomRBFDrift, FriedmanDrift),
the concept changes are MOA's own (`ConceptDriftStream`, abrupt or gradual; Friedman's
global abrupt and slow gradual drifts), and the model is a logistic regression fitted
here (a linear one for Friedman's regression target). Used by `benchmarks/moa_quality.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from river.datasets import synth

from driftline.schemas.records import Outcome, Prediction

START_MS = 1_700_000_000_000
EVENT_MS = 10
ABRUPT_WIDTH = 1_000
"""Transition width of an "abrupt" MOA change: River's sigmoid overflows below about
position / 177 events, and a thousand is abrupt beside label delays of up to 5,000."""
TRAIN_EVENTS = 20_000
"""Events the frozen model is fitted on (all before the change)."""


@dataclass(frozen=True)
class World:
    """One benchmark stream: what changes, where, and which decision kind should say so."""

    name: str
    kind: str | None
    """Decision kind the change should raise (None: stationary)."""
    feature: str | None
    """Feature the first decision should name, when the change is in one feature."""
    source: Callable[[int, int, int], Iterator[tuple[dict, int]]]
    """(seed, n, change_at) -> (features, label) pairs."""
    lead: int = 0
    """Events before ``change_at`` at which the change begins: half the width of a gradual
    MOA transition, which River centres on its position (12 % of the new concept there).
    Delays are counted from ``change_at - lead``."""
    task: str = "binary"
    """``binary`` (a frozen logistic model) or ``regression`` (a frozen linear one)."""


def _concept(before: Callable[[int], object], after: Callable[[int], object], width: int):
    def source(seed: int, n: int, change_at: int) -> Iterator[tuple[dict, int]]:
        stream = synth.ConceptDriftStream(
            stream=before(seed),
            drift_stream=after(seed + 1),
            position=change_at,
            width=width,
            seed=seed,
        )
        return itertools.islice(iter(stream), n)

    return source


def _plain(make: Callable[[int], object]):
    def source(seed: int, n: int, change_at: int) -> Iterator[tuple[dict, int]]:
        return itertools.islice(iter(make(seed)), n)

    return source


def _shifted(make: Callable[[int], object], feature: str, amount: float):
    """Covariate shift: ``feature`` moves by ``amount`` of its sd at the change, labels
    still follow the generator's concept on the unshifted value."""
    return _ramped(make, feature, amount, 0)


def _ramped(make: Callable[[int], object], feature: str, amount: float, width: int):
    """Gradual covariate drift: ``feature`` moves linearly by ``amount`` of its sd over
    ``width`` events from the change on (at once for a width of 0), then stays moved."""

    def source(seed: int, n: int, change_at: int) -> Iterator[tuple[dict, int]]:
        rows = list(itertools.islice(iter(make(seed)), n))
        sd = float(np.std([x[feature] for x, _ in rows[:change_at]]))
        for i, (x, y) in enumerate(rows):
            if i < change_at:
                yield x, y
                continue
            share = 1.0 if width == 0 else min((i - change_at) / width, 1.0)
            v = x[feature] + amount * sd * share
            yield {**x, feature: round(v) if isinstance(x[feature], int) else v}, y

    return source


def _friedman(drift_type: str, width: int = 0):
    """River's FriedmanDrift (a regression target of ten uniform inputs, five of them
    relevant): the concept changes at ``change_at`` (``gra``: over all of the input
    space at once; ``gsg``: old and new concepts mixed half and half for ``width`` events,
    then the new one), and never comes back within the stream."""

    def source(seed: int, n: int, change_at: int) -> Iterator[tuple[dict, float]]:
        stream = synth.FriedmanDrift(
            drift_type=drift_type,
            position=(change_at, n + 1),
            transition_window=width,
            seed=seed,
        )
        return itertools.islice(iter(stream), n)

    return source


def _label_noise(make: Callable[[int], object], flip: float):
    """P(y | x) changes: after the change a share ``flip`` of labels is flipped (the
    model's error rate rises by ``flip * (1 - 2 * error)``)."""

    def source(seed: int, n: int, change_at: int) -> Iterator[tuple[dict, int]]:
        rng = np.random.default_rng(seed + 7)
        for i, (x, y) in enumerate(itertools.islice(iter(make(seed)), n)):
            flipped = i >= change_at and rng.uniform() < flip
            yield x, 1 - int(y) if flipped else int(y)

    return source


WORLDS = {
    w.name: w
    for w in [
        World("agrawal_stationary", None, None, _plain(lambda s: synth.Agrawal(0, seed=s))),
        World(
            "sea_stationary", None, None, _plain(lambda s: synth.SEA(variant=0, noise=0.1, seed=s))
        ),
        World(
            "sea_abrupt",
            "concept_drift",
            None,
            _concept(
                lambda s: synth.SEA(variant=0, noise=0.1, seed=s),
                lambda s: synth.SEA(variant=3, noise=0.1, seed=s),
                ABRUPT_WIDTH,
            ),
        ),
        World(
            "agrawal_gradual",
            "concept_drift",
            None,
            _concept(
                lambda s: synth.Agrawal(0, seed=s), lambda s: synth.Agrawal(2, seed=s), 20_000
            ),
            lead=10_000,
        ),
        World(
            "sea_error_plus_6pts",
            "concept_drift",
            None,
            _label_noise(lambda s: synth.SEA(variant=0, noise=0.28, seed=s), 0.15),
        ),
        World(
            "rbf_abrupt",
            "concept_drift",
            None,
            _concept(
                lambda s: synth.RandomRBFDrift(seed_model=s, seed_sample=s, n_features=10),
                lambda s: synth.RandomRBFDrift(seed_model=s + 50, seed_sample=s, n_features=10),
                ABRUPT_WIDTH,
            ),
        ),
        World(
            "hyperplane_gradual",
            "concept_drift",
            None,
            _concept(
                lambda s: synth.Hyperplane(seed=s, n_features=10, noise_percentage=0.05),
                lambda s: synth.Hyperplane(seed=s + 50, n_features=10, noise_percentage=0.05),
                20_000,
            ),
            lead=10_000,
        ),
        World(
            "agrawal_age_shift",
            "data_drift",
            "age",
            _shifted(lambda s: synth.Agrawal(0, seed=s), "age", 0.3),
        ),
        World(
            "agrawal_salary_shift",
            "data_drift",
            "salary",
            _shifted(lambda s: synth.Agrawal(0, seed=s), "salary", 0.3),
        ),
        World(
            "agrawal_salary_ramp",
            "data_drift",
            "salary",
            _ramped(lambda s: synth.Agrawal(0, seed=s), "salary", 0.5, 20_000),
        ),
        World(
            "hyperplane_stationary",
            None,
            None,
            _plain(lambda s: synth.Hyperplane(seed=s, n_features=10, noise_percentage=0.1)),
        ),
        World(
            "friedman_stationary",
            None,
            None,
            lambda seed, n, change_at: _friedman("gra")(seed, n, n),
            task="regression",
        ),
        World("friedman_abrupt", "concept_drift", None, _friedman("gra"), task="regression"),
        World(
            "friedman_gradual",
            "concept_drift",
            None,
            _friedman("gsg", 20_000),
            task="regression",
        ),
    ]
}


def _design(rows: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[float(r[n]) for n in names] for r in rows])


class FrozenModel:
    """A logistic regression fitted once on standardised inputs (Newton steps), then
    frozen: the deployed model whose traffic driftline watches."""

    def __init__(self, rows: list[dict], labels: list[int]) -> None:
        self.names = sorted(rows[0])
        x = _design(rows, self.names)
        self.mean = x.mean(axis=0)
        self.sd = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        z = np.column_stack([np.ones(len(x)), (x - self.mean) / self.sd])
        y = np.asarray(labels, dtype=np.float64)
        w = np.zeros(z.shape[1])
        for _ in range(25):
            p = 1 / (1 + np.exp(-z @ w))
            grad = z.T @ (p - y)
            hess = (z * (p * (1 - p))[:, None]).T @ z + 1e-6 * np.eye(len(w))
            w -= np.linalg.solve(hess, grad)
        self.w = w

    def predict(self, rows: list[dict]) -> np.ndarray:
        z = (_design(rows, self.names) - self.mean) / self.sd
        return 1 / (1 + np.exp(-(self.w[0] + z @ self.w[1:])))


class FrozenLinear:
    """A least-squares linear regression fitted once, then frozen (for regression worlds:
    Friedman's target is not linear, so the model has a residual error to watch)."""

    def __init__(self, rows: list[dict], labels: list[float]) -> None:
        self.names = sorted(rows[0])
        x = np.column_stack([np.ones(len(rows)), _design(rows, self.names)])
        self.w = np.linalg.lstsq(x, np.asarray(labels, dtype=np.float64), rcond=None)[0]

    def predict(self, rows: list[dict]) -> np.ndarray:
        return self.w[0] + _design(rows, self.names) @ self.w[1:]


def generate(
    world: World,
    seed: int,
    n: int,
    change_at: int,
    label_rate: float = 0.5,
    label_delay: tuple[int, int] = (500, 5_000),
) -> list[Prediction | Outcome]:
    """The world's events in arrival order: predictions of the frozen model, and outcomes
    for a share ``label_rate`` of them, ``label_delay`` events (uniform) later."""
    pairs = list(world.source(seed, n, change_at))
    rows = [{str(k): v for k, v in x.items()} for x, _ in pairs]
    labels: list[int] | list[float]
    if world.task == "regression":
        labels = [round(float(y), 4) for _, y in pairs]
        scores = FrozenLinear(rows[:TRAIN_EVENTS], labels[:TRAIN_EVENTS]).predict(rows)
    else:
        labels = [int(y) for _, y in pairs]
        scores = FrozenModel(rows[:TRAIN_EVENTS], labels[:TRAIN_EVENTS]).predict(rows)
    rng = np.random.default_rng(seed + 1_000)
    labelled = rng.uniform(size=n) < label_rate
    delay = rng.integers(label_delay[0], label_delay[1] + 1, size=n)
    due: dict[int, list[int]] = {}
    for i in np.flatnonzero(labelled):
        due.setdefault(int(i + delay[i]), []).append(int(i))
    events: list[Prediction | Outcome] = []
    for i in range(n):
        ts = START_MS + i * EVENT_MS
        events.append(
            Prediction(f"p{i}", f"r{i}", world.name, "v1", ts, rows[i], round(float(scores[i]), 6))
        )
        for j in due.pop(i, ()):
            events.append(Outcome(f"o{j}", f"r{j}", world.name, ts, labels[j]))
    return events
