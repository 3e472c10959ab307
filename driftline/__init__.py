"""driftline: watches machine-learning models in production.

The code lives in the repository's top-level folders (``detectors/``, ``schemas/``,
``streams/``), installed under this one name: ``driftline.detectors``,
``driftline.schemas``, ``driftline.streams``.
"""
