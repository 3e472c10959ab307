"""Types of settings read from TOML: every settings table is checked against its fields'
types when it is read, so a wrong value is one line naming the setting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from driftline.schemas.exceptions import ConfigError

KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
"""What a value of each settings field type is called in an error; fields of other types
(sequences, mappings) are not checked by `check_types`."""


def _fits(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return type(value) is bool
    if kind == "int":
        return isinstance(value, int) and type(value) is not bool
    if kind == "float":
        return isinstance(value, (int, float)) and type(value) is not bool
    if kind == "str":
        return isinstance(value, str)
    return True


def check_types(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise ConfigError naming the first value of ``values`` whose type is not that of
    its field of the dataclass ``cls`` (TOML's ``slice_ms = 1.5``, ``idle_after_ms =
    "2s"``): one line when the configuration is read, not a TypeError in a running worker
    nor a float where counts are kept. Integers are numbers; booleans are neither. Keys
    that are not fields are left to the caller.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     slice_ms: int = 0
    ...     alpha: float = 0.01
    ...     group_id: str | None = None
    >>> check_types(Example, {"slice_ms": 2_000, "alpha": 1, "group_id": None}, "worker")
    >>> check_types(Example, {"slice_ms": 1.5}, "worker")
    Traceback (most recent call last):
    ...
    driftline.schemas.exceptions.ConfigError: worker setting slice_ms must be an integer, got 1.5
    >>> check_types(Example, {"group_id": 7}, "worker")
    Traceback (most recent call last):
    ...
    driftline.schemas.exceptions.ConfigError: worker setting group_id must be a string, got 7
    """
    kinds = {f.name: str(f.type).split(" | ") for f in fields(cls)}
    for name, value in values.items():
        accepted = kinds.get(name, ())
        if not accepted or any(_fits(value, kind) for kind in accepted):
            continue
        wanted = " or ".join(KIND_NAMES.get(kind, kind) for kind in accepted if kind != "None")
        raise ConfigError(f"{what} setting {name} must be {wanted}, got {value!r}")
