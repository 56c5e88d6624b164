"""The sweep's trial-epoch budget (``--max-trial-epochs``) without a Ray cluster: the stopper fed the reports a
trial sends counts each trial's epochs once and stops the sweep exactly when the sum reaches the budget; the
trials it stopped are told to the real Optuna searcher as PRUNED at their last figure and to the callbacks."""

import pytest
from pydantic import ValidationError
from ray.tune import Callback
from ray.tune.experiment import Trial

from cmmd_dist.config import SweepConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune.budget import TrialEpochBudget, check_budget
from cmmd_dist.tune.search_space import load_search_space
from cmmd_dist.tune.searchers import make_searcher, tune_param_space

from test_tune_searchers import _rows  # the reports of one trial, as cmmd_dist.tune.trial sends them

SPACE = load_search_space("digits2v").with_preset("smoke")


def _feed(budget: TrialEpochBudget, trial_id: str, rows: list[dict]) -> list[bool]:
    """Each report through the stopper, then stop_all as Tune asks it after each event."""
    out = []
    for r in rows:
        assert budget(trial_id, r) is False  # no trial is stopped on its own report: stop_all ends them all
        out.append(budget.stop_all())
    return out


class _Told(Callback):
    """Records the trials it is told ended (the sweep's MLflow callback ends their runs)."""

    def __init__(self):
        self.ended = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.append(trial.trial_id)


def test_stops_all_exactly_when_the_sum_reaches_the_budget():
    budget = TrialEpochBudget(5)
    a, b = _rows([0.5, 0.4, 0.3, 0.2], completed_at=4), _rows([0.6, 0.5, 0.4], completed_at=None)
    assert _feed(budget, "a", a[:2]) == [False, False]
    assert _feed(budget, "b", b[:2]) == [False, False]  # 4 trial-epochs
    assert _feed(budget, "a", a[2:3]) == [True]  # the 5th
    assert budget.used == 5 and budget.spent


def test_each_trial_epoch_counts_once():
    budget = TrialEpochBudget(4)
    rows = _rows([0.5, 0.4, 0.3], completed_at=3)
    _feed(budget, "a", [rows[0], rows[0], rows[2], rows[1]])  # repeated and out of order
    assert budget.epochs == {"a": 3} and budget.used == 3 and not budget.stop_all()
    budget(None, {"epoch": 9})  # a report of no trial counts nothing
    budget("b", {"done": True})  # a report without an epoch counts nothing
    assert budget.used == 3 and not budget.stop_all()
    _feed(budget, "b", _rows([0.5], completed_at=None))
    assert budget.used == 4 and budget.stop_all()


def test_without_a_budget_nothing_stops():
    budget = TrialEpochBudget(None)
    assert not any(_feed(budget, "a", _rows([0.5] * 40, completed_at=40)))
    assert budget.used == 40 and not budget.spent


def test_a_resumed_sweep_counts_the_epochs_its_restored_trials_ran():
    done, cut = Trial("t", trial_id="done", stub=True), Trial("t", trial_id="cut", stub=True)
    done.update_last_result(_rows([0.5, 0.4], completed_at=2)[-1])
    cut.update_last_result(_rows([0.5, 0.4, 0.3], completed_at=None)[-1])
    for t in (done, cut):  # ended before the resume: Tune keeps them as they are
        t.set_status(Trial.TERMINATED)
    told = _Told()
    budget = TrialEpochBudget(5, None, [told])
    budget.on_step_begin(0, [done, cut])
    assert budget.used == 5 and budget.stop_all()
    budget.on_step_end(1, [done, cut])
    assert budget.stopped == [] and told.ended == []  # their runs ended in the sweep's first life


def _searcher():
    searcher = make_searcher(SweepConfig(dataset="digits2v"), SPACE, max_concurrent=3, num_trials=4)
    assert searcher.set_search_properties(None, None, tune_param_space(SPACE, "optuna"))
    return searcher


def test_a_trial_stopped_on_a_report_is_pruned_at_that_reports_figure():
    searcher = _searcher()  # a budget's last report may be the one ASHA stops a 1-worker trial on
    searcher.suggest("t1")
    rows = _rows([0.6, 0.45], completed_at=None)
    searcher.on_trial_result("t1", rows[0])  # Tune passes no searcher the report the scheduler stops a trial on
    searcher.on_trial_complete("t1", rows[1])
    (trial,) = searcher.searcher._ot_study.trials
    assert trial.state.name == "PRUNED" and trial.value == 0.45 and trial.intermediate_values == {1: 0.6, 2: 0.45}


def test_the_trials_it_stops_are_pruned_in_optuna_at_their_last_figure():
    searcher = _searcher()
    told = _Told()
    budget = TrialEpochBudget(5, searcher, [told])
    trials = [Trial("t", trial_id=i, stub=True) for i in ("done", "cut", "waiting")]
    for t in trials:
        assert searcher.suggest(t.trial_id) is not None
    budget.on_step_begin(0, trials)
    done, cut, waiting = trials
    for t, rows in ((done, _rows([0.5, 0.4, 0.3], completed_at=3)), (cut, _rows([0.6, 0.45], completed_at=None))):
        t.set_status(Trial.RUNNING)
        budget.on_trial_start(0, trials, t)
        for r in rows:
            budget(t.trial_id, r)
            searcher.on_trial_result(t.trial_id, r)
            t.update_last_result(r)
            if t is done and r["cv_completed"]:  # it ended by itself: Tune runs its hooks
                searcher.on_trial_complete(t.trial_id, r)
                t.set_status(Trial.TERMINATED)
                budget.on_trial_complete(0, trials, t)
    assert budget.stop_all()  # 3 + 2 epochs; "cut" runs, "waiting" never started
    for t in trials:  # what Tune's stop_all path does: no hook
        t.set_status(Trial.TERMINATED)
    budget.on_step_end(1, trials)  # the step in which Tune stopped them
    assert budget.stopped == ["cut", "waiting"] and told.ended == ["cut"]
    budget.on_experiment_end(trials)
    assert budget.stopped == ["cut", "waiting"] and told.ended == ["cut"]  # once each
    study, by_id = searcher.searcher._ot_study, searcher.searcher._ot_trials
    states = {tid: study.trials[by_id[tid].number] for tid in by_id}
    assert states["done"].state.name == "COMPLETE" and states["done"].value == 0.3
    assert states["cut"].state.name == "PRUNED" and states["cut"].value == 0.45
    assert states["waiting"].state.name == "PRUNED" and states["waiting"].value is None


def test_a_budget_needs_one_worker_trials_and_at_least_one_epoch():
    check_budget(None, 4)
    check_budget(3, 1)
    with pytest.raises(UserError, match="--max-trial-epochs needs 1-worker trials"):
        check_budget(3, 2)
    with pytest.raises(ValidationError):
        SweepConfig(max_trial_epochs=0)
