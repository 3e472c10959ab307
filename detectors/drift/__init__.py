"""Drift against the reference: feature and prediction channels, concept (error-rate)
monitors, River's detectors behind the same budget, and the reference profiles themselves.
"""
