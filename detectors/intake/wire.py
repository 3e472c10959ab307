"""How a batch of one model's items travels from stage 1 to the model stage.

A summaries message carries its items under ``i``. Format 3 (written now) is columnar:
the predictions' fields one list each, their feature values one list per prediction
beside a table of feature-name lists (``fk``), and the other items (joined labels,
independent outcomes, slices of predictions summed) as rows
(`detectors.intake.stage.item_to_wire`), with a string of
kinds (``k``, ``p`` for a prediction and ``o`` for another item) giving the order. A
column whose values are all the default (no scores, no segment, no trace...) is null.
Building and reading columns takes one pass of C-level iteration per field instead of
a Python row per item: the model stage of a worker group decodes most of its items
(every item another worker's input stage sent), and the input stage encodes all of them.

Formats 1 (a row per item, feature names in each) and 2 (rows, names once per message)
are what earlier workers wrote; they are still read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any

from driftline.detectors.feedback.monitor import PREDICTION
from driftline.detectors.intake.stage import Routed, item_from_wire, item_to_wire
from driftline.schemas.records import Prediction

_REQUIRED = tuple(
    (column, attrgetter(field))
    for column, field in (
        ("e", "event_id"), ("r", "request_id"), ("v", "model_version"), ("ts", "ts"),
        ("y", "prediction"),
    )
)  # fmt: skip
"""Column names of a prediction's required fields (but its features), and their getters."""
_OPTIONAL = tuple(
    (column, default, attrgetter(field))
    for column, field, default in (
        ("sc", "scores", None), ("ro", "role", "champion"), ("sg", "segment", None),
        ("a", "action", None), ("x", "exploration", False),
    )
)  # fmt: skip
"""Column names of the optional fields, in `Prediction`'s order, with the value a
prediction that does not set them has, and their getters."""
_features = attrgetter("features")
_seq, _slot, _event, _trace = (attrgetter(f) for f in ("seq", "slot", "event", "trace"))


def encode_items(items: Sequence[Routed]) -> dict[str, Any]:
    """The ``i`` of a format-3 summaries message (JSON-compatible, for orjson)."""
    kinds = "".join(["p" if item.kind == PREDICTION else "o" for item in items])
    predicted = [item for item in items if item.kind == PREDICTION] if "o" in kinds else items
    out: dict[str, Any] = {"k": kinds}
    if len(predicted) < len(items):
        out["o"] = [item_to_wire(item) for item in items if item.kind != PREDICTION]
    if not predicted:
        return out
    # A column per field, each in one C-level pass (transposing per-item tuples with
    # zip(*rows) costs five times as much).
    events = list(map(_event, predicted))
    features = list(map(_features, events))
    table, index, values = _feature_values(features)
    columns: dict[str, Any] = {
        "s": list(map(_seq, predicted)),
        "t": list(map(_slot, predicted)),
        **{column: list(map(get, events)) for column, get in _REQUIRED},
        "fi": index,
        "fv": values,
    }
    for name, default, get in _OPTIONAL:
        found = list(map(get, events))
        columns[name] = None if found.count(default) == len(found) else found
    traces = list(map(_trace, predicted))
    columns["tr"] = None if traces.count(None) == len(traces) else traces
    out["fk"] = table
    out["P"] = columns
    return out


def _feature_values(
    features: list[Mapping[str, Any]],
) -> tuple[list[tuple[str, ...]], int | list[int], list[Any]]:
    """The feature-name table, each prediction's index in it (one int when all share
    one), and each prediction's values in its names' order. When every prediction has
    the first one's names (the usual batch), its values are read with one C-level getter
    in the first one's order, whatever order its own dict had: the names still go with
    their values, and what reads features reads them by name."""
    first = features[0]
    if len(first) > 1 and set(map(len, features)) == {len(first)}:
        try:
            return [tuple(first)], 0, list(map(itemgetter(*first), features))
        except KeyError:  # same count, other names
            pass
    values: list[Any] = [list(f.values()) for f in features]
    found: dict[tuple[str, ...], int] = {}
    index = [found.setdefault(n, len(found)) for n in map(tuple, features)]
    return list(found), 0 if len(found) == 1 else index, values


def decode_items(
    body: Any, model_id: str, feature_keys: Sequence[Sequence[str]] | None = None
) -> list[Routed]:
    """The items of a summaries message's ``i`` (any format; ``feature_keys``: format
    2's ``fk``, beside ``i``)."""
    if isinstance(body, list):  # formats 1 and 2
        return [item_from_wire(row, model_id, feature_keys) for row in body]
    if not isinstance(body, Mapping) or not isinstance(body.get("k"), str):
        raise ValueError("a summaries message's items are a list or a columns object")
    kinds: str = body["k"]
    others = [item_from_wire(row, model_id) for row in body.get("o", ())]
    if "p" not in kinds:
        predicted: list[Routed] = []
    else:
        predicted = _predictions(body["P"], body["fk"], model_id)
    if len(predicted) + len(others) != len(kinds):
        raise ValueError("a summaries message's kinds do not match its items")
    if not others:
        return predicted
    if not predicted:
        return others
    chosen = {"p": iter(predicted), "o": iter(others)}
    return [next(chosen[kind]) for kind in kinds]


def _predictions(
    columns: Mapping[str, Any], table: Sequence[Sequence[str]], model_id: str
) -> list[Routed]:
    index = columns["fi"]
    values = columns["fv"]
    n = len(values)
    required = [columns[name] for name in ("s", "t", "e", "r", "v", "ts", "y")]
    if any(len(column) != n for column in required):
        raise ValueError("a summaries message's prediction columns differ in length")
    if isinstance(index, int):
        names = table[index]
        features = [dict(zip(names, row, strict=True)) for row in values]
    else:
        features = [
            dict(zip(table[i], row, strict=True)) for i, row in zip(index, values, strict=True)
        ]
    predictions = columns["y"]
    if list in set(map(type, predictions)):  # ranked item ids
        predictions = [tuple(p) if type(p) is list else p for p in predictions]
    optional = [
        repeat(default, n) if columns.get(name) is None else columns[name]
        for name, default, _ in _OPTIONAL
    ]
    actions = columns.get("a")
    if actions is not None and list in set(map(type, actions)):
        optional[3] = [tuple(a) if type(a) is list else a for a in actions]
    events = list(
        map(
            Prediction,
            columns["e"],
            columns["r"],
            repeat(model_id, n),
            columns["v"],
            columns["ts"],
            features,
            predictions,
            *optional,
        )
    )
    traces = columns.get("tr")
    return list(
        map(
            Routed,
            repeat(PREDICTION, n),
            columns["s"],
            columns["t"],
            events,
            repeat(None, n),
            repeat(None, n) if traces is None else traces,
        )
    )


__all__ = ["decode_items", "encode_items"]
