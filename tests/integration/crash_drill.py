"""Recovery drill for Ray Train runs: a worker that kills itself once, passed as the run's ``on_step`` hook.

    run_distributed(run, on_step=CrashOnce(str(tmp_path / "crashed"), epoch=2, rank=1, step=1))

Test code, not product code: the trainers only know a generic ``on_step(epoch, step, rank)`` hook.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CrashOnce"]


@dataclass(frozen=True)
class CrashOnce:
    """The worker of ``rank`` exits hard (``os._exit``) after ``step`` of ``epoch`` (epochs count on across the
    stages), once.

    The marker file is created before dying, so the restarted group trains on. Before dying it waits
    until Ray Train has registered the reports in flight: the controller collects them on its health
    poll, and a report not yet collected when a worker dies is lost with it."""

    marker: str
    epoch: int
    rank: int = 1
    step: int = 1

    def __post_init__(self) -> None:
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this module

    def __call__(self, epoch: int, step: int, rank: int) -> None:
        if (epoch, step, rank) != (self.epoch, self.step, self.rank) or os.path.exists(self.marker):
            return
        import ray.train

        ray.train.get_all_reported_checkpoints(timeout_s=60)
        Path(self.marker).write_text(f"rank {rank} died at epoch {epoch} step {step}\n")
        os._exit(1)
