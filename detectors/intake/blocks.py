"""Blocks of a version's joined labels: a slice's labels sent to the model stage as
columns, so that its Python work on labels is per block, not per label.

With ``slice_ms`` set, an input partition gathers the labels of a version per slice of
event time (the slice of the partition's event time of the model when each label was
made) and sends them as one `LabelBlock`: the labels' outcome event times and ids,
their values, their predictions' values and event times, one list each. The model stage
extends its label columns with a block's lists in one step each
(`detectors.engine.ModelEngine`), and what reads them works on columns already (the
concept monitors, the labelled rows of the version comparisons, the label maturity).
The labels of a block share one position in the model's merged order: the block's.

A block goes to the model stage when the partition's event time of the model passes the
slice's end, or when it holds `BLOCK_BYTES` (about; so a block always fits a summaries
message), or when the partition has read all there is for now (its idle marker). Its
labels then reach the concept monitors up to one slice later than as items: the cost of
testing a hot model's labels per slice.

What travels as items, as before: labels of a model that showed any role but
``champion`` on this partition (a challenger's or a shadow's labels are paired with the
champion's by their shared outcome; canaries are compared label by label), labels of
tagged predictions (the feedback-loop tests read them one by one), labels that carry a
trace context (a decision they trigger names it), and labels whose values are not plain
numbers, booleans or short strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from driftline.detectors.settings import DetectorSettings

BLOCK_BYTES = 131_072
"""Encoded bytes a block holds at most (estimated as labels are added): an eighth of
Kafka's default ``max.request.size``, so a block fits a summaries message with room for
other items, and a slice of a hot model goes in several blocks."""

LABEL_BYTES = 72
"""Estimated encoded bytes of a label's numbers and separators (two 13-digit times, a
float prediction, a label), beside its id and strings."""

MAX_STRING = 256
"""Longest string label or prediction a block takes (longer ones travel as items)."""

_SCALARS = frozenset({int, float, bool, str})


class LabelBlock(NamedTuple):
    """One version's labels of (a part of) one slice, from one input partition, as
    columns in the order they were made."""

    model_id: str
    model_version: str
    number: int
    """The slice: event time // ``slice_ms``."""
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
    def ts(self) -> int:
        """The latest of its outcomes' event times."""
        return max(self.outcome_ts)

    @property
    def event_id(self) -> str:
        """What names the block where an item names its event."""
        return f"labels/{self.model_version}/{self.number}/{self.event_ids[0]}"


