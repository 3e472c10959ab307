"""driftline's tests, laid out like the packages they test (broker helpers at this level)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root (README, docker-compose.yml, deploy/)."""
