"""Tracking against a real shared ``mlflow server`` (SQLite backend, artifacts on SeaweedFS S3).

A small fake sweep (two tiny digits2v trainings, lambda 0.4 and 1) is tracked through
``cmmd_dist.tracking`` exactly as the sweep does it, then checked through the MLflow client, the
REST API the UI reads, the S3 bucket, and a fresh interpreter that loads the registered model.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import requests
import torch
from matplotlib.image import imread

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.tracking.plots import report_figures
from cmmd_dist.tracking.store import Tracker, TrackingError, pull
from cmmd_dist.datasets.tensors import SplitTensors
from cmmd_dist.train.single import fit
from tiny import TINY_WIDE

pytestmark = pytest.mark.integration

LAMBDAS = (0.4, 1.0)


def tiny_run(lam: float):
    return load_run_config(None, {
        "data": {"dataset": "digits2v"},
        "model": TINY_WIDE,
        "loss": {"lam": lam},
        "train": {"epochs": 2, "batch_size": 128, "lr": 2e-3, "progress": False, "baseline": False},
    })


def client_env() -> dict:
    """A client's environment: no S3 credentials (the server proxies artifacts), no default tracking URI."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}


SWEEP_ID = "s3://mlflow/sweeps/sweep-digits2v-20260101-120000"  # what cmmd_dist.tune names a sweep's folder
SWEEP_NAME = SWEEP_ID.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def sweep(mlflow_server):
    """The sweep driver's tracking (``SweepRecorder`` events, then ``finish``), with two real tiny trainings."""
    from cmmd_dist.tune.sweep_tracking import sweep_figures
    from cmmd_dist.tracking.recorder import SweepRecorder

    bundle = load_bundle(tiny_run(0.5).data)
    rec = SweepRecorder("digits2v", None, {"lam": {"dist": "uniform", "low": 0, "high": 1}},
                        tags={"ray_job_id": "test-job"}, sweep_id=SWEEP_ID, uri=mlflow_server.uri)
    tracker, parent = rec.tracker, rec.parent
    trials = []
    for i, lam in enumerate(LAMBDAS):
        trial_id = f"trial-{i}"
        rec.trial_started(trial_id, tiny_run(lam).model_dump())
        run_id = rec.runs[trial_id]
        res = fit(tiny_run(lam), bundle, log=lambda *_: None,
                  on_epoch=lambda row, trial_id=trial_id: rec.trial_result(trial_id, row))
        rec.trial_finished(trial_id)
        trials.append({"lam": lam, "cv_mean": res["val_metric"], "run_id": run_id, "res": res})
    best = min(trials, key=lambda t: t["cv_mean"])
    core, res = best["res"]["model"], best["res"]  # the sweep retrains the best; its training is reused here
    test = SplitTensors.from_split(bundle.test, ["view1"], ["view2"])
    lam1 = trials[-1]["res"]["test"]
    figs = report_figures(core, test, history=res["history"], trials=trials,
                          collapse={"lambda=1": (lam1["collapse_eps"], lam1["collapse"])})
    rows = [{"params": {"loss.lam": t["lam"]}, "best_cv_metric": t["cv_mean"], "cv_std": 0.0, "epochs_run": 2,
             "stopped_early": False, "error": None} for t in trials]
    summary = {"trials": rows, "best": next(r for r in rows if r["params"]["loss.lam"] == best["lam"]),
               "test": res["test"], "trials_failed": 0, "trial_epochs_total": 4, "search_seconds": 12.5}
    figures = sweep_figures(summary)
    uri = rec.finish(core, bundle.spec, res["test"], tiny_run(best["lam"]).model_dump(),
                     {"view1": bundle.test.arrays["view1"][:3]}, {**figs, "summary.json": {"best_lam": best["lam"]}},
                     figures)
    exp = tracker.client.get_run(parent).info.experiment_id
    final = tracker.client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}' and tags.trial_id = 'retrain'")
    return {"tracker": tracker, "parent": parent, "final": final[0].info.run_id, "trials": trials, "uri": uri,
            "core": core, "bundle": bundle, "figs": sorted(figs), "figures": figures}


