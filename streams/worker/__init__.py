"""``driftline worker``: the two-stage stream worker, its output delivery, and the
re-key stage of foreign formats.

`worker` runs the stages and checkpoints them; `shards` holds each stage's state per
partition; `alignment` orders a partition's two input topics; `publishing` delivers
outputs; `rekey` is stage 0 of foreign formats; `settings` is ``[worker]``.
"""

from driftline.streams.worker.settings import WorkerSettings
from driftline.streams.worker.worker import Worker, run_worker

__all__ = ["Worker", "WorkerSettings", "run_worker"]
