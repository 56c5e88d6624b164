"""A compute budget for a sweep (``SweepConfig.max_trial_epochs``, ``--max-trial-epochs``): at most N trial-epochs.

A trial-epoch is one epoch of all folds of one trial. A trial's count is the highest ``epoch`` it reported
(pretraining and supervised epochs alike), the figure the summary's ``epochs_run`` shows and
``trial_epochs_total`` sums, so the budget and the summary agree; a repeated or out-of-order report counts once.

:class:`TrialEpochBudget` is a Ray Tune ``Stopper`` (``RunConfig(stop=...)``) and a Tune ``Callback``
(``RunConfig(callbacks=[...])``: pass the same object to both). Once the sum reaches the budget, ``stop_all``
ends the sweep the way ``time_budget_s`` does: no trial starts, and the running ones are stopped at their last
reported epoch (the one in progress is lost and not counted). Tune's ``stop_all`` path skips the end-of-trial
hooks, so the callback side gives them itself (:meth:`TrialEpochBudget.on_step_end`): each trial it stopped is
told to the searcher with its last report (``PruneAwareOptunaSearch`` makes it PRUNED at its last figure, as a
trial ASHA stopped) and to the ``callbacks`` passed in (the sweep's MLflow callback ends its run as pruned).

Multi-worker trials are refused (:func:`check_budget`): a stopped (killed) Train trial leaks its placement group
(ray#54305, ``cmmd_dist.tune.workarounds``) and the champion's retrain would wait for its CPUs.

Resume (``--resume``): Tune restores the sweep's ``RunConfig`` from its ``tuner.pkl``, so the budget is the one
the sweep started with (a ``--max-trial-epochs`` given with ``--resume`` is not read) and its count starts from
the epochs the restored trials had run: Tune hands no result to a stopper on restore, so the callback reads
every trial's last result at each step (:meth:`TrialEpochBudget.on_step_begin`). A restored unfinished trial
continues after its latest checkpoint (``tune.trial.TrialCheckpoints``), which may be older than its last report:
its count stays at its highest epoch, so epochs it runs again are only counted beyond that. A sweep resumed
with its budget spent stops at once and goes on to the retrain.
"""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.stopper import Stopper
from ray.tune.utils import flatten_dict

from cmmd_dist.errors import UserError

__all__ = ["TrialEpochBudget", "check_budget", "budget_in_force"]


class TrialEpochBudget(Stopper, Callback):
    """Stops the sweep once its trials have run ``max_trial_epochs`` trial-epochs (None: never).

    ``searcher``: the sweep's search algorithm (None for the grid), told of each trial the budget stopped;
    ``callbacks``: Tune callbacks told ``on_trial_complete`` for each of them."""

    def __init__(self, max_trial_epochs: int | None, searcher=None, callbacks: list | None = None):
        self.max_trial_epochs = max_trial_epochs
        self.searcher = searcher
        self.callbacks = list(callbacks or [])
        self.epochs: dict[str, int] = {}  # trial id -> highest epoch reported
        self.stopped: list[str] = []  # trials the budget ended (running or pending when it was spent)
        self._trials: list = []  # Tune's list of the sweep's trials (the controller's own, kept up to date)
        self._at_stop: set[str] | None = None  # trials not yet ended when the budget was spent
        self._started: set[str] = set()
        self._ended: set[str] = set()  # trials whose end-of-trial hooks Tune ran itself

    # counting
    def count(self, trial_id: str | None, result: dict | None) -> None:
        epoch = (result or {}).get("epoch")
        if trial_id is not None and epoch is not None:
            self.epochs[trial_id] = max(self.epochs.get(trial_id, 0), int(epoch))

    @property
    def used(self) -> int:
        """Trial-epochs counted so far."""
        return sum(self.epochs.values())

    @property
    def spent(self) -> bool:
        return self.max_trial_epochs is not None and self.used >= self.max_trial_epochs

    # Stopper
    def __call__(self, trial_id: str, result: dict) -> bool:
        self.count(trial_id, result)
        return False  # the trial that spends the budget ends with the others, in stop_all

    def stop_all(self) -> bool:
        if self.spent and self._at_stop is None:  # Tune ends these next, without their hooks
            self._at_stop = {t.trial_id for t in self._trials if t.status not in ("TERMINATED", "ERROR")}
        return self.spent

    # Callback
    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self._trials = trials
        for trial in trials:  # restored trials: their epochs before the resume
            self.count(trial.trial_id, trial.last_result)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self._at_stop is not None:
            self._close(iteration, trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._at_stop is not None:
            self._close(-1, trials)

    def _close(self, iteration: int, trials: list) -> None:
        """The end-of-trial hooks that Tune's ``stop_all`` path skips, for each trial it ended on the budget."""
        for trial in trials:
            tid = trial.trial_id
            if tid not in self._at_stop or trial.status != "TERMINATED" or tid in self._ended or tid in self.stopped:
                continue
            self.stopped.append(tid)
            result = flatten_dict(trial.last_result) if "epoch" in (trial.last_result or {}) else None  # None: no report
            if self.searcher is not None:
                self.searcher.on_trial_complete(tid, result=result)
            if tid in self._started:  # a trial that never started has no run to end
                for cb in self.callbacks:
                    cb.on_trial_complete(iteration=iteration, trials=trials, trial=trial)


def check_budget(max_trial_epochs: int | None, workers: int) -> None:
    """A budget needs 1-worker trials (see the module docstring); one line naming the options otherwise."""
    if max_trial_epochs is not None and workers > 1:
        raise UserError(f"--max-trial-epochs needs 1-worker trials (--workers-per-trial 1, got {workers}): "
                        "stopping a running multi-worker trial leaks its placement group (ray#54305)")


def budget_in_force(tuner) -> TrialEpochBudget | None:
    """The budget the sweep runs under: the one a resumed Tuner restored from ``tuner.pkl``. Tune has no public
    getter of a Tuner's RunConfig: ``workarounds.tuner_run_config``."""
    from cmmd_dist.tune.workarounds import tuner_run_config

    config = tuner_run_config(tuner)
    stop = config.stop if config is not None else None
    return stop if isinstance(stop, TrialEpochBudget) else None
