"""Seeded simulations for tests, benchmarks and the demo: model traffic with
injected changes, feedback loops with their controls, and the same traffic as foreign
prediction logs.
"""
