"""Stage 1's feedback tags: what it remembers per model gives the tags it would build."""

from __future__ import annotations

import random

import pytest

from driftline.detectors.feedback.monitor import OVERFLOW_PAIRS, TagRegistry, feedback_tag
from driftline.detectors.intake import stage
from driftline.detectors.intake.stage import Intake, no_action_words
from driftline.detectors.settings import DetectorSettings
from driftline.schemas.records import Prediction

ACTIONS: list[object] = [
    "patrol", "none", "NONE", "None ", "skip", "", "0", "False",
    0, 1, 2, True, False, 0.0, 1.0, -3.5, (), ("a",), ("a", "b"), ["a"], [], None,
]  # fmt: skip


def predictions(n: int, seed: int, actions: list[object]) -> list[Prediction]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        segment = rng.choice([None, {"district": f"d{rng.randrange(4)}"}, {"r": "x", "s": "y"}])
        out.append(
            Prediction(
                f"e{i}", f"r{i}", rng.choice(["m1", "m2"]), "v1", 1_700_000_000_000 + i, {},
                0.5, None, "champion", segment, rng.choice(actions), rng.random() < 0.2,
            )
        )  # fmt: skip
    return out


def feedback_fields(e: Prediction) -> bool:
    """Whether a prediction carries a feedback field (what stage 1 tags)."""
    return e.segment is not None or e.action is not None or e.exploration


def built(events: list[Prediction], settings: DetectorSettings) -> list[object]:
    """The tags as stage 1 would build them from scratch, event by event."""
    words = no_action_words(settings)
    registries: dict[str, TagRegistry] = {}
    out: list[object] = []
    for e in events:
        if not feedback_fields(e):
            out.append(None)
            continue
        registry = registries.setdefault(
            e.model_id, TagRegistry(max_tags=settings.feedback_max_tags)
        )
        found = registry.id(feedback_tag(e.segment, e.action, e.exploration, words))
        tag = registry.tags[found]
        out.append((found, None if tag[2] == OVERFLOW_PAIRS else tag))
    return out


@pytest.mark.parametrize("remembered", [4_096, 3])
def test_remembered_tags_equal_the_tags_built_from_scratch(monkeypatch, remembered) -> None:
    """Every kind of action (strings in any case, numbers equal to booleans, ranked lists,
    empty ones, undecoded lists), segments or none, exploration or not, two models; and a
    memory so small that it starts over all the time. A registry that pools new tags after
    five gives the same ids too."""
    monkeypatch.setattr(stage, "SEEN_TAG_KEYS", remembered)
    events = predictions(4_000, seed=3, actions=ACTIONS)
    for settings in (DetectorSettings(), DetectorSettings(feedback_max_tags=5)):
        intake = Intake(settings)
        got = [intake._tag(e) if feedback_fields(e) else None for e in events]
        assert got == built(events, settings)
        assert any(g is not None and g[1] is None for g in got) == (settings.feedback_max_tags == 5)
        assert all(len(seen) <= remembered for seen in intake._seen.values())


def test_actions_of_many_values_keep_the_memory_bounded() -> None:
    """Item ids as actions: the memory starts over instead of growing."""
    actions: list[object] = [f"item{i}" for i in range(20_000)]
    events = predictions(20_000, seed=4, actions=actions)
    intake = Intake()
    got = [intake._tag(e) for e in events]
    assert got == built(events, intake.settings)
    assert max(len(seen) for seen in intake._seen.values()) <= stage.SEEN_TAG_KEYS


def test_a_model_without_feedback_detection_has_no_tags() -> None:
    settings = DetectorSettings()
    intake = Intake(settings, {"m2": DetectorSettings(feedback_enabled=False)})
    events = predictions(500, seed=5, actions=ACTIONS)
    for e in events:
        if e.model_id == "m2":
            assert intake._tag(e) is None
    assert "m2" not in intake.tags
