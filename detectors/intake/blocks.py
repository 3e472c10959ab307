"""Blocks of a model's joined labels: a slice's labels sent to the model stage as
columns, so that its Python work on labels is per block, not per label.

With ``slice_ms`` set, an input partition gathers a model's joined labels per slice of
event time (the slice of the partition's event time of the model when the first was
made) and sends them as one `LabelBlock`: per label its version, the outcome's event
time and id, the label, the prediction's value and event time, one list each, and the
ordinal of its outcome in the block (an outcome joined with a champion's and a shadow's
prediction gives two labels of one outcome). The model stage extends its versions' label
columns with a block's lists (`detectors.engine.ModelEngine`), and what reads them works
on columns already (the concept monitors, the labelled rows of the version comparisons,
the label maturity). A block takes one position in the model's merged order per outcome,
in the order the outcomes came, so the labels of one outcome share a position, as the
paired comparisons of a challenger or shadow with the champion need.

A block goes to the model stage when the partition's event time of the model passes the
slice's end, or when it holds `BLOCK_BYTES` (about; so a block always fits a summaries
message), or when the partition has read all there is for now (its idle marker). Its
labels then reach the model stage up to one slice later than as items: the cost of
testing a hot model's labels per slice.

Where no reader in the model stage needs a label by itself (a model whose profile has
a performance figure), a closed block is sent summed instead
(`detectors.intake.labelsums`). A live canary's labels and its stable version's travel
in blocks and sums too: its comparisons read a block's rows and a sum's counts (before,
a partition that showed a canary sent the model's labels as items).

What travels as items, as before: labels of tagged
predictions (the feedback-loop tests read them one by one), labels that carry a trace
context (a decision they trigger names it), and labels whose values are not plain
numbers, booleans or short strings. The labels of one outcome go together, all in a
block or all as items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from driftline.detectors.settings import DetectorSettings

BLOCK_BYTES = 131_072
"""Encoded bytes at which a block is sent (estimated as labels are added): an eighth of
Kafka's default ``max.request.size`` (the worker takes at most a quarter of its own), so
a block fits a summaries message with room for other items even where the estimate
falls short (a string's characters are counted, and a non-ASCII one takes up to four
bytes), and a slice of a hot model goes in several blocks."""

LABEL_BYTES = 96
"""Encoded bytes of a label's numbers and separators at most (two 13-digit times, a
float prediction and a float label of up to 24 characters each, its outcome's ordinal,
the quotes of its id and version), beside its id, version and strings."""

MAX_STRING = 256
"""Longest string label or prediction a block takes (longer ones travel as items)."""

_SCALARS = frozenset({int, float, bool, str})


class LabelBlock(NamedTuple):
    """A model's labels of (a part of) one slice, from one input partition, as columns
    in the order they were made."""

    model_id: str
    number: int
    """The slice: event time // ``slice_ms``."""
    versions: list[str]
    """The version each label's prediction came from."""
    outcomes: list[int]
    """The ordinal of each label's outcome in the block (0, 0, 1, 2, ...: the labels of
    one outcome are neighbours)."""
    event_ids: list[str]
    """The outcomes' event ids."""
    outcome_ts: list[int]
    """The outcomes' event times."""
    labels: list[Any]
    predictions: list[Any]
    """The values predicted (what each label judges)."""
    prediction_ts: list[int]
    """Event times of the predictions."""

    @property
    def events(self) -> int:
        """Labels in the block (what the model stage's step counts)."""
        return len(self.outcome_ts)

    @property
    def positions(self) -> int:
        """Positions the block takes in the model's merged order: one per outcome."""
        return self.outcomes[-1] + 1

    @property
    def ts(self) -> int:
        """The latest of its outcomes' event times."""
        return max(self.outcome_ts)

    @property
    def event_id(self) -> str:
        """What names the block where an item names its event."""
        return f"labels/{self.number}/{self.event_ids[0]}"


@dataclass(slots=True)
class _Open:
    """A model's block being gathered."""

    number: int
    versions: list[str] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    prediction_ts: list[int] = field(default_factory=list)
    size: int = 0
    """Estimated encoded bytes."""

    def block(self, model_id: str) -> LabelBlock:
        return LabelBlock(
            model_id, self.number, self.versions, self.outcomes, self.event_ids, self.ts,
            self.labels, self.predictions, self.prediction_ts,
        )  # fmt: skip


def blockable(label: Any, prediction: Any) -> bool:
    """Whether a label and the value it judges can travel in a block (plain numbers,
    booleans and strings of up to `MAX_STRING` characters)."""
    for value in (label, prediction):
        kind = type(value)
        if kind not in _SCALARS or (kind is str and len(value) > MAX_STRING):
            return False
    return True


