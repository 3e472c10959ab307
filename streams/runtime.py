"""Process-wide tuning shared by the long-running commands (worker, replay, demo)."""

from __future__ import annotations

import gc

GC_GEN0_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700). Every
decoded event allocates a few containers that die young and hold no cycles; at the
default, the collector runs every few dozen events and rescans the long-lived join
buffer each time, costing about a third of replay throughput (measured with
benchmarks/replay_throughput.py). Cycles are still collected, just less often."""

GC_GEN1_THRESHOLD = 20
GC_GEN2_THRESHOLD = 100
"""Older generations are collected proportionally less often (defaults are 10 and 10)."""


def tune_gc() -> None:
    """Apply the collector thresholds above and move start-up objects out of its way."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
