"""Slices of a version's predictions summed in the input stage, so that the model stage's
drift tests cost per slice of event time, not per event.

A version's predictions reach the model stage either as items or, where the input stage
has the version's reference profile and ``slice_ms`` is set, as one `SliceSummary` per
slice of event time and input partition: what the data and prediction channels' tests
read of the slice (sums of normal scores and their squares, category and invalid counts,
histogram bins; `detectors.drift.channel.OpenSlice`), the events' count and times, and
their share of the version's traffic. The model stage tests per slice either way
(`detectors.drift.channel.Channel.update_slices`), adding parts of a slice as they come,
so where a slice was summed does not change its test (but for the last bits of a float).

What is summed: predictions without feedback fields (``segment``, ``action``,
``exploration``: the feedback-loop tests read them one by one) of a version whose
profile this stage has, unless the model showed canary traffic on this partition in the
last ``canary_items_ms`` of its event time (a live canary is compared with its stable
version prediction by prediction, `detectors.intake.canary`).
Everything else travels as items, as before. A summary is sent as soon as this
partition's event time of the model passes the slice's end, placed in the partition's
order where its events were, so the model stage's merge releases it before anything of a
later slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from driftline.detectors.drift.channel import OpenSlice, slice_from_state, slice_state
from driftline.detectors.drift.reference import ReferenceProfile, fingerprint
from driftline.detectors.intake.canary import CanaryTraffic
from driftline.detectors.monitor import ChannelSet
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Prediction

LN2 = math.log(2.0)


def traffic_weight(ts: np.ndarray, origin: int, half_life_ms: int) -> float:
    """``log(sum(exp((ts - origin) * ln 2 / half_life_ms)))``: the weight of events at
    times ``ts`` in a traffic count that decays with that half-life, as a log relative to
    ``origin`` (computed from the largest term, so it does not overflow).

    >>> round(traffic_weight(np.array([0, 1_000]), 0, 1_000), 6) == round(math.log(3.0), 6)
    True
    """
    exponents = (ts - origin) * (LN2 / half_life_ms)
    top = float(exponents.max())
    return top + math.log(float(np.exp(exponents - top).sum()))


class SliceSummary(NamedTuple):
    """One version's predictions of one slice of event time, summed by one input
    partition (a part of the slice, when several partitions carry the version)."""

    model_id: str
    model_version: str
    role: str
    """Role of the last prediction summed (`detectors.versions.registry.ModelVersions`)."""
    number: int
    """The slice: event time // ``slice_ms``."""
    events: int
    first_ts: int
    last_ts: int
    traffic: float
    """``log(sum(exp((ts - slice start) * ln 2 / version_half_life_ms)))`` over its
    events: their weight in the version's decaying traffic count."""
    profile: str
    """`detectors.drift.reference.fingerprint` of the profile the parts were scored
    against."""
    parts: tuple[OpenSlice | None, ...]
    """Per channel of the version (`detectors.monitor.ChannelSet` order), what its tests
    read of the slice; None where the profile has no such channel."""

    @property
    def event_id(self) -> str:
        """What names the summary where an item names its event."""
        return f"slice/{self.model_version}/{self.number}/{self.first_ts}"

    @property
    def ts(self) -> int:
        return self.last_ts


@dataclass(slots=True)
class _Sums:
    """What a partition has summed of one slice of a version."""

    number: int
    parts: list[OpenSlice | None]
    events: int = 0
    first_ts: int = 2**62
    last_ts: int = -(2**62)
    traffic: float = -math.inf
    role: str = "champion"

    def summary(self, model_id: str, version: str, profile: str) -> SliceSummary:
        return SliceSummary(
            model_id, version, self.role, self.number, self.events, self.first_ts,
            self.last_ts, self.traffic, profile, tuple(self.parts),
        )  # fmt: skip


@dataclass(slots=True)
class Piece:
    """Predictions of one slice of a version within a batch: rows ``start:end`` of what
    waits, after what earlier batches summed of the slice (``carried``). A closed piece
    is a summary item placed in the partition's order before its sums are made (once per
    batch, `Slicer.finish`), then ``summary``."""

    number: int
    start: int
    carried: _Sums | None = None
    end: int | None = None
    """Set when the slice closed in this batch."""
    summary: SliceSummary | None = None


