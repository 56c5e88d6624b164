"""The sweep end to end on real local Ray: smoke preset, CV per epoch, ASHA pruning, retrain; kill and resume."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune import run_sweep

pytestmark = pytest.mark.integration


def trial_results(exp: Path) -> dict[str, list[dict]]:
    """Per trial folder: its reported results (Tune's result.json lines)."""
    out = {}
    for f in sorted(exp.glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        out[f.parent.name] = rows
    return out


def terminated_in_state(exp: Path) -> set[str]:
    """Trial ids that Tune's newest saved experiment state records as TERMINATED (what a resume keeps)."""
    states = sorted(exp.glob("experiment_state-*.json"))
    if not states:
        return set()
    try:
        data = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):  # being rewritten right now
        return set()
    trials = [json.loads(entry[0]) for entry in data["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def test_smoke_sweep_reports_cv_prunes_and_retrains(ray_session, mlflow_server, tmp_path):
    uri = mlflow_server.uri  # a real `mlflow server` (SQLite backend, artifacts on the SeaweedFS S3 fixture)
    summary = run_sweep(SweepConfig(dataset="digits2v", preset="smoke", output_dir=str(tmp_path),
                                    storage=str(tmp_path / "sweeps"), seed=0, mlflow=uri))
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
    assert 0 <= on_disk["test"]["error"] < 0.9 and on_disk["retrain_epochs"] >= 1

    # tracked from the driver: one parent, a child per trial (per-epoch metrics), a retrain run; the champion
    from mlflow.tracking import MlflowClient

    from cmmd_dist.tracking import pull

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cmmd-digits2v")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("sweep_id") == summary["sweep"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 5  # 4 trials + the retrain
    trial_run = next(r for r in children if r.data.tags.get("kind") == "trial")
    assert len(client.get_metric_history(trial_run.info.run_id, "cv_metric")) >= 1
    assert summary["model_uri"] == "models:/cmmd-digits2v@champion"
    core, spec = pull("cmmd-digits2v", uri=uri)
    assert spec.name == "digits2v" and core.cfg.num_classes == 10


def test_killed_sweep_resumes_without_rerunning_trials(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address}
    # no ASHA here: every trial then ends by itself, and its last report says so (cv_completed)
    cmd = [sys.executable, "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset", "smoke", "--num-trials", "4",
           "--max-concurrent-trials", "1", "--name", "resume-me", "--out", str(tmp_path), "--no-retrain", "--no-asha"]
    exp = tmp_path / "sweeps" / "resume-me"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    finished_before: dict[str, int] = {}
    while time.time() < deadline:
        kept = terminated_in_state(exp)
        if len(kept) >= 2:
            finished_before = {k: len(v) for k, v in trial_results(exp).items() if v and v[-1]["trial_id"] in kept}
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(finished_before) >= 2, "the sweep did not finish two trials in time"
    assert len(finished_before) < 4, "the sweep finished before it could be interrupted"

    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming sweep" in out.stdout
    after = trial_results(exp)
    finished = {k: v for k, v in after.items() if v and v[-1].get("cv_completed")}
    assert len(finished) == 4
    for trial, n_rows in finished_before.items():
        assert len(after[trial]) == n_rows, f"{trial} ran again"
    state_files = sorted(exp.glob("searcher-state-*.pkl"))
    assert state_files, "no searcher state saved"
    with open(state_files[-1], "rb") as f:
        state = pickle.load(f)
    study = state["_ot_study"] if isinstance(state, dict) else state[2]
    assert len(study.trials) == 4 and all(t.state.is_finished() for t in study.trials)
