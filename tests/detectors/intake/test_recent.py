"""The bounded memory of recent ids (`detectors.intake.recent`)."""

from __future__ import annotations

from driftline.detectors.intake.recent import RecentIds


def test_a_repeated_id_is_a_duplicate_within_the_horizon_and_forgotten_well_after() -> None:
    """At least the last ``horizon`` ids are remembered whatever the rotation's phase, and
    at most twice that: an id is forgotten once two generations have passed over it."""
    horizon = 100
    for phase in range(horizon):  # where the repeated id falls in its generation
        recent = RecentIds(horizon)
        for i in range(phase):
            assert recent.add(f"pre{i}")
        assert recent.add("x")
        for i in range(horizon - 1):  # the horizon's worth of other ids after it
            assert recent.add(f"post{i}")
        assert not recent.add("x"), phase
    recent = RecentIds(horizon)
    recent.add("x")
    for i in range(2 * horizon):
        recent.add(f"later{i}")
    assert recent.add("x")  # two generations later: forgotten, taken as new
    assert len(recent.current) + len(recent.previous) <= 2 * horizon


def test_the_memory_survives_its_state() -> None:
    recent = RecentIds(10)
    for i in range(15):
        recent.add(str(i))
    restored = RecentIds(10)
    restored.restore(recent.state())
    assert [restored.add(str(i)) for i in (3, 14, 15)] == [False, False, True]
    assert [recent.add(str(i)) for i in (3, 14, 15)] == [False, False, True]
