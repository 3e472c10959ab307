"""Bounded memory of recent ids, for dropping duplicates."""

from __future__ import annotations


class RecentIds:
    """Remembers at least the last ``horizon`` ids, at most twice that, in O(1) per id.

    Two generations of sets: when the current one holds ``horizon`` ids it becomes the
    previous one and a new current one starts.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.current: set[str] = set()
        self.previous: set[str] = set()

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already remembered (a duplicate)."""
        if key in self.current or key in self.previous:
            return False
        self.current.add(key)
        if len(self.current) >= self.horizon:
            self.rotate()
        return True

    def rotate(self) -> None:
        """The current generation becomes the previous one; the oldest is forgotten."""
        self.previous = self.current
        self.current = set()

    def state(self) -> list[list[str]]:
        return [list(self.previous), list(self.current)]

    def restore(self, state: list[list[str]]) -> None:
        self.previous = set(state[0])
        self.current = set(state[1])
