"""A worker's shards without a broker: what a checkpoint holds, and that a shard restored
from it continues as the original."""

from __future__ import annotations

import orjson

from driftline.detectors.engine import ModelEngine
from driftline.detectors.intake.stage import Intake
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Outcome, Prediction
from driftline.streams.checkpointing.store import Checkpoint
from driftline.streams.worker.shards import CHECKPOINT_FORMAT, ModelShard, Shard

SETTINGS = DetectorSettings()


def events(start: int, n: int) -> list:
    out: list = []
    for i in range(start, start + n):
        out.append(Prediction(f"p{i}", f"r{i}", "m", "v1", 1_000 * i, {"x": float(i % 7)}, 0.3))
        if i % 2:
            out.append(Outcome(f"o{i}", f"r{i}", "m", 1_000 * i + 500, i % 3 == 0))
    return out


def through_json(name: str, shard: Shard | ModelShard, offsets: dict[str, int]) -> Checkpoint:
    state = orjson.loads(orjson.dumps(shard.state()))
    return Checkpoint(name, offsets, state, shard.generation + 1)


def test_an_input_shard_restored_from_its_checkpoint_joins_and_dedupes_as_the_original() -> None:
    original = Shard(0, Intake(SETTINGS))
    original.intake.process(events(0, 40))
    original.consumed, original.dead_letters["bad_json"] = 61, 1
    checkpoint = through_json("0", original, {"predictions": 40, "outcomes": 21})
    assert checkpoint.state["format"] == CHECKPOINT_FORMAT
    restored = Shard(0, Intake(SETTINGS))
    restored.restore(checkpoint)
    assert (restored.offsets, restored.consumed, restored.dead_letters["bad_json"]) == (
        {"predictions": 40, "outcomes": 21},
        61,
        1,
    )
    assert restored.generation == original.generation + 1
    again = events(30, 20)  # ten already seen: dropped as duplicates by both
    assert restored.intake.process(again) == original.intake.process(again)
    assert restored.intake.counts == original.intake.counts
    assert original.intake.counts["duplicates"] == 15


def test_a_model_shard_keeps_its_merges_and_published_ids() -> None:
    original = ModelShard(2, "t.summaries", ModelEngine(SETTINGS), published=10)
    merge = original.merge_for("m", partitions=4)
    assert original.merge_for("m", partitions=4) is merge
    original.published.add("d-1")
    original.consumed = 12
    restored = ModelShard(2, "t.summaries", ModelEngine(SETTINGS), published=10)
    restored.restore(through_json("m2", original, {"t.summaries": 12}))
    assert set(restored.merges) == {"m"}
    assert restored.merges["m"].state(lambda item: item) == merge.state(lambda item: item)
    assert restored.published.add("d-1") is False  # remembered: not published again
    assert restored.published.add("d-2") is True
    assert (restored.consumed, restored.offsets) == (12, {"t.summaries": 12})
