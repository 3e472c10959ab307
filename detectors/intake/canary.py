"""How long a model's predictions travel as items on an input partition after it showed
a canary there.

A live canary is compared with its stable version prediction by prediction on what its
predictions show before labels (`detectors.versions.registry.ModelVersions.compare_canaries`),
so while a partition sees a model's canary, the model's predictions leave it as items,
not in slices (`detectors.intake.slices`; its labels go in blocks and sums, which the
labelled comparisons read). Once ``canary_items_ms`` of the partition's event time of
the model has passed its last canary prediction (the canary was promoted or rolled
back), the model's predictions are summed again. Before, they stayed items for as long
as the input stage remembered the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from driftline.detectors.settings import DetectorSettings

NOT_KNOWN = -(2**62)
"""Last canary time of a model restored from a checkpoint that kept none (before
`CanaryTraffic`): its traffic is summed again from the next event, unless another canary
prediction comes first."""


class CanaryTraffic:
    """The models one input partition has seen a canary of lately, with the partition's
    event time of the model at the last one."""

    def __init__(self, settings_for: Callable[[str], DetectorSettings]) -> None:
        self.settings_for = settings_for
        self.last: dict[str, int] = {}

    def saw(self, model_id: str, ts: int) -> None:
        """A canary prediction of the model at the partition's event time ``ts``."""
        self.last[model_id] = max(self.last.get(model_id, ts), ts)

    def active(self, model_id: str, ts: int) -> bool:
        """Whether the model's traffic travels as items at event time ``ts``; False from
        the first event ``canary_items_ms`` past its last canary (it is forgotten)."""
        last = self.last.get(model_id)
        if last is None:
            return False
        if ts - last <= self.settings_for(model_id).canary_items_ms:
            return True
        del self.last[model_id]
        return False

    def forget(self, model_id: str) -> None:
        self.last.pop(model_id, None)

    def state(self) -> list[list[Any]]:
        return [[model_id, ts] for model_id, ts in sorted(self.last.items())]

    def restore(self, rows: Sequence[Any]) -> None:
        """Rows of `state`; a bare model id is a checkpoint's from before (`NOT_KNOWN`)."""
        self.last = {}
        for row in rows:
            model_id, ts = (row, NOT_KNOWN) if isinstance(row, str) else row
            self.last[model_id] = int(ts)


__all__ = ["CanaryTraffic"]
