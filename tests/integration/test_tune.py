"""The sweep end to end on real local Ray: smoke preset, CV per epoch, ASHA pruning, retrain; kill and resume."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune import run_sweep
from waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def trial_results(exp: Path) -> dict[str, list[dict]]:
    """Per trial folder: its reported results (Tune's result.json lines)."""
    out = {}
    for f in sorted(exp.glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        out[f.parent.name] = rows
    return out


def saved_trials(exp: Path) -> dict[str, tuple[str, dict]]:
    """Trial id -> (status, last result) in Tune's newest saved experiment state (what a resume starts from)."""
    states = sorted(exp.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for entry in data["trial_data"]:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            out[trial["trial_id"]] = (trial.get("status"), meta.get("last_result") or {})
        return out
    except (json.JSONDecodeError, OSError, KeyError, IndexError):  # being rewritten right now
        return {}


def terminated_in_state(exp: Path) -> set[str]:
    """Trial ids that Tune's newest saved experiment state records as TERMINATED (what a resume keeps)."""
    return {t for t, (status, _) in saved_trials(exp).items() if status == "TERMINATED"}


def test_smoke_sweep_reports_cv_prunes_and_retrains(ray_session, mlflow_server, tmp_path):
    uri = mlflow_server.uri  # a real `mlflow server` (SQLite backend, artifacts on the SeaweedFS S3 fixture)
    lines = []
    # one trial at a time: which trial ASHA stops then depends on the seeded searcher and training alone, not on
    # the order in which two concurrent trials reach a rung on a loaded machine (it could stop none)
    summary = run_sweep(SweepConfig(dataset="digits2v", preset="smoke", output_dir=str(tmp_path),
                                    storage=str(tmp_path / "sweeps"), seed=0, mlflow=uri, max_concurrent_trials=1),
                        log=lines.append)
    assert Path(summary["summary_path"]).exists()
    on_disk = json.loads(Path(summary["summary_path"]).read_text())
    assert len(on_disk["trials"]) == 4 and on_disk["workers_per_trial"] == 2 and on_disk["folds"]["k"] == 2
    results = trial_results(Path(summary["sweep"]))
    assert len(results) == 4
    for rows in results.values():
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))  # every epoch, none twice
        for r in rows:
            assert {"cv_metric", "cv_std", "fold0_metric", "fold1_metric"} <= set(r)
            assert abs(r["cv_metric"] - (r["fold0_metric"] + r["fold1_metric"]) / 2) < 1e-9
    assert any(t["stopped_early"] for t in on_disk["trials"]), "ASHA stopped no trial"
    assert any(not t["stopped_early"] for t in on_disk["trials"])
    # 2-worker trials end themselves on ASHA's verdict: still PRUNED in Optuna, at their last figure
    assert "PRUNED" in assert_optuna_holds_every_trial_once(Path(summary["sweep"])).values()
    assert 0 <= on_disk["test"]["error"] < 0.9 and on_disk["retrain_epochs"] >= 1
    assert 0 < on_disk["test"]["latent_accuracy"] <= 1
    # M-x_o beside the champion: same rows and epochs, in the summary and its printed table
    assert 0 <= on_disk["mx_o_test"]["error"] < 0.9
    assert any(line.startswith("M-x_o (classifier on x_o alone)") for text in lines for line in str(text).splitlines())

    # tracked from the driver: one parent, a child per trial (per-epoch metrics), a retrain run; the champion
    from mlflow.tracking import MlflowClient

    from cmmd_dist.tracking.store import pull

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cmmd-digits2v")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("sweep_id") == summary["sweep"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 5  # 4 trials + the retrain
    retrain = next(r for r in children if r.data.tags.get("kind") == "retrain")
    assert retrain.data.metrics["mx_o_test_error"] == pytest.approx(on_disk["mx_o_test"]["error"])
    assert retrain.data.metrics["error"] == pytest.approx(on_disk["test"]["error"])
    assert parents[0].data.metrics["mx_o_test_error"] == pytest.approx(on_disk["mx_o_test"]["error"])
    trial_run = next(r for r in children if r.data.tags.get("kind") == "trial")
    assert len(client.get_metric_history(trial_run.info.run_id, "cv_metric")) >= 1
    assert summary["model_uri"] == "models:/cmmd-digits2v@champion"
    core, spec = pull("cmmd-digits2v", uri=uri)
    assert spec.name == "digits2v" and core.cfg.num_classes == 10


def searcher_state(exp: Path) -> dict:
    """The newest saved state of the sweep's Optuna searcher (Ray's OptunaSearch pickles its ``__dict__``)."""
    state_files = sorted(exp.glob("searcher-state-*.pkl"))
    assert state_files, "no searcher state saved"
    with open(state_files[-1], "rb") as f:
        return pickle.load(f)


def assert_optuna_holds_every_trial_once(exp: Path, exact: set[str] | None = None,
                                        only: set[str] | None = None) -> dict[str, str]:
    """Every Tune trial is one Optuna trial, in its state: COMPLETE when it finished its CV, PRUNED when ASHA
    stopped it; told the sweep's figure: a COMPLETE trial at its best fold-mean CV metric, a PRUNED one at its
    last reported figure. ``exact``: trial folders whose values are checked (default all; a trial restarted by a
    resume re-reports epochs that Optuna already holds). ``only``: the Tune trial ids the sweep holds (default
    every trial folder; a trial the killed driver had started after its last saved state is not one of them).
    Returns {tune trial id: state}."""
    state = searcher_state(exp)
    study, by_tune_id = state["_ot_study"], state["_ot_trials"]
    results = {k: v for k, v in trial_results(exp).items() if only is None or (v and v[-1]["trial_id"] in only)}
    told = {t.number: t for t in study.trials}
    assert len(study.trials) == len(results) == len(by_tune_id) == len(told)  # each trial once, none twice
    states = {}
    for folder, rows in results.items():
        tune_id = rows[-1]["trial_id"]
        frozen = told[by_tune_id[tune_id].number]
        expected = "COMPLETE" if rows[-1]["cv_completed"] else "PRUNED"
        assert frozen.state.name == expected, (folder, frozen.state, rows[-1])
        if exact is None or folder in exact:
            assert frozen.value == rows[-1]["best_cv_metric"] == min(r["cv_metric"] for r in rows), (folder, rows)
        states[tune_id] = expected
    return states


def test_killed_sweep_resumes_without_rerunning_trials(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"  # its own store: never the checkout's ./mlruns.db
    # 1-worker trials (the CV in the Tune function itself), pruned by Tune's own ASHA; Tune saves its state every 2 s.
    # The smoke preset at batch size 16 and 6 epochs: a trial's epoch takes a few tenths of a second, so that the
    # kill can land while a trial is past its second epoch, with more to go
    space = yaml.safe_load((ROOT / "cmmd_dist" / "search_spaces" / "digits2v.yaml").read_text())
    space["presets"]["smoke"]["fixed"]["train"].update(batch_size=16, epochs=6, patience=6)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    trials = 10
    cmd = [sys.executable, "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset", "smoke", "--num-trials", str(trials),
           "--space", str(tmp_path / "space.yaml"), "--workers-per-trial", "1", "--max-concurrent-trials", "1",
           "--name", "resume-me", "--out", str(tmp_path), "--no-retrain", "--reduction-factor", "2", "--grace-period", "1",
           "--mlflow", uri]
    exp = tmp_path / "sweeps" / "resume-me"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kept: set[str] = set()
    in_flight: set[str] = set()  # trials RUNNING in the saved state, 2 epochs or more done, not finished

    def two_ended_one_in_flight() -> bool:
        nonlocal kept, in_flight
        saved = saved_trials(exp)
        kept = {t for t, (status, _) in saved.items() if status == "TERMINATED"}
        in_flight = {t for t, (status, last) in saved.items()
                     if status == "RUNNING" and last.get("epoch", 0) >= 2 and not last.get("cv_completed")}
        return (len(kept) >= 2 and bool(in_flight)) or proc.poll() is not None

    try:
        wait_for(two_ended_one_in_flight, 600, interval=0.05, what="two trials ended and a third in flight")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = trial_results(exp)  # result.json is the driver's: nothing is added once it is dead
    ended_before = {k: len(v) for k, v in before.items() if v and v[-1]["trial_id"] in kept}
    assert len(ended_before) >= 2 and in_flight, "the sweep did not end two trials with a third in flight in time"
    assert len(ended_before) < trials, "the sweep ended before it could be interrupted"
    flying = {k: len(v) for k, v in before.items() if v and v[-1]["trial_id"] in in_flight}

    out = subprocess.run(cmd + ["--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming sweep" in out.stdout
    held = terminated_in_state(exp)
    # a trial started after the killed driver's last saved state is run again as a new trial: its folder stays
    after = {k: v for k, v in trial_results(exp).items() if v and v[-1]["trial_id"] in held}
    assert len(after) == trials and len(held) == trials
    for trial, n_rows in ended_before.items():
        assert len(after[trial]) == n_rows, f"{trial} ran again"
    # the trial in flight at the kill continues from its checkpoint (its last saved epoch or one before), not epoch 1
    for trial, n_rows in flying.items():
        resumed = [r["epoch"] for r in after[trial][n_rows:]]
        assert resumed and resumed[0] > 1 and resumed == sorted(set(resumed)), (trial, resumed)
    # once each, in its state (the values are checked by the smoke sweep: here the searcher's saved state can be
    # older than the trial's last report when the kill comes right after it, and a resume keeps that value)
    states = assert_optuna_holds_every_trial_once(exp, exact=set(), only=held)
    assert "COMPLETE" in states.values()

    # MLflow: every run ended (a trial lost with the killed driver too), every trial's curve holds each epoch once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=500)
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    by_trial = {r.data.tags.get("trial_id"): r for r in runs if r.data.tags.get("kind") == "trial"}
    assert set(in_flight) <= set(by_trial)
    for trial_id, run in by_trial.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "cv_metric")]
        assert len(steps) == len(set(steps)), (trial_id, sorted(steps))
