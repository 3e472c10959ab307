"""Stage 1 (dedupe, join, bounded event time, route by model) and stage 2's
per-model merge of every input partition's items.
"""
