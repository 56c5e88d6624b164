"""A sweep's MLflow runs written from the sweep DRIVER's trial events: :class:`SweepRecorder` (plain data; a
Tune Callback is a thin shim over it) opens the sweep's parent run, a child run per trial (a restarted or
resumed trial gets its run back, an epoch already held is not logged again), and at the end the retrain run
and the registered champion.

A tracking outage never kills the sweep: writes queue in order and are retried; what the store never took is
counted in ``SweepRecorder.lost``. A recorder pickles with its tracker's URI and its runs, not its queue.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cmmd_dist.tracking.store import Tracker

__all__ = ["SweepRecorder"]

_log = logging.getLogger(__name__)

# Tune's own bookkeeping in a trial result: not figures worth a metric history
_RESULT_SKIP = frozenset({"config", "timestamp", "pid", "done", "training_iteration", "iterations_since_restore",
                          "time_this_iter_s", "time_total_s", "time_since_restore", "should_checkpoint"})


class SweepRecorder:
    """A sweep's runs, driven by the sweep DRIVER's trial events (plain data; a Tune Callback is a thin shim).

    Only the driver writes: a trial spanning many workers logs once, and the embedded store works on
    a cluster because only the head node touches it. Restarted or resumed trials get their run back.

    A tracking outage never kills the sweep: each event becomes a write queued in order; a write that
    fails (after the MLflow client's own retries) stays queued with everything after it, and the queue
    is retried at the next event once ``retry_s`` has passed, and at the end (:meth:`drain`). What the
    server never took is counted in :attr:`lost`."""

    def __init__(self, dataset: str, scenario: str | None, search_space: dict, tags: dict | None = None,
                 sweep_id: str | None = None, uri: str | None = None, retry_s: float = 10.0):
        self.tracker = Tracker(uri)
        self.dataset, self.scenario = dataset, scenario
        self.parent = self.tracker.start_sweep(dataset, scenario, search_space, tags, sweep_id)
        self.runs: dict[str, str] = {}
        self.steps: dict[str, int] = {}  # run id -> the last epoch it holds
        self.retry_s = retry_s
        self.lost = 0
        self._pending: deque[Callable[[], None]] = deque()
        self._retry_at = 0.0

    # picklable by URI and parent run (Tune pickles its callbacks with the experiment state)
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pending": deque(), "_retry_at": 0.0}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"steps": {}, **state})  # a recorder pickled before ``steps`` existed

    def trial_started(self, trial_id: str, config: dict) -> None:
        self._queue(lambda: self._start(trial_id, config))

    def trial_result(self, trial_id: str, result: dict, config: dict | None = None) -> None:
        """One report: step = ``result["epoch"]`` (else Tune's ``training_iteration``). An epoch the trial's run
        holds already is not logged again (a trial restarted from a checkpoint older than its last report)."""
        epoch = result.get("epoch", result.get("training_iteration", 0))
        metrics = {k: v for k, v in result.items() if k not in _RESULT_SKIP}
        config = config or result.get("config") or {}

        def write() -> None:
            run = self.runs.get(trial_id) or self._start(trial_id, config)
            if epoch <= self.steps.get(run, 0):
                return
            self.tracker.log_epoch(run, epoch, metrics)
            self.steps[run] = int(epoch)

        self._queue(write)

    def trial_finished(self, trial_id: str, status: str = "FINISHED", pruned: bool = False) -> None:
        def write() -> None:
            if trial_id in self.runs:
                self.tracker.end_run(self.runs[trial_id], status, pruned)
                self.runs.pop(trial_id)

        self._queue(write)

    def end_lost_trials(self, status: str = "KILLED") -> None:
        """End the sweep's trial runs left RUNNING that this recorder does not hold open: trials of a driver that
        was killed before Tune saved them (a resumed sweep runs their configurations again as new trials)."""
        def write() -> None:
            for run in self.tracker.open_runs(self.parent, kind="trial"):
                if run.info.run_id not in self.runs.values():
                    self.tracker.end_run(run.info.run_id, status)

        self._queue(write)

    def _start(self, trial_id: str, config: dict) -> str:
        self.runs[trial_id] = run = self.tracker.trial_run(self.parent, trial_id, config)
        self.steps[run] = self.tracker.last_step(run)
        return run

    # -- the write queue ---------------------------------------------------------------------------
    def _queue(self, write: Callable[[], None]) -> None:
        self._pending.append(write)
        if time.monotonic() >= self._retry_at:
            self.flush()

    def flush(self) -> int:
        """Write what is queued, in order, until a write fails; returns how many writes are still queued."""
        while self._pending:
            try:
                self._pending[0]()
            except Exception as err:
                if not isinstance(err, _tracking_down()):
                    raise
                if not self._retry_at:
                    _log.warning("MLflow %s is not taking writes (%s); the sweep goes on, %d writes queued",
                                 self.tracker.uri, type(err).__name__, len(self._pending))
                self._retry_at = time.monotonic() + self.retry_s
                return len(self._pending)
            self._pending.popleft()
        if self._retry_at:
            _log.warning("MLflow %s is back: every queued write is in", self.tracker.uri)
        self._retry_at = 0.0
        return 0

    def drain(self, timeout_s: float = 120.0) -> int:
        """Retry the queue until it is written or ``timeout_s`` has passed; what is left counts as lost."""
        deadline = time.monotonic() + timeout_s
        while self.flush() and time.monotonic() < deadline:
            time.sleep(min(self.retry_s, max(0.0, deadline - time.monotonic())))
        self.lost += len(self._pending)
        self._pending.clear()
        return self.lost

    def finish(self, core, spec, test_metrics: dict, best_params: dict, example_rows: dict,
               artifacts: dict | None = None, sweep_figures: dict | None = None) -> str:
        """The retrain run (test figures, artifacts, registered model); the sweep's figures on its parent run and
        on the model version (tags and description); closes the sweep. Returns the model URI."""
        self.drain()
        final = self.tracker.retrain_run(self.parent, best_params)
        self.tracker.log_final(final, test_metrics, artifacts)
        figures = dict(sweep_figures or {})
        self.tracker.log_epoch(self.parent, 0, figures)
        sweep_id = self.tracker.client.get_run(self.parent).data.tags.get("sweep_id", self.parent)
        described = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        uri = self.tracker.register_best(
            final, core, spec, test_metrics, self.dataset, self.scenario, example_rows,
            tags={"sweep_id": sweep_id, "sweep_run_id": self.parent, **{f"sweep.{k}": v for k, v in figures.items()}},
            description=f"Champion of sweep {Path(sweep_id).name} ({sweep_id}): {described}" if figures else None)
        self.tracker.end_run(final)
        self.tracker.end_run(self.parent)
        return uri

    def abort(self, status: str, drain_s: float = 30.0) -> None:
        """End the sweep as FAILED or KILLED: its open trial runs and its parent run (best effort: the
        server may be the reason)."""
        self.drain(drain_s)
        for run in list(self.runs.values()) + [self.parent]:
            try:
                self.tracker.end_run(run, status)
            except Exception as err:
                if not isinstance(err, _tracking_down()):
                    raise
                _log.warning("could not mark run %s %s: %s", run, status, err)
        self.runs.clear()


def _tracking_down() -> tuple[type[BaseException], ...]:
    """What a write raises when the tracking server is away (after the MLflow client's own retries);
    imported when first needed, so that importing this module does not import mlflow."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)
