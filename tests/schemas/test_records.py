"""The records: built by position in field order, frozen, equal by value."""

from __future__ import annotations

from typing import get_args

import msgspec
import pytest

from driftline.schemas.records import ROLES, Outcome, Prediction, Role

PREDICTION = (
    "e1", "r1", "m", "v2", 1_700_000_000_000, {"x": 1.5, "c": "a", "n": None}, ("a", "b"),
    {"a": 0.7}, "canary", {"region": "south"}, "approve", True,
)  # fmt: skip
OUTCOME = ("o1", "r1", "m", 1_700_000_000_500, 1, {"region": "south"}, True)


@pytest.mark.parametrize(("record", "values"), [(Prediction, PREDICTION), (Outcome, OUTCOME)])
def test_a_record_is_built_by_position_and_is_frozen(record, values) -> None:
    """Positional arguments go to the fields in order (the decoders and the summaries
    reader build records so), equal records compare equal, and none can be changed."""
    made = record(*values)
    assert [getattr(made, name) for name in record.__struct_fields__] == list(values)
    assert made == record(**dict(zip(record.__struct_fields__, values, strict=True)))
    assert made != msgspec.structs.replace(made, ts=values[4] + 1)
    with pytest.raises(AttributeError):
        made.ts = 0  # type: ignore[misc]


def test_the_roles_type_is_the_roles_tuple() -> None:
    assert get_args(Role) == ROLES
