"""Errors raised by driftline. Every error in the project derives from `DriftlineError`."""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every exception driftline raises on purpose."""


class DecodeError(DriftlineError):
    """An input message could not be turned into a typed event.

    Parameters
    ----------
    reason
        Machine-readable reason, one of `schemas.decode.REASONS`; it becomes the
        dead letter's ``reason`` and a metric label.
    message
        Human-readable text naming the field that was wrong and what was expected.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ConfigError(DriftlineError):
    """A setting, reference profile or command-line option is invalid."""


class PublishError(DriftlineError):
    """An output (decision, dead letter or checkpoint) could not be delivered.

    The worker stops on it without checkpointing or committing past the input that
    produced the output, so a restart processes that input again and delivers.
    """
