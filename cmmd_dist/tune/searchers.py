"""From a SearchSpace to Ray Tune: parameter distributions, the searcher, the ASHA scheduler.

One figure rules them all: the searcher (TPE), the scheduler (ASHA) and the final selection judge a trial by
the space's ``figure``, the best fold-mean CV metric so far (``best_cv_metric``), in the space's ``mode``.

``PruneAwareOptunaSearch`` keeps TPE honest: Ray's OptunaSearch tells Optuna that a trial ASHA stopped early
is COMPLETE with its truncated figure; here such a trial is told PRUNED (Optuna keeps its last reported
value), so TPE never mistakes a 2-epoch figure for a final one.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune.search_space import SearchSpace
from cmmd_dist.tune.workarounds import COMPLETED_KEY, CooperativeASHA, optuna_completed_trials

__all__ = ["tune_param_space", "PruneAwareOptunaSearch", "make_searcher", "make_scheduler", "COMPLETED_KEY"]


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
        elif d.dist == "choice" or (d.dist == "grid" and searcher != "grid"):
            out[key] = tune.choice(list(d.values))
        else:
            out[key] = tune.grid_search(list(d.values))
    return out


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that did not finish by themselves, and only the
    supervised stage's figures (a pretraining epoch has no CV metric: no classifier has been trained)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("stage", "supervised") != "supervised":
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or not result or result.get(COMPLETED_KEY, 0) or trial_id in optuna_completed_trials(self):
            return super().on_trial_complete(trial_id, result, error)
        from optuna.trial import TrialState

        from cmmd_dist.tune.workarounds import optuna_study_of

        try:  # Optuna takes a pruned trial's value from its last reported figure
            self._report_last(trial_id, result)
            study, trials = optuna_study_of(self)
            study.tell(trials[trial_id], state=TrialState.PRUNED)
        finally:
            optuna_completed_trials(self).add(trial_id)

    def _report_last(self, trial_id: str, result: dict) -> None:
        """Report the trial's last result if Optuna lacks it: Tune does not pass a searcher the report on which the
        scheduler stops a trial (ASHA's STOP of a 1-worker trial), so that figure would not be the trial's last."""
        step, value = result.get(TRAINING_ITERATION), result.get(self.metric)
        if result.get("stage", "supervised") != "supervised" or step is None or value is None:
            return
        from cmmd_dist.tune.workarounds import optuna_study_of

        study, trials = optuna_study_of(self)
        ot_trial = trials[trial_id]
        if step not in study.get_trials(deepcopy=False)[ot_trial.number].intermediate_values:
            ot_trial.report(value, step)


def make_searcher(settings: SweepConfig, space: SearchSpace, max_concurrent: int, num_trials: int = 20):
    """The search algorithm (None: Tune's default variant generator, which expands grids), told the space's figure."""
    kind = settings.searcher or space.searcher
    if kind == "grid":
        return None
    from optuna.samplers import RandomSampler, TPESampler

    # TPE's default 10 random start-up trials would be most of a small sweep: a third of it, 3 to 10
    startup = min(10, max(3, num_trials // 3))
    sampler = RandomSampler(seed=settings.seed) if kind == "random" else TPESampler(seed=settings.seed,
                                                                                    n_startup_trials=startup)
    algo = PruneAwareOptunaSearch(metric=space.figure, mode=space.mode, sampler=sampler)
    return tune.search.ConcurrencyLimiter(algo, max_concurrent=max_concurrent)


def make_scheduler(settings: SweepConfig, space: SearchSpace, epochs: int, workers: int = 1, verdicts_name: str = ""):
    """ASHA over supervised epochs on the space's figure; or FIFO when pruning is off.

    The clock is ``supervised_epoch``: pretraining reports (Flickr's first stage) do not carry it, so ASHA
    neither counts nor judges them, and ``max_t`` is the supervised stage's length. 1-worker trials are
    stopped by Tune itself; multi-worker trials end themselves on ASHA's verdict (``workarounds.CooperativeASHA``).
    The rungs come from the space (its preset) unless the sweep settings name them."""
    if not settings.asha:
        return FIFOScheduler()
    grace = settings.grace_period or space.asha.grace_period
    rf = settings.reduction_factor or space.asha.reduction_factor
    rungs = dict(metric=space.figure, mode=space.mode, time_attr="supervised_epoch", max_t=epochs,
                 grace_period=min(grace, epochs), reduction_factor=rf)
    if workers > 1:
        return CooperativeASHA(verdicts_name, **rungs)
    return ASHAScheduler(**rungs)
