"""The summaries messages' item layouts (`detectors.intake.wire`): every item and every
field, through JSON and back, is what it was; older formats read alike; a damaged
message is an error, never a silent loss."""

from __future__ import annotations

import orjson
import pytest

from driftline.detectors.feedback.monitor import PREDICTION
from driftline.detectors.intake.stage import Intake, item_to_wire
from driftline.detectors.intake.wire import decode_items, encode_items
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.simulation.traffic import StreamSpec, generate


def format_2_rows(items):
    """Rows as format-2 messages held them (what workers before format 3 wrote): a
    prediction's features ``[index of its names, *values]``, and the names table."""
    keys: dict[tuple[str, ...], int] = {}
    rows = []
    for item in items:
        row = item_to_wire(item)
        if item.kind == PREDICTION:
            index = keys.setdefault(tuple(row[8]), len(keys))
            row[8] = [index, *row[8].values()]
        rows.append(row)
    return rows, list(keys)


def _through_json(items):
    return orjson.loads(orjson.dumps(encode_items(items)))


def _mixed_items():
    """Predictions with every optional field and without, features of several name lists
    (one in another order, one empty), ranked predictions and actions, traces; labels
    with and without a feedback tag; an independent outcome."""
    intake = Intake(DetectorSettings(feedback_enabled=True))
    events = [
        Prediction(
            "p1", "r1", "m", "v1", 10, {"a": 1.5, "b": "x", "c": None}, ("i1", "i2"),
            {"1": 0.7}, "canary", {"region": "n"}, ("i1",), True,
        ),
        Prediction("p2", "r2", "m", "v1", 11, {"b": "y", "a": 2, "c": True}, 0.1),
        Outcome("o1", "r1", "m", 20, "i1"),
        Outcome("o2", "r9", "m", 30, 1, {"region": "s"}, True),
        Prediction("p3", "r3", "m", "v2", 12, {}, "cat", None, "shadow", None, 3, False),
        Outcome("o3", "r3", "m", 40, None),
        Prediction("p4", "r4", "m", "v2", 13, {"a": 0.5, "b": "z", "c": None}, 7),
    ]  # fmt: skip
    traces = [f"00-{i:032x}-{i:016x}-01" if i % 2 else None for i in range(len(events))]
    return intake.process(events, traces)["m"]


def test_every_item_and_field_survives_the_columns() -> None:
    items = _mixed_items()
    assert [i.kind for i in items] == [0, 0, 1, 2, 0, 1, 0]
    got = decode_items(_through_json(items), "m")
    assert got == [item._replace(tag=None) for item in items]
    # The features keep their names' order; values keep their types.
    assert [list(i.event.features) for i in got if i.kind == 0] == [
        ["a", "b", "c"], ["b", "a", "c"], [], ["a", "b", "c"],
    ]  # fmt: skip
    assert type(got[1].event.features["c"]) is bool and type(got[1].event.features["a"]) is int


def test_columns_of_a_simulated_stream_decode_to_its_items() -> None:
    """A batch as stage 1 makes them (thousands of predictions and labels, one name list)
    and every sub-batch boundary: the same items, in the same order."""
    events = generate(StreamSpec(n_predictions=3_000, seed=4))
    items = Intake().process(events)["credit-risk"]
    for part in (items, items[:1], items[1:2], items[:0], [i for i in items if i.kind != 0]):
        assert decode_items(_through_json(part), "credit-risk") == [
            item._replace(tag=None) for item in part
        ]


def test_rows_of_earlier_formats_read_alike() -> None:
    """Format 1 (names in every item) and format 2 (a names table beside the rows) give
    the items format 3 gives."""
    items = _mixed_items()
    rows, keys = format_2_rows(items)
    rows = orjson.loads(orjson.dumps(rows))
    one = orjson.loads(orjson.dumps([item_to_wire(item) for item in items]))
    want = decode_items(_through_json(items), "m")
    assert decode_items(rows, "m", keys) == want
    assert decode_items(one, "m") == want


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body["P"]["e"].pop(),
        lambda body: body.update(k=body["k"] + "p"),
        lambda body: body.update(k=body["k"][:-1]),
        lambda body: body["P"]["fv"][0].append(1.0),
        lambda body: body.pop("k"),
    ],
)
def test_a_damaged_message_is_an_error(damage) -> None:
    """A column short of items, kinds that do not match the items, a row of values longer
    than its names: an error the worker dead-letters, never fewer items."""
    body = _through_json(_mixed_items())
    damage(body)
    with pytest.raises((ValueError, KeyError)):
        decode_items(body, "m")


def test_features_in_another_order_keep_their_values() -> None:
    """Predictions with the first one's names read with its getter: a prediction whose
    dict has them in another order keeps each value with its name; one with as many
    names but another one falls back to its own names."""
    events = [
        Prediction("p1", "r1", "m", "v1", 10, {"a": 1.0, "b": "x", "c": None}, 0.9),
        Prediction("p2", "r2", "m", "v1", 11, {"c": 3, "a": 2.5, "b": "y"}, 0.1),
        Prediction("p3", "r3", "m", "v1", 12, {"a": 0.5, "b": "z", "c": False}, 0.7),
    ]
    items = Intake().process(events)["m"]
    body = _through_json(items)
    assert body["fk"] == [["a", "b", "c"]] and body["P"]["fi"] == 0
    assert decode_items(body, "m") == [item._replace(tag=None) for item in items]
    other = Prediction("p4", "r4", "m", "v1", 13, {"a": 1.0, "b": "w", "d": 4}, 0.2)
    items += Intake().process([other])["m"]
    body = _through_json(items)
    assert body["fk"] == [["a", "b", "c"], ["c", "a", "b"], ["a", "b", "d"]]
    assert decode_items(body, "m") == [item._replace(tag=None) for item in items]
