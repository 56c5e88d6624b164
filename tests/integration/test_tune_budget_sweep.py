"""A sweep under a trial-epoch budget (``--max-trial-epochs``) on real local Ray: it stops when its trials have
run the budget, the trial it stopped is PRUNED in Optuna and ended in MLflow, and the champion is retrained."""

import json
from pathlib import Path

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune import run_sweep

from test_tune import searcher_state, trial_results

pytestmark = pytest.mark.integration


def test_a_sweep_stops_when_its_trials_have_run_the_budget(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    lines = []
    # one trial at a time, 1-worker trials of 4 epochs, no ASHA (it would stop the second trial itself): the first
    # runs its CV to the end, the second is stopped by the budget (4 + 1 = 5) during its second epoch, the last
    # two never start. Tune asks the stopper after each report, and the trials it stops end at their last
    # reported epoch, so the sweep spends exactly the budget.
    summary = run_sweep(SweepConfig(dataset="digits2v", preset="smoke", workers_per_trial=1, max_concurrent_trials=1,
                                    asha=False,
                                    max_trial_epochs=5, output_dir=str(tmp_path), storage=str(tmp_path / "sweeps"),
                                    seed=0, mlflow=uri), log=lines.append)
    on_disk = json.loads(Path(summary["summary_path"]).read_text())
    assert on_disk["max_trial_epochs"] == 5 and on_disk["stopped_by_budget"] is True
    assert on_disk["trial_epochs_total"] == 5
    assert any(str(line).startswith("trial-epoch budget spent: 5 of 5; the sweep stopped there, 1 trials ended")
               for line in lines)
    rows = {r["trial_id"]: r for r in on_disk["trials"]}
    results = {rs[-1]["trial_id"]: rs for rs in trial_results(Path(summary["sweep"])).values() if rs}
    assert len(rows) == len(on_disk["trials"]) == len(results) == 2  # every trial that reported, once
    assert {t: r["epochs_run"] for t, r in rows.items()} == {t: len(rs) for t, rs in results.items()}
    stopped = [r for r in rows.values() if r["stopped_early"]]
    assert len(stopped) == 1 and stopped[0]["epochs_run"] == 1
    assert on_disk["best"]["trial_id"] != stopped[0]["trial_id"] and not on_disk["best"]["stopped_early"]
    assert 0 <= on_disk["test"]["error"] < 0.9 and on_disk["retrain_epochs"] >= 1  # the champion, retrained

    # Optuna: the finished trial COMPLETE at its best figure, the stopped one PRUNED at its last; none left running
    state = searcher_state(Path(summary["sweep"]))
    study, by_tune_id = state["_ot_study"], state["_ot_trials"]
    told = {tid: study.trials[t.number] for tid, t in by_tune_id.items()}
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    for tid, rs in results.items():
        assert told[tid].state.name == ("COMPLETE" if rs[-1]["cv_completed"] else "PRUNED")
        assert told[tid].value == rs[-1]["best_cv_metric"]

    # MLflow: the stopped trial's run is ended like a pruned trial's, not left running
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cmmd-digits2v")
    runs = client.search_runs([exp.experiment_id], max_results=50)
    trial_runs = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trial_runs) == 2 and all(r.info.status == "FINISHED" for r in trial_runs)
    assert sorted(r.data.tags.get("pruned", "false") for r in trial_runs) == ["false", "true"]
