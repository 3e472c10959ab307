"""Settings values against their fields' types (`schemas.config_types`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from driftline.schemas.config_types import check_types
from driftline.schemas.exceptions import ConfigError


@dataclass
class Table:
    count: int = 1
    share: float = 0.5
    switch: bool = False
    name: str = "x"
    port: int | None = None
    names: tuple[str, ...] = ()


@pytest.mark.parametrize(
    "values",
    [
        {"count": 3, "share": 1, "switch": True, "name": "y", "port": None},
        {"share": 0.25, "port": 9_090},
        {"names": "not checked: sequences are the caller's", "unknown": object()},
    ],
)
def test_values_of_their_fields_types_pass(values) -> None:
    check_types(Table, values, "table")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": True}, "table setting count must be an integer, got True"),
        ({"count": 2.0}, "table setting count must be an integer, got 2.0"),
        ({"share": False}, "table setting share must be a number, got False"),
        ({"share": "0.5"}, "table setting share must be a number, got '0.5'"),
        ({"switch": 1}, "table setting switch must be true or false, got 1"),
        ({"name": 3}, "table setting name must be a string, got 3"),
        ({"port": "80"}, "table setting port must be an integer, got '80'"),
    ],
)
def test_a_value_of_another_type_names_the_setting_and_what_it_takes(values, message) -> None:
    """Booleans are not numbers (TOML's ``true`` is no count), a whole float is not an
    integer, and an optional field names its type without the None."""
    with pytest.raises(ConfigError) as raised:
        check_types(Table, values, "table")
    assert str(raised.value) == message
