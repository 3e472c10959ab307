"""driftline's I/O side: Kafka, offsets, checkpoints, metrics and the command line."""

from streams.config import Config, Topics, load_config, load_profile
from streams.reference_build import build_profile
from streams.replay import ReplayResult, replay
from streams.simulation.traffic import SCENARIOS, StreamSpec, generate

__all__ = [
    "SCENARIOS",
    "Config",
    "ReplayResult",
    "StreamSpec",
    "Topics",
    "build_profile",
    "generate",
    "load_config",
    "load_profile",
    "replay",
]
