"""driftline's I/O side: Kafka, offsets, checkpoints, metrics and the command line."""

from driftline.streams.config import Config, Topics, load_config, load_profile
from driftline.streams.reference_build import build_profile
from driftline.streams.replay import ReplayResult, replay
from driftline.streams.simulation.traffic import SCENARIOS, StreamSpec, generate

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
