"""Feedback loops: a model whose outputs shape its own future inputs or labels."""
