"""The sweep's MLflow run from start to end, off the happy path: checks before the run, a sweep whose every trial
fails (FAILED, nothing registered), a clashing ``--name`` (refused, nothing written), Ctrl-C (KILLED, the resume
command printed), and a tracking server that goes away mid-sweep (points queued, written when it is back)."""

import os
import signal
import subprocess
import sys

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune import SweepFailed, run_sweep
from waiting import wait_for

pytestmark = pytest.mark.integration


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], max_results=500) if exps else []


def _versions(uri: str) -> int:
    from mlflow.tracking import MlflowClient

    return len(MlflowClient(uri, registry_uri=uri).search_model_versions())


@pytest.fixture
def broken_dataset(tmp_path):
    """digits2v prepared, then one train shard altered: every trial reading it fails its checksum."""
    from cmmd_dist.datasets.prepare import prepare

    root = tmp_path / "digits-broken"
    prepare("digits2v", None, str(root), rows_per_file=400)
    shard = sorted((root / "train").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return root


def test_resume_of_a_sweep_that_never_existed_starts_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    with pytest.raises(UserError, match="--resume"):
        run_sweep(SweepConfig(dataset="digits2v", preset="smoke", name="never-was", resume=True,
                              output_dir=str(tmp_path), mlflow=uri))
    assert not (tmp_path / "mlruns.db").exists() or _runs(uri) == []


def test_a_space_for_the_dataset_is_required_for_a_prepared_dataset_of_another_name(tmp_path):
    from cmmd_dist.datasets.prepare import prepare

    root = tmp_path / "mine"
    manifest = prepare("digits2v", None, str(root), rows_per_file=2000)
    import json

    manifest_file = root / "manifest.json"
    body = json.loads(manifest_file.read_text())
    body["spec"]["name"] = "my-digits"  # a bring-your-own dataset: its name is the manifest's
    manifest_file.write_text(json.dumps(body))
    assert manifest["spec"]["name"] == "digits2v"
    with pytest.raises(UserError, match=r"no search space for dataset 'my-digits'.*--space"):
        run_sweep(SweepConfig(data=str(root), preset="smoke", output_dir=str(tmp_path),
                              mlflow=f"sqlite:///{tmp_path / 'mlruns.db'}"))


def test_sweep_whose_every_trial_fails_registers_nothing_and_ends_failed(ray_session, broken_dataset, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    settings = SweepConfig(data=str(broken_dataset), preset="smoke", num_trials=2, name="all-fail",
                           output_dir=str(tmp_path), mlflow=uri)
    with pytest.raises(SweepFailed, match="no trial .* finished its cross-validation"):
        run_sweep(settings)
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert _versions(uri) == 0
    assert not list(tmp_path.glob("all-fail-summary.json"))

    # the same --name again without --resume: refused before anything is written, the FAILED run stays FAILED
    with pytest.raises(UserError, match="exists: add --resume"):
        run_sweep(settings)
    again = _runs(uri)
    assert len(again) == len(runs) and all(r.info.status != "RUNNING" for r in again)


def test_ctrl_c_ends_the_sweep_killed_and_says_how_to_resume(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset", "smoke", "--name", "stop-me",
           "--out", str(tmp_path), "--mlflow", uri, "--max-concurrent-trials", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def reported() -> bool:  # a trial has reported (the store is the driver's alone until then: SQLite migrates on first open)
        return any(f.stat().st_size for f in (tmp_path / "sweeps" / "stop-me").glob("*/result.json"))

    wait_for(lambda: reported() or proc.poll() is not None, 240, interval=1, what="a trial's first report")
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--name stop-me --resume" in out
    assert "cmmd_dist.tune: interrupted" in err.splitlines()  # Ray may still stream worker lines after it
    runs = _runs(uri)
    parent = next(r for r in runs if r.data.tags.get("kind") == "sweep")
    assert parent.info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


def test_tracking_writes_wait_for_a_server_that_went_away(s3_server, tmp_path):
    """A recorder keeps the sweep's writes in order while the server is down and writes them when it is back."""
    import boto3
    from mlflow.tracking import MlflowClient
    from mlflow_server import MlflowServer

    from cmmd_dist.tracking.recorder import SweepRecorder

    env = {**s3_server.env(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
                 ).create_bucket(Bucket="mlflow-outage")
    server = MlflowServer(tmp_path / "srv", env, "s3://mlflow-outage/artifacts").start()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # each failed write fails at once (the queue retries)
    try:
        rec = SweepRecorder("digits2v", None, {"p": 1}, sweep_id="outage", uri=server.uri, retry_s=0.2)
        rec.trial_started("t1", {"lam": 0.5})
        rec.trial_result("t1", {"epoch": 1, "cv_metric": 0.5})
        server.stop()
        for epoch in (2, 3):
            rec.trial_result("t1", {"epoch": epoch, "cv_metric": 0.5 - 0.1 * epoch})  # must not raise
        rec.trial_started("t2", {"lam": 0.1})
        rec.trial_result("t2", {"epoch": 1, "cv_metric": 0.4})
        rec.trial_finished("t1")
        assert rec.flush() > 0  # still away: queued, not lost
        server.start()
        assert rec.drain(timeout_s=60) == 0
        client = MlflowClient(server.uri)
        t1 = rec.tracker._find(client.get_run(rec.parent).info.experiment_id, "tags.trial_id = 't1'")
        assert [m.step for m in client.get_metric_history(t1.info.run_id, "cv_metric")] == [1, 2, 3]
        assert client.get_run(t1.info.run_id).info.status == "FINISHED"
        t2 = rec.tracker._find(client.get_run(rec.parent).info.experiment_id, "tags.trial_id = 't2'")
        assert len(client.get_metric_history(t2.info.run_id, "cv_metric")) == 1

        server.stop()  # gone for good: the count of what never arrived, no exception
        rec.trial_result("t2", {"epoch": 2, "cv_metric": 0.3})
        assert rec.drain(timeout_s=1) == 1
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        server.stop()
