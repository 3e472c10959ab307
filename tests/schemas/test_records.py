"""The records' fast constructors build what the dataclasses' own constructors build."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from driftline.schemas.records import Outcome, Prediction, make_outcome, make_prediction

PREDICTION = (
    "e1", "r1", "m", "v2", 1_700_000_000_000, {"x": 1.5, "c": "a", "n": None}, ("a", "b"),
    {"a": 0.7}, "canary", {"region": "south"}, "approve", True,
)  # fmt: skip
OUTCOME = ("o1", "r1", "m", 1_700_000_000_500, 1, {"region": "south"}, True)


@pytest.mark.parametrize(
    ("record", "make", "values"),
    [(Prediction, make_prediction, PREDICTION), (Outcome, make_outcome, OUTCOME)],
)
def test_a_fast_constructor_builds_what_the_constructor_builds(record, make, values) -> None:
    """Equal, of the same type, every field in place, and as frozen."""
    made = make(*values)
    assert made == record(*values)
    assert type(made) is record
    assert [getattr(made, f.name) for f in dataclasses.fields(record)] == list(values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ts = 0


def test_the_fast_constructors_take_every_field() -> None:
    """A field added to a record must be added to its fast constructor (which sets the
    fields by position): their parameters are the fields, in order."""
    for record, make in ((Prediction, make_prediction), (Outcome, make_outcome)):
        params = list(inspect.signature(make).parameters)
        assert params == [f.name for f in dataclasses.fields(record)]