@dataclass(slots=True)
class _Version:
    """A version this partition sums: its channels and the slices of the batch."""

    channels: ChannelSet
    profile: str
    slice_ms: int
    half_life_ms: int
    open: _Sums | None = None
    """The slice open across batches (between batches, everything is summed)."""
    waiting: list[Prediction] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)

    @property
    def number(self) -> int:
        """The open slice (-1: none)."""
        if self.pieces:
            last = self.pieces[-1]
            return -1 if last.end is not None else last.number
        return -1 if self.open is None else self.open.number

    def add(self, p: Prediction, watermark: int) -> int | None:
        """Take ``p``; the slice it opened, if it opened one."""
        opened = None
        if self.number < 0:
            opened = watermark // self.slice_ms
            self.pieces.append(Piece(opened, len(self.waiting)))
        elif not self.pieces:  # the first of the batch in the slice open across batches
            assert self.open is not None
            self.pieces.append(Piece(self.open.number, 0, self.open))
            self.open = None
        self.waiting.append(p)
        return opened

    def close(self) -> Piece:
        """Close the open slice (its summary comes at `finish`)."""
        if not self.pieces or self.pieces[-1].end is not None:
            assert self.open is not None
            self.pieces.append(Piece(self.open.number, len(self.waiting), self.open))
            self.open = None
        piece = self.pieces[-1]
        piece.end = len(self.waiting)
        return piece

    def finish(self, model_id: str, version: str) -> None:
        """Sum the batch's predictions, one preparation for all of them, into its slices:
        the closed ones become summaries, the last stays open."""
        found, pieces = self.waiting, self.pieces
        self.waiting, self.pieces = [], []
        if not pieces:
            return
        ts = np.fromiter((p.ts for p in found), np.int64, len(found))
        prepared = [
            (position, channel, data, channel.summed_stats(data))
            for position, channel, data in self.channels.prepare(found)
        ]
        for piece in pieces:
            sums = piece.carried or _Sums(
                piece.number,
                [None if c is None else c.empty_slice(piece.number) for c in self.channels],
            )
            start, end = piece.start, len(found) if piece.end is None else piece.end
            if end > start:
                for position, channel, data, (t, ok, bad) in prepared:
                    part = sums.parts[position]
                    assert part is not None
                    channel.sum_into(part, data, ts, t, ok, bad, start, end)
                self._count(sums, found, ts, start, end)
            if piece.end is None:
                self.open = sums
            else:
                piece.summary = sums.summary(model_id, version, self.profile)

    def _count(
        self, sums: _Sums, found: list[Prediction], ts: np.ndarray, start: int, end: int
    ) -> None:
        part = ts[start:end]
        sums.events += end - start
        sums.first_ts = min(sums.first_ts, int(part.min()))
        sums.last_ts = max(sums.last_ts, int(part.max()))
        weight = traffic_weight(part, sums.number * self.slice_ms, self.half_life_ms)
        sums.traffic = float(np.logaddexp(sums.traffic, weight))
        sums.role = found[end - 1].role


def summary_to_wire(summary: SliceSummary) -> list[Any]:
    """The fields of a summary after its model id (which travels once per message)."""
    return [
        summary.model_version, summary.role, summary.number, summary.events,
        summary.first_ts, summary.last_ts, summary.traffic, summary.profile,
        [None if part is None else slice_state(part) for part in summary.parts],
    ]  # fmt: skip


def summary_from_wire(model_id: str, row: Sequence[Any]) -> SliceSummary:
    """Inverse of `summary_to_wire`."""
    version, role, number, events, first_ts, last_ts, traffic, profile, parts = row
    return SliceSummary(
        model_id, version, role, number, events, first_ts, last_ts, traffic, profile,
        tuple(None if part is None else slice_from_state(part) for part in parts),
    )  # fmt: skip


