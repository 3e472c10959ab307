"""Checkpoints of both stages on the state topic, and keeping that topic bounded."""
