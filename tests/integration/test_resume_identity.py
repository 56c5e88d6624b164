"""A resume keeps what its sweep started with (issue 23): a real one-trial sweep, then ``--resume`` of it with
another ``--dataset`` from the command line is refused with one line naming both datasets (exit 2), before Ray
is asked for anything, and leaves no summary, no new MLflow run and no new trial behind."""

from __future__ import annotations

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune import SweepFailed, run_sweep
from cmmd_dist.cli.tune import main

pytestmark = pytest.mark.integration


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)


def test_a_resume_with_another_dataset_is_refused_naming_both(ray_session, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    storage = str(tmp_path / "sweeps")
    # the cheapest sweep that exists: one 1-worker trial, stopped by the budget after its first epoch
    with pytest.raises(SweepFailed):
        run_sweep(SweepConfig(dataset="digits2v", preset="smoke", num_trials=1, workers_per_trial=1, max_trial_epochs=1,
                              retrain=False, name="ident", storage=storage, output_dir=str(tmp_path), mlflow=uri),
                  log=lambda *_: None)
    assert (tmp_path / "sweeps" / "ident" / "sweep.json").exists()
    before = len(_runs(uri))
    trials = sorted(p.name for p in (tmp_path / "sweeps" / "ident").iterdir() if p.is_dir())
    assert trials, "the sweep ran no trial"
    capsys.readouterr()

    # the case: this resumed the digits2v trials as a mnist2v sweep and exited 0
    rc = main(["--dataset", "mnist2v", "--preset", "smoke", "--name", "ident", "--resume", "--storage", storage,
               "--out", str(tmp_path), "--mlflow", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and "mnist2v" in err[0] and "digits2v" in err[0] and "--dataset" in err[0], err
    assert not (tmp_path / "ident-summary.json").exists()
    assert len(_runs(uri)) == before
    assert sorted(p.name for p in (tmp_path / "sweeps" / "ident").iterdir() if p.is_dir()) == trials
