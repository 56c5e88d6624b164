"""The searcher is told the sweep's figure: the best fold-mean CV metric so far, never the last epoch's; a trial
stopped early is PRUNED with its last reported figure (real Optuna, the sweep's own searcher and scheduler)."""

import math

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune.search_space import load_search_space
from cmmd_dist.tune.searchers import make_scheduler, make_searcher, tune_param_space

SPACE = load_search_space("digits2v").with_preset("smoke")


def _searcher():
    searcher = make_searcher(SweepConfig(dataset="digits2v"), SPACE, max_concurrent=2, num_trials=4)
    assert searcher.set_search_properties(None, None, tune_param_space(SPACE, "optuna"))
    return searcher


def _rows(cv: list[float], completed_at: int | None) -> list[dict]:
    """Reports of a trial whose fold-mean CV metric follows ``cv`` (what cmmd_dist.tune.trial adds to each)."""
    rows, best = [], math.inf
    for i, m in enumerate(cv, start=1):
        best = min(best, m)
        rows.append({"cv_metric": m, "best_cv_metric": best, "epoch": i, "supervised_epoch": i, "training_iteration": i,
                     "stage": "supervised", "cv_completed": int(i == completed_at)})
    return rows


def test_a_trial_whose_metric_rises_after_its_best_epoch_is_told_at_its_best_value():
    searcher = _searcher()
    assert searcher.suggest("t1") is not None
    rows = _rows([0.5, 0.3, 0.2, 0.4], completed_at=4)  # best 0.2 at epoch 3, then worse
    for r in rows:
        searcher.on_trial_result("t1", r)
    searcher.on_trial_complete("t1", rows[-1])
    (trial,) = searcher.searcher._ot_study.trials
    assert trial.state.name == "COMPLETE"
    assert trial.value == 0.2 and rows[-1]["cv_metric"] == 0.4


def test_a_trial_stopped_early_is_pruned_with_its_last_reported_figure():
    searcher = _searcher()
    searcher.suggest("t1")
    rows = _rows([0.6, 0.45], completed_at=None)  # ASHA stopped it after epoch 2: it never said cv_completed
    for r in rows:
        searcher.on_trial_result("t1", r)
    searcher.on_trial_complete("t1", rows[-1])
    (trial,) = searcher.searcher._ot_study.trials
    assert trial.state.name == "PRUNED" and trial.value == 0.45


def test_asha_prunes_on_the_same_figure():
    asha = make_scheduler(SweepConfig(dataset="digits2v"), SPACE, epochs=4)
    assert (asha.metric, asha._time_attr) == (SPACE.figure, "supervised_epoch") == ("best_cv_metric", "supervised_epoch")


def test_the_command_line_chooses_the_random_sampler():
    from optuna.samplers import RandomSampler, TPESampler

    from cmmd_dist.cli.tune import build_parser, settings_from_args

    def sampler(argv):
        settings = settings_from_args(build_parser().parse_args(argv))
        return make_searcher(settings, SPACE, max_concurrent=2, num_trials=4).searcher._sampler

    assert isinstance(sampler(["--dataset", "digits2v", "--searcher", "random"]), RandomSampler)
    assert isinstance(sampler(["--dataset", "digits2v"]), TPESampler)
