"""Shared fixtures: seeded streams (cached per session) and a runner for the engine."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pytest

from driftline.detectors.decision import Decision
from driftline.detectors.engine import Engine
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Event, Prediction
from driftline.streams.simulation.traffic import StreamSpec, generate

BATCH = 4_096


@cache
def stream(spec: StreamSpec) -> tuple[Event, ...]:
    """A seeded stream, generated once per session."""
    return tuple(generate(spec))


def run_engine(
    events: tuple[Event, ...] | list[Event],
    settings: DetectorSettings | None = None,
    batch: int = BATCH,
    engine: Engine | None = None,
) -> list[Decision]:
    engine = engine or Engine(settings)
    out: list[Decision] = []
    for i in range(0, len(events), batch):
        out += engine.process(list(events[i : i + batch]))
    return out


def served_at(events: tuple[Event, ...] | list[Event]) -> np.ndarray:
    """Predictions served up to and including each arrival position."""
    return np.cumsum([type(e) is Prediction for e in events])


@pytest.fixture
def make_stream() -> Callable[..., tuple[Event, ...]]:
    def make(**kwargs: object) -> tuple[Event, ...]:
        return stream(StreamSpec(**kwargs))  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def broker():
    """One embedded broker (tansu) for the whole session, on a free loopback port."""
    from driftline.streams.broker import EmbeddedBroker  # noqa: PLC0415 (only Kafka tests need it)

    with EmbeddedBroker() as running:
        yield running.bootstrap_servers
