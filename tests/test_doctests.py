"""The examples in every package's docstrings run, and pass."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

from driftline import detectors, schemas, streams

MODULES = sorted(
    info.name
    for package in (detectors, schemas, streams)
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Every ``>>>`` example of the module gives the output written beside it."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_the_examples_are_found() -> None:
    """The collection above sees the modules that carry examples (it cannot pass empty)."""
    attempted = sum(
        doctest.testmod(importlib.import_module(name)).attempted
        for name in (
            "driftline.detectors.stats.cusum",
            "driftline.detectors.decision",
            "driftline.schemas.decode",
        )
        if name in MODULES
    )
    assert attempted >= 3
