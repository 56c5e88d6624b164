"""End to end on a real two-node Ray cluster (cluster/local-two-node.sh, loopback, token auth on):
``ray job submit --working-dir . -- python -m cmmd_dist.tune --dataset digits2v --preset smoke``."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local-two-node.sh"
RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def two_nodes():
    """(client environment, dashboard URL) of a head + one worker node, 2 CPUs each, its own token."""
    gcs, dash, client, m1, m2, a1, a2 = _free_ports(7)
    local = Path(f"/tmp/c2n{gcs}")  # short: Ray's unix sockets live under it
    env = {**__import__("os").environ, "RAY_LOCAL_DIR": str(local), "RAY_GCS_PORT": str(gcs),
           "RAY_DASHBOARD_PORT": str(dash), "RAY_CLIENT_PORT": str(client), "RAY_HEAD_METRICS_PORT": str(m1),
           "RAY_WORKER_METRICS_PORT": str(m2), "RAY_HEAD_AGENT_PORT": str(a1), "RAY_WORKER_AGENT_PORT": str(a2),
           "RAY_HEAD_CPUS": "2", "RAY_WORKER_CPUS": "2", "RAY_BIN": RAY, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=420)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", str(local)])


@pytest.fixture(scope="module")
def job_mlflow(tmp_path_factory):
    """A real ``mlflow server`` of the job's own (SQLite, artifacts on disk): the session's server holds
    other tests' sweeps, whose counts this job must not change."""
    from mlflow_server import MlflowServer

    workdir = tmp_path_factory.mktemp("job-mlflow")
    server = MlflowServer(workdir, {}, str(workdir / "artifacts")).start()
    yield server
    server.stop()


def submit(env: dict, dashboard: str, entrypoint: list[str], timeout: float = 900) -> tuple[str, str, str]:
    """(submission id, final status, logs) of one ``ray job submit`` (the real CLI, working dir uploaded)."""
    job = f"cmmd-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([RAY, "job", "submit", "--address", dashboard, "--submission-id", job, "--working-dir", str(ROOT),
                    "--runtime-env-json", json.dumps({"excludes": [".git", "runs", "benchmarks/results"]}),
                    "--", *entrypoint], env=env, capture_output=True, text=True, timeout=timeout)
    st = subprocess.run([RAY, "job", "status", "--address", dashboard, job], env=env, capture_output=True, text=True,
                        timeout=60)
    text = st.stdout + st.stderr  # "Job 'ID' succeeded" once ended, "Status for job 'ID': RUNNING" before
    found = (re.search(rf"Job '{job}' (succeeded|failed|was stopped)", text)
             or re.search(rf"Status for job '{job}': (\w+)", text))
    logs = subprocess.run([RAY, "job", "logs", "--address", dashboard, job], env=env, capture_output=True, text=True,
                          timeout=60).stdout
    status = {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}.get(found.group(1), found.group(1)) \
        if found else text
    return job, status, logs


def test_submitted_sweep_runs_on_both_nodes_and_registers_a_model(two_nodes, job_mlflow, tmp_path):
    env, dashboard = two_nodes
    out = tmp_path / "out"
    job, status, logs = submit(env, dashboard, ["python", "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset",
                                                "smoke", "--mlflow", job_mlflow.uri, "--out", str(out),
                                                "--storage", str(tmp_path / "sweeps")])
    assert status == "SUCCEEDED", logs[-4000:]
    assert "cv mean" in logs and "best configuration retrained on train+val, tested once" in logs  # the summary table
    summary = json.loads(next(out.glob("*-summary.json")).read_text())
    assert len(summary["trials"]) == 4

    # the trials' Ray Train workers ran on both nodes
    actors = subprocess.run([RAY, "list", "actors", "--address", dashboard, "--filter", "class_name=RayTrainWorker",
                             "--detail", "--format", "json", "--limit", "1000"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert actors.returncode == 0, actors.stderr
    nodes = {a["node_id"] for a in json.loads(actors.stdout) if a.get("job_id") and a.get("node_id")}
    assert len(nodes) == 2, f"trial workers ran on {len(nodes)} node(s)"

    # the sweep and the registered model are in the MLflow server
    from mlflow.tracking import MlflowClient

    client = MlflowClient(job_mlflow.uri)
    exp = client.get_experiment_by_name("cmmd-digits2v")
    parents = [r for r in client.search_runs([exp.experiment_id], max_results=200)
               if r.data.tags.get("sweep_id") == summary["sweep"] and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    version = client.get_model_version_by_alias("cmmd-digits2v", "champion")
    assert client.get_run(version.run_id).data.tags.get("mlflow.parentRunId") == parents[0].info.run_id


def test_submitted_job_with_a_bad_dataset_fails_with_a_clear_error(two_nodes):
    env, dashboard = two_nodes
    _, status, logs = submit(env, dashboard, ["python", "-m", "cmmd_dist.tune", "--dataset", "no-such-set"], timeout=300)
    assert status == "FAILED"
    assert "no-such-set" in logs and "Traceback" not in logs, logs[-3000:]


def test_a_driver_without_the_token_is_refused_in_one_line(two_nodes, tmp_path):
    """A sweep started against the token-protected cluster by a client with no RAY_AUTH_MODE=token: one line naming
    what to set, exit 2, before anything is written (Ray alone: 20 s of retries, a 70-line traceback, exit 1)."""
    env, _ = two_nodes
    bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    bare["RAY_ADDRESS"] = f"127.0.0.1:{env['RAY_GCS_PORT']}"
    done = subprocess.run([sys.executable, "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset", "smoke",
                           "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "sweeps"),
                           "--mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          env=bare, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "RAY_AUTH_MODE=token" in lines[0] and "RAY_AUTH_TOKEN" in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweeps").exists()