@dataclass(slots=True)
class _Open:
    """A version's block being gathered."""

    number: int
    event_ids: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    prediction_ts: list[int] = field(default_factory=list)
    size: int = 0
    """Estimated encoded bytes."""

    def block(self, model_id: str, version: str) -> LabelBlock:
        return LabelBlock(
            model_id, version, self.number, self.event_ids, self.ts, self.labels,
            self.predictions, self.prediction_ts,
        )  # fmt: skip


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
        self.open: dict[str, dict[str, _Open]] = {}
        """Per model and version, the block being gathered."""
        self.lowest: dict[str, tuple[int, int]] = {}
        """Per model with a block open: its earliest open slice, and ``slice_ms``."""
        self.mixed: set[str] = set()
        """Models that showed a role other than ``champion`` here: labels go as items."""
        self.pending: dict[str, list[LabelBlock]] = {}
        """Per model, blocks restored open whose model no longer has ``slice_ms`` set: to
        send as they are (`restore`)."""

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
    ) -> LabelBlock | bool:
        """Add a label to its version's open block: True, or the block when the label
        filled it (to send now). False: the label travels as an item."""
        if model_id in self.mixed:
            return False
        size = LABEL_BYTES + len(event_id)
        for value in (label, prediction):
            kind = type(value)
            if kind not in _SCALARS:
                return False
            if kind is str:
                if len(value) > MAX_STRING:
                    return False
                size += len(value)
        every = self.settings_for(model_id).slice_ms
        if every <= 0:
            return False
        versions = self.open.get(model_id)
        if versions is None:
            versions = self.open[model_id] = {}
        found = versions.get(version)
        if found is None:
            number = watermark // every
            found = versions[version] = _Open(number)
            lowest = self.lowest.get(model_id)
            if lowest is None or number < lowest[0]:
                self.lowest[model_id] = (number, every)
        found.event_ids.append(event_id)
        found.ts.append(ts)
        found.labels.append(label)
        found.predictions.append(prediction)
        found.prediction_ts.append(prediction_ts)
        found.size += size
        if found.size < self.max_bytes:
            return True
        return self._close(model_id, [version])[0]

    def mix(self, model_id: str) -> list[LabelBlock]:
        """The model showed a role other than ``champion`` here: its labels go as items
        from now on; its open blocks, to send now."""
        self.mixed.add(model_id)
        return self._close(model_id, list(self.open.get(model_id, ())))

    def closing(self, model_id: str, ts: int) -> list[LabelBlock]:
        """The blocks of ``model_id`` whose slice ends before event time ``ts`` (the
        partition's event time of the model is about to pass them), to send now."""
        lowest = self.lowest.get(model_id)
        if lowest is None or ts // lowest[1] <= lowest[0]:
            return []
        passed = ts // lowest[1]
        versions = self.open[model_id]
        return self._close(model_id, [v for v, found in versions.items() if found.number < passed])

    def flush(self) -> dict[str, list[LabelBlock]]:
        """Every open block, per model (the partition has read all there is for now)."""
        return {m: self._close(m, list(self.open[m])) for m in list(self.open)}

    def _close(self, model_id: str, versions: Sequence[str]) -> list[LabelBlock]:
        found = self.open.get(model_id, {})
        out = [found.pop(version).block(model_id, version) for version in versions]
        if found:
            every = self.lowest[model_id][1]
            self.lowest[model_id] = (min(o.number for o in found.values()), every)
        else:
            self.open.pop(model_id, None)
            self.lowest.pop(model_id, None)
        return out

    def forget(self, model_id: str) -> None:
        self.pending.pop(model_id, None)
        self.open.pop(model_id, None)
        self.lowest.pop(model_id, None)
        self.mixed.discard(model_id)

    def state(self) -> dict[str, Any]:
        return {
            "mixed": sorted(self.mixed),
            "open": [
                [model_id, version, block_to_wire(found.block(model_id, version)), found.size]
                for model_id, versions in self.open.items()
                for version, found in versions.items()
            ]
            + [
                [model_id, block.model_version, block_to_wire(block), 0]
                for model_id, blocks in self.pending.items()
                for block in blocks
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.mixed = set(state["mixed"])
        self.open, self.lowest, self.pending = {}, {}, {}
        for model_id, version, row, size in state["open"]:
            block = block_from_wire(model_id, row)
            every = self.settings_for(model_id).slice_ms
            if every <= 0:  # slices turned off since: what was gathered goes as it is
                self.pending.setdefault(model_id, []).append(block)
                continue
            self.open.setdefault(model_id, {})[version] = _Open(
                block.number, block.event_ids, block.outcome_ts, block.labels, block.predictions,
                block.prediction_ts, size,
            )  # fmt: skip
            lowest = self.lowest.get(model_id)
            if lowest is None or block.number < lowest[0]:
                self.lowest[model_id] = (block.number, every)


def block_to_wire(block: LabelBlock) -> list[Any]:
    """The fields of a block after its model id (which travels once per message)."""
    return [
        block.model_version, block.number, block.event_ids, block.outcome_ts, block.labels,
        block.predictions, block.prediction_ts,
    ]  # fmt: skip


def block_from_wire(model_id: str, row: Sequence[Any]) -> LabelBlock:
    """Inverse of `block_to_wire`."""
    version, number, event_ids, ts, labels, predictions, prediction_ts = row
    if not len(event_ids) == len(ts) == len(labels) == len(predictions) == len(prediction_ts):
        raise ValueError("a label block's columns differ in length")
    if not event_ids:
        raise ValueError("a label block holds no label")
    return LabelBlock(model_id, version, number, event_ids, ts, labels, predictions, prediction_ts)


__all__ = ["BLOCK_BYTES", "LabelBlock", "LabelBlocks", "block_from_wire", "block_to_wire"]