def test_runs_metrics_and_png_artifacts(sweep, tmp_path):
    c = sweep["tracker"].client
    exp = c.get_experiment_by_name("cmmd-digits2v")
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert [p.info.run_id for p in parents] == [sweep["parent"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep["parent"]]
    assert sorted(r.data.tags["trial_id"] for r in children) == ["retrain", "trial-0", "trial-1"]
    for t in sweep["trials"]:
        hist = c.get_metric_history(t["run_id"], "val_metric")
        assert [m.step for m in hist] == [1, 2]
        assert [m.value for m in hist] == [h["val_metric"] for h in t["res"]["history"]]
        assert c.get_run(t["run_id"]).data.params["loss.lam"] == str(t["lam"])
    assert set(sweep["figs"]) >= {"learning_curves.png", "posterior_collapse.png", "lambda_vs_cv.png",
                                  "latent_embedding.png", "generated_view2.png"}
    local = c.download_artifacts(sweep["final"], "", str(tmp_path))
    for name in sweep["figs"]:
        data = open(os.path.join(local, name), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(os.path.join(local, name)).shape[0] > 50
    assert json.load(open(os.path.join(local, "summary.json")))["best_lam"] in LAMBDAS


def test_artifacts_live_in_the_s3_bucket(sweep, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.settings.access_key,
                      aws_secret_access_key=s3_server.settings.secret_key, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")["Contents"]]
    assert any(k.endswith(f"{sweep['final']}/artifacts/posterior_collapse.png") for k in keys)
    assert any(k.endswith(f"{sweep['final']}/artifacts/model/artifacts/model.pt") for k in keys)


def test_ui_rest_api_lists_the_sweep(sweep, mlflow_server):
    base = mlflow_server.uri
    assert "<html" in requests.get(base + "/", timeout=10).text.lower()
    exps = requests.post(f"{base}/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 100}, timeout=10).json()
    exp_id = next(e["experiment_id"] for e in exps["experiments"] if e["name"] == "cmmd-digits2v")
    runs = requests.post(f"{base}/ajax-api/2.0/mlflow/runs/search", json={"experiment_ids": [exp_id]}, timeout=10).json()
    assert len(runs["runs"]) == 4
    model = requests.get(f"{base}/ajax-api/2.0/mlflow/registered-models/alias",
                         params={"name": "cmmd-digits2v", "alias": "champion"}, timeout=10).json()
    assert model["model_version"]["run_id"] == sweep["final"]


def chromium(url: str, profile, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``, the page given 20 s of virtual time to run its scripts and fetches."""
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--window-size=1600,1000",
                           "--hide-scrollbars", *args, url], capture_output=True, text=True, timeout=180)


NO_CHROMIUM = "headless Chromium not installed (apt-get install chromium)"


@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
def test_ui_runs_table_shows_the_sweep_by_name_with_its_figures(sweep, mlflow_server, tmp_path):
    c = sweep["tracker"].client
    exp_id = c.get_experiment_by_name("cmmd-digits2v").experiment_id
    page = f"{mlflow_server.uri}/#/experiments/{exp_id}/runs"
    out = chromium(page, tmp_path / "profile", "--dump-dom")
    dom = out.stdout
    assert f">{SWEEP_NAME}<" in dom, f"sweep run not in the rendered page ({len(dom)} chars): {out.stderr[-500:]}"
    assert "<strong>4</strong> matching runs" in dom  # the parent, its two trials and the retrain nested beneath
    assert ">Training runs<" in dom  # a model-training experiment, not the GenAI traces view
    # MLflow 3.17's table starts with no metric column: a shared view (what the UI's Share button stores as an
    # experiment tag) picks the sweep's figures as columns
    figures = ["best_cv_mean", "test_error", "trials_pruned"]  # the view the tracker sets on every experiment
    shared = f"{page}?viewStateShareKey=sweep-figures"
    dom = chromium(shared, tmp_path / "profile", "--dump-dom").stdout
    assert f">{SWEEP_NAME}<" in dom
    for figure in figures:
        assert f'col-id="metrics.`{figure}`"' in dom and f">{figure}<" in dom, f"no {figure} column in the runs table"
    shot = tmp_path / "runs.png"
    chromium(shared, tmp_path / "profile", f"--screenshot={shot}")
    assert imread(shot).shape[:2] == (1000, 1600)
    # the sweep run's own page lists its figures without any view set up
    dom = chromium(f"{page}/{sweep['parent']}", tmp_path / "profile", "--dump-dom").stdout
    assert f">{SWEEP_NAME}<" in dom and ">best_cv_mean<" in dom and ">trials_finished<" in dom


@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
def test_ui_champion_page_names_its_sweep_and_figures(sweep, mlflow_server, tmp_path):
    mv = sweep["tracker"].model_version("cmmd-digits2v")
    page = f"{mlflow_server.uri}/#/models/cmmd-digits2v/versions/{mv.version}"
    out = chromium(page, tmp_path / "profile", "--dump-dom")
    dom = out.stdout
    assert f"Champion of sweep {SWEEP_NAME}" in dom, f"no description in the page ({len(dom)} chars): {out.stderr[-500:]}"
    assert 'title="champion"' in dom  # the alias tag
    assert SWEEP_ID in dom and "sweep.best_cv_mean" in dom  # the version's tags
    shot = tmp_path / "champion.png"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}")
    assert imread(shot).shape[:2] == (1000, 1600)


def test_registered_model_in_a_fresh_process_predicts_like_the_model(sweep, mlflow_server, tmp_path):
    x = sweep["bundle"].test.arrays["view1"][:50]
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import mlflow, numpy as np
        from cmmd_dist.tracking.pyfunc import rows_frame
        mlflow.set_tracking_uri({mlflow_server.uri!r})
        model = mlflow.pyfunc.load_model({sweep["uri"]!r})
        df = rows_frame({{"view1": np.load({str(tmp_path / "x.npy")!r})}})
        out = {{t: model.predict(df, params={{"task": t}}) for t in ("classify", "generate", "embed")}}
        np.savez({str(tmp_path / "out.npz")!r}, label=out["classify"]["label"].to_numpy(),
                 probs=np.stack(out["classify"]["probs"]), gen=np.stack(out["generate"]["view2"]), z=np.stack(out["embed"]["z"]))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=client_env(), cwd=tmp_path, timeout=120)
    got = np.load(tmp_path / "out.npz")
    ref = sweep["core"].eval().predict({"view1": torch.from_numpy(x)})
    np.testing.assert_array_equal(got["label"], ref["probs"].argmax(1).numpy())
    np.testing.assert_allclose(got["probs"], ref["probs"].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["gen"], ref["generated"]["view2"].reshape(50, -1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["z"], ref["z"].numpy(), rtol=1e-5, atol=1e-7)
    core, spec = pull("cmmd-digits2v", uri=mlflow_server.uri)
    assert spec.name == "digits2v" and core.cfg == sweep["core"].cfg


def test_bad_names_are_clear_errors(sweep, mlflow_server):
    with pytest.raises(TrackingError, match="no registered model 'cmmd-mnist9'"):
        pull("cmmd-mnist9", uri=mlflow_server.uri)
    with pytest.raises(TrackingError, match="no alias 'staging'"):
        pull("cmmd-digits2v", alias="staging", uri=mlflow_server.uri)


CONCURRENT_LOGGER = """
import sys
from cmmd_dist.tracking.store import Tracker
uri, parent, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracker = Tracker(uri)
run = tracker.trial_run(parent, f"worker-{worker}", {"worker": worker})
for epoch in range(40):  # 200 figures per process, an epoch's five per request as the sweep sends them
    tracker.log_epoch(run, epoch, {f"m{k}": worker * 1000 + epoch * 5 + k for k in range(5)})
tracker.end_run(run)
"""


def test_eight_processes_logging_at_once_lose_nothing(mlflow_server):
    tracker = Tracker(mlflow_server.uri)
    parent = tracker.start_sweep("concurrency", None, {})
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_LOGGER, mlflow_server.uri, parent, str(w)],
                              env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for w in range(8)]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read().decode()[-2000:]
    exp = tracker.client.get_experiment_by_name("cmmd-concurrency")
    runs = tracker.client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == 8
    total = 0
    for r in runs:
        w = int(r.data.params["worker"])
        for k in range(5):
            hist = tracker.client.get_metric_history(r.info.run_id, f"m{k}")
            assert sorted((m.step, m.value) for m in hist) == [(e, w * 1000.0 + e * 5 + k) for e in range(40)]
            total += len(hist)
    assert total == 8 * 200