class Slicer:
    """The slices one input partition sums (`Intake`).

    Within a batch, predictions wait and slices that close are placed in the item order
    as `Piece` objects; `finish` sums every version's predictions with one preparation
    and turns the pieces into summaries (preparing a few dozen predictions at a time,
    at every slice's end, cost more than the tests it saves).

    Parameters
    ----------
    settings_for
        A model's detector settings (``slice_ms``, ``version_half_life_ms``).
    profiles
        Reference profiles by ``model_id@version`` or ``model_id`` (the worker's, which
        grow as profiles are published).
    """

    def __init__(
        self,
        settings_for: Callable[[str], DetectorSettings],
        profiles: Mapping[str, ReferenceProfile],
    ) -> None:
        self.settings_for = settings_for
        self.profiles = profiles
        self.versions: dict[str, dict[str, _Version | None]] = {}
        """Per model and version: what this partition sums of it (None: items)."""
        self.lowest: dict[str, tuple[int, int]] = {}
        """Per model with a slice open here: the earliest open slice, and ``slice_ms``."""
        self.canary = CanaryTraffic(settings_for)
        """Models that showed canary traffic here lately: their predictions travel as
        items."""
        self.chosen: dict[str, dict[str, str | None]] = {}
        """Per model and version, the fingerprint of the profile chosen (None: none), so a
        restarted stage chooses as it did (state)."""
        self.busy: set[str] = set()
        """Models with predictions waiting in this batch."""
        self.learned: dict[str, ReferenceProfile] = {}
        """Warm-up references the model stage built, by ``model_id@version``
        (`learn`)."""
        self.pending: dict[str, list[SliceSummary]] = {}
        """Per model, slices restored without their profile, to send as they are
        (`restore`, `Intake.process`)."""

    def learn(self, profile: ReferenceProfile) -> None:
        """The reference the model stage tests a version against (its warm-up reference,
        built from the merged traffic of every partition, or the profile it started with
        when slices came summed against another): the version's predictions are summed
        here against it from now on (until now they travelled as items, which the model
        stage sums alike, or were summed against another profile: what was summed of the
        open slice is sent as it is). Called between batches."""
        if profile.model_id is None or profile.model_version is None:
            return
        model_id, version = profile.model_id, profile.model_version
        self.learned[f"{model_id}@{version}"] = profile
        versions = self.versions.get(model_id)
        if versions is None or version not in versions:
            return
        found = versions[version]
        if found is not None:
            if found.profile == fingerprint(profile):
                return
            if found.open is not None:
                summary = found.open.summary(model_id, version, found.profile)
                self.pending.setdefault(model_id, []).append(summary)
        del versions[version]
        self.chosen.get(model_id, {}).pop(version, None)
        if model_id in self.lowest:
            open_ = [v.number for v in versions.values() if v is not None and v.number >= 0]
            self._set_lowest(model_id, open_, self.lowest[model_id][1])

    def take(self, p: Prediction, watermark: int) -> bool:
        """Take ``p`` into its version's open slice if it is summed here; False when it
        travels as an item. ``watermark``: this partition's event time of the model (a
        prediction opens the slice of that time, so a late one joins the open slice)."""
        model_id = p.model_id
        if p.role == "canary":
            self.canary.saw(model_id, watermark)
            return False
        if self.canary.active(model_id, watermark):
            return False
        versions = self.versions.get(model_id)
        if versions is not None and p.model_version in versions:
            found = versions[p.model_version]
        else:
            found = self._version(model_id, p.model_version)
        if found is None:
            return False
        opened = found.add(p, watermark)
        self.busy.add(model_id)
        if opened is not None:
            lowest = self.lowest.get(model_id)
            if lowest is None or opened < lowest[0]:
                self.lowest[model_id] = (opened, found.slice_ms)
        return True

    def closing(self, model_id: str, ts: int) -> list[Piece]:
        """The slices of ``model_id`` that end before event time ``ts`` (the partition's
        event time of the model is about to pass them), closed."""
        lowest = self.lowest.get(model_id)
        if lowest is None or ts // lowest[1] <= lowest[0]:
            return []
        passed = ts // lowest[1]
        out = []
        remaining = []
        for found in self.versions[model_id].values():
            if found is None or (number := found.number) < 0:
                continue
            if number < passed:
                out.append(found.close())
            else:
                remaining.append(number)
        self._set_lowest(model_id, remaining, lowest[1])
        return out

    def _set_lowest(self, model_id: str, numbers: list[int], slice_ms: int) -> None:
        """The earliest of a model's open slices (``numbers``), or none open."""
        if numbers:
            self.lowest[model_id] = (min(numbers), slice_ms)
        else:
            self.lowest.pop(model_id, None)

    def finish(self) -> None:
        """Sum what waits into the pieces and open slices (the end of a batch)."""
        for model_id in self.busy:
            for version, found in self.versions[model_id].items():
                if found is not None:
                    found.finish(model_id, version)
        self.busy.clear()

    def flush(self) -> dict[str, list[SliceSummary]]:
        """Every open slice, summed and closed (the partition has read all there is for
        now; between batches)."""
        out: dict[str, list[SliceSummary]] = {}
        for model_id in list(self.lowest):
            pieces = self.closing(model_id, 2**62)
            self.busy.add(model_id)
            self.finish()
            out[model_id] = [piece.summary for piece in pieces if piece.summary is not None]
        return out

    def forget(self, model_id: str) -> None:
        self.pending.pop(model_id, None)
        for key in [k for k in self.learned if k.startswith(f"{model_id}@")]:
            del self.learned[key]
        self.versions.pop(model_id, None)
        self.lowest.pop(model_id, None)
        self.canary.forget(model_id)
        self.chosen.pop(model_id, None)
        self.busy.discard(model_id)

    def _version(self, model_id: str, version: str) -> _Version | None:
        settings = self.settings_for(model_id)
        chosen = self.chosen.setdefault(model_id, {})
        key = f"{model_id}@{version}"
        profile = self.learned.get(key) or self.profiles.get(key) or self.profiles.get(model_id)
        if version in chosen:  # chosen before a restart: the same, or none
            digest = chosen[version]
            if profile is None or fingerprint(profile) != digest:
                profile = None
        found = None
        if settings.slice_ms > 0 and profile is not None:
            channels = ChannelSet.of(profile, settings)
            if channels.present and all(c.summable for c in channels.present):
                found = _Version(
                    channels, fingerprint(profile), settings.slice_ms, settings.version_half_life_ms
                )
        chosen[version] = None if found is None else found.profile
        self.versions.setdefault(model_id, {})[version] = found
        return found

    def state(self) -> dict[str, Any]:
        """Between batches (everything waiting is summed)."""
        return {
            "canary": self.canary.state(),
            "chosen": self.chosen,
            "open": [
                [model_id, version, _open_state(found.open)]
                for model_id in self.lowest
                for version, found in self.versions[model_id].items()
                if found is not None and found.open is not None
            ]
            + [
                [model_id, s.model_version, _open_state(_Sums(*_sums_fields(s)))]
                for model_id, found in self.pending.items()
                for s in found
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.canary.restore(state["canary"])
        self.chosen = {m: dict(v) for m, v in state["chosen"].items()}
        self.versions, self.lowest, self.busy = {}, {}, set()
        self.pending = {}
        for model_id, version, found in state["open"]:
            digest = self.chosen.get(model_id, {}).get(version)
            made = self._version(model_id, version)
            if made is None:
                # The profile has not reached this stage yet (a warm-up reference comes
                # again from the model stage): what was summed goes on as it is, tested
                # against the profile it was summed with; new predictions go as items
                # until the profile is back.
                parts = [None if p is None else slice_from_state(p) for p in found["parts"]]
                sums = _sums_from_state(found, parts)
                summary = sums.summary(model_id, version, digest or "")
                self.pending.setdefault(model_id, []).append(summary)
                continue
            made.open = _sums_from_state(
                found,
                [
                    None if c is None or part is None else c.slice_from_state(part)
                    for c, part in zip(made.channels, found["parts"], strict=True)
                ],
            )
            lowest = self.lowest.get(model_id)
            if lowest is None or made.open.number < lowest[0]:
                self.lowest[model_id] = (made.open.number, made.slice_ms)


def _sums_from_state(found: dict[str, Any], parts: list[Any]) -> _Sums:
    """Inverse of `_open_state`, with the parts read back by the caller."""
    return _Sums(
        found["number"], parts, found["events"], found["first"], found["last"],
        found["traffic"], found["role"],
    )  # fmt: skip


def _sums_fields(s: SliceSummary) -> tuple[Any, ...]:
    """A summary's sums as `_Sums` holds them."""
    return s.number, list(s.parts), s.events, s.first_ts, s.last_ts, s.traffic, s.role


def _open_state(found: _Sums) -> dict[str, Any]:
    return {
        "number": found.number,
        "events": found.events,
        "first": found.first_ts,
        "last": found.last_ts,
        "traffic": found.traffic,
        "role": found.role,
        "parts": [None if part is None else slice_state(part) for part in found.parts],
    }
