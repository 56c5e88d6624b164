"""From a SearchSpace to Ray Tune: parameter distributions, the searcher, the ASHA scheduler.

``PruneAwareOptunaSearch`` keeps TPE honest: Ray's OptunaSearch tells Optuna that a trial ASHA
stopped early is COMPLETE with its truncated figure; here such a trial is told PRUNED (its
intermediate values stay in the study), so TPE never mistakes a 2-epoch figure for a final one.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from cmmd_dist.config import SweepConfig
from cmmd_dist.search_space import SearchSpace

__all__ = ["tune_param_space", "PruneAwareOptunaSearch", "CooperativeASHA", "Verdicts", "make_searcher",
           "make_scheduler", "COMPLETED_KEY"]

COMPLETED_KEY = "cv_completed"


def tune_param_space(space: SearchSpace, searcher: str) -> dict[str, Any]:
    """Tune distributions for every searched param (grid values become a grid only for the grid searcher)."""
    out: dict[str, Any] = {}
    for key, d in space.params.items():
        if d.dist == "uniform":
            out[key] = tune.uniform(d.low, d.high)
        elif d.dist == "loguniform":
            out[key] = tune.loguniform(d.low, d.high)
        elif d.dist == "int":
            out[key] = tune.randint(int(d.low), int(d.high) + 1)  # inclusive bounds in our YAML
        elif d.dist == "choice" or (d.dist == "grid" and searcher == "optuna"):
            out[key] = tune.choice(list(d.values))
        else:
            out[key] = tune.grid_search(list(d.values))
    return out


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that did not finish by themselves, and only the
    supervised stage's figures (a pretraining epoch's CV metric is NaN: no classifier has been trained)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("stage", "supervised") != "supervised":
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or not result or result.get(COMPLETED_KEY, 0) or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        from optuna.trial import TrialState

        try:
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        finally:
            self._completed_trials.add(trial_id)


def make_searcher(settings: SweepConfig, space: SearchSpace, max_concurrent: int, num_trials: int = 20):
    """The search algorithm (None: Tune's default variant generator, which expands grids).

    Metric and mode are set once, in the TuneConfig."""
    if (settings.searcher or space.searcher) == "grid":
        return None
    from optuna.samplers import TPESampler

    # TPE's default 10 random start-up trials would be most of a small sweep: a third of it, 3 to 10
    startup = min(10, max(3, num_trials // 3))
    algo = PruneAwareOptunaSearch(sampler=TPESampler(seed=settings.seed, n_startup_trials=startup))
    return tune.search.ConcurrencyLimiter(algo, max_concurrent=max_concurrent)


def make_scheduler(settings: SweepConfig, space: SearchSpace, epochs: int, verdicts_name: str):
    """ASHA over supervised epochs, enforced cooperatively; or FIFO when pruning is off.

    The clock is ``supervised_epoch``: pretraining reports (Flickr's first stage) do not carry it, so ASHA
    neither counts nor judges them, and ``max_t`` is the supervised stage's length.

    The rungs come from the space (its preset) unless the sweep settings name them."""
    if not settings.asha:
        return FIFOScheduler()
    grace = settings.grace_period or space.asha.grace_period
    rf = settings.reduction_factor or space.asha.reduction_factor
    return CooperativeASHA(verdicts_name, time_attr="supervised_epoch", max_t=epochs,
                           grace_period=min(grace, epochs), reduction_factor=rf)


@ray.remote(num_cpus=0)
class Verdicts:
    """The scheduler's decision per trial and epoch, which the trial's rank 0 reads after each report."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, bool]] = {}

    def record(self, trial_id: str, epoch: int, stop: bool) -> None:
        self._last[trial_id] = (epoch, stop)

    def get(self, trial_id: str) -> tuple[int, bool] | None:
        return self._last.get(trial_id)


class CooperativeASHA(ASHAScheduler):
    """Ray's ASHA decisions, enforced by the trial itself instead of by killing the trial actor.

    A killed function trial leaves its Train V2 controller's worker placement group behind (ray issue
    54305; the controller's cleaner needs the state API, which is not always reachable), and the next
    trial then waits forever for CPUs. So a STOP becomes a verdict that the trial's rank 0 reads right
    after reporting that epoch; the trial then ends its loop and returns normally, releasing everything."""

    def __init__(self, verdicts_name: str, **kwargs):
        super().__init__(**kwargs)
        self.verdicts_name = verdicts_name

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        stop = decision == TrialScheduler.STOP and not result.get(COMPLETED_KEY, 0)
        if "epoch" in result:
            ray.get_actor(self.verdicts_name).record.remote(trial.trial_id, int(result["epoch"]), stop)
        return TrialScheduler.CONTINUE
