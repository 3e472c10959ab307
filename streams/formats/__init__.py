"""Input formats other than driftline's own (KServe, Seldon, mapped logs), and
decisions as CloudEvents.
"""
