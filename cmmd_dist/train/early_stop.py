"""Early stopping: the best-so-far figure of a lower-is-better validation metric and the patience rule.

Every training loop that selects an epoch on validation (``single.fit``, ``distributed.fit``, the sweep
trial's ``tune.trial.cv_loop``) keeps one :class:`EarlyStop`:

- ``update(value, epoch, state_fn)``: ``value`` improves on the best so far only when strictly lower
  (``value < best``; NaN never improves); then the best value and epoch are kept, and ``state_fn()``
  (what the loop keeps of the best epoch: a copy of the weights, a figure of it) is called and kept.
- ``should_stop(epoch)``: ``epoch - best_epoch >= patience``, asked after ``epoch`` has been offered.

Epochs count from 1 (the supervised epochs) and the best epoch starts at 0, so ``waited(epoch)``
(``epoch - best_epoch``) is the number of epochs since the last improvement, the same count a loop
keeping "epochs waited, reset on improvement" holds; with ``patience >= 1`` (``TrainConfig.patience``)
an improving epoch never stops, so the counter style and the epoch-distance style stop at the same epoch.
The distance form needs nothing but (best value, best epoch, best state) to resume: what the checkpoints
of ``train.checkpoint`` and the trial's reported rows hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EarlyStop"]


@dataclass
class EarlyStop:
    """Best-so-far (lower is better, strict ``<``) plus patience; see the module docstring."""

    patience: int
    value: float = float("inf")  # best metric so far
    epoch: int = 0  # its epoch (0: nothing offered has improved yet)
    state: Any = None  # ``state_fn()`` of that epoch

    def update(self, value: float, epoch: int, state_fn: Callable[[], Any] | None = None) -> bool:
        """Offer epoch ``epoch``'s ``value``; True (and the best kept) when it is strictly lower than the best."""
        if not value < self.value:
            return False
        self.value, self.epoch = value, epoch
        self.state = state_fn() if state_fn is not None else None
        return True

    def waited(self, epoch: int) -> int:
        """Epochs since the best one, at ``epoch``."""
        return epoch - self.epoch

    def should_stop(self, epoch: int) -> bool:
        """Patience ran out at ``epoch``: ``patience`` epochs or more without improvement."""
        return self.waited(epoch) >= self.patience