class LabelBlocks:
    """The label blocks one input partition gathers (`detectors.intake.stage.Intake`).

    Parameters
    ----------
    settings_for
        A model's detector settings (``slice_ms``).
    max_bytes
        Estimated encoded bytes at which a block is sent before its slice ends.
    """

    def __init__(
        self, settings_for: Callable[[str], DetectorSettings], max_bytes: int = BLOCK_BYTES
    ) -> None:
        self.settings_for = settings_for
        self.max_bytes = max_bytes
        self.open: dict[str, _Open] = {}
        """Per model, the block being gathered."""
        self.pending: dict[str, list[LabelBlock]] = {}
        """Per model, blocks restored open whose model no longer has ``slice_ms`` set: to
        send as they are (`restore`)."""

    def takes(self, model_id: str) -> bool:
        """Whether the model's labels may travel in blocks here."""
        return self.settings_for(model_id).slice_ms > 0

    def take(
        self,
        model_id: str,
        version: str,
        watermark: int,
        event_id: str,
        ts: int,
        label: Any,
        prediction: Any,
        prediction_ts: int,
        first: bool,
    ) -> None:
        """Add a label (`takes` and `blockable` said it may) to the model's open block;
        ``first``: the first label of its outcome."""
        found = self.open.get(model_id)
        if found is None:
            found = self.open[model_id] = _Open(watermark // self.settings_for(model_id).slice_ms)
        # An outcome's first label opens its ordinal; the next ones share it.
        outcome = (found.outcomes[-1] if found.outcomes else -1) + (1 if first else 0)
        found.versions.append(version)
        found.outcomes.append(outcome)
        found.event_ids.append(event_id)
        found.ts.append(ts)
        found.labels.append(label)
        found.predictions.append(prediction)
        found.prediction_ts.append(prediction_ts)
        found.size += LABEL_BYTES + len(event_id) + len(version)
        for value in (label, prediction):
            if type(value) is str:
                found.size += len(value)

    def full(self, model_id: str) -> LabelBlock | None:
        """The model's block, to send now, if it holds its bytes (asked after the last
        label of an outcome, so an outcome's labels stay together)."""
        found = self.open.get(model_id)
        if found is None or found.size < self.max_bytes:
            return None
        return self._close(model_id)

    def closing(self, model_id: str, ts: int) -> list[LabelBlock]:
        """The model's block if its slice ends before event time ``ts`` (the partition's
        event time of the model is about to pass it), to send now."""
        found = self.open.get(model_id)
        if found is None or ts // self.settings_for(model_id).slice_ms <= found.number:
            return []
        return [self._close(model_id)]

    def flush(self) -> dict[str, list[LabelBlock]]:
        """Every open block, per model (the partition has read all there is for now)."""
        return {model_id: [self._close(model_id)] for model_id in list(self.open)}

    def _close(self, model_id: str) -> LabelBlock:
        return self.open.pop(model_id).block(model_id)

    def forget(self, model_id: str) -> None:
        self.pending.pop(model_id, None)
        self.open.pop(model_id, None)

    def state(self) -> dict[str, Any]:
        return {
            "open": [
                [model_id, block_to_wire(found.block(model_id)), found.size]
                for model_id, found in self.open.items()
            ]
            + [
                [model_id, block_to_wire(block), 0]
                for model_id, blocks in self.pending.items()
                for block in blocks
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        # A "canary" list in a checkpoint from before is not read: labels go in blocks
        # whatever the canaries.
        self.open, self.pending = {}, {}
        for model_id, row, size in state["open"]:
            block = block_from_wire(model_id, row)
            if self.settings_for(model_id).slice_ms <= 0:
                # Slices turned off since: what was gathered goes as it is.
                self.pending.setdefault(model_id, []).append(block)
            elif model_id in self.open:  # a block restored pending, then slices back on
                self.pending.setdefault(model_id, []).append(block)
            else:
                self.open[model_id] = _Open(
                    block.number, block.versions, block.outcomes, block.event_ids,
                    block.outcome_ts, block.labels, block.predictions, block.prediction_ts,
                    size,
                )  # fmt: skip


def block_to_wire(block: LabelBlock) -> list[Any]:
    """The fields of a block after its model id (which travels once per message)."""
    return list(block[1:])


def block_from_wire(model_id: str, row: Sequence[Any]) -> LabelBlock:
    """Inverse of `block_to_wire`."""
    if len(row) != len(LabelBlock._fields) - 1:
        raise ValueError(f"a label block has {len(LabelBlock._fields) - 1} fields, got {len(row)}")
    number, *columns = row
    if len({len(column) for column in columns}) != 1:
        raise ValueError("a label block's columns differ in length")
    if not columns[0]:
        raise ValueError("a label block holds no label")
    outcomes = columns[1]
    if outcomes[0] != 0 or not 0 <= outcomes[-1] < len(outcomes):
        raise ValueError("a label block's outcome ordinals do not count up from 0")
    return LabelBlock(model_id, number, *columns)


__all__ = [
    "BLOCK_BYTES",
    "LabelBlock",
    "LabelBlocks",
    "block_from_wire",
    "block_to_wire",
    "blockable",
]
