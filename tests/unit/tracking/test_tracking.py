"""Tracking on the embedded store (SQLite + artifact folder in a temporary working directory, no server).

One store for the module: creating an MLflow SQLite database costs several seconds of migrations.
"""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.tracking.pyfunc import rows_frame
from cmmd_dist.tracking import (
    SweepRecorder, Tracker, TrackingError, pull, registered_name, resolve_tracking_uri, ui_command,
)


def tiny_core(seed: int = 0) -> CMMD:
    torch.manual_seed(seed)
    cfg = CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                     num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                     classifier_hidden=(8,))
    return CMMD(cfg).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Tracker built with no URI anywhere, in a fresh working directory: the embedded default."""
    cwd, before, env = tmp_path_factory.mktemp("project"), os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(cwd)
    try:
        yield Tracker(), cwd
    finally:
        os.chdir(before)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def test_uri_resolution_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri() == "http://tracking:5000"
    assert resolve_tracking_uri("http://other:1") == "http://other:1"


def test_registered_names():
    assert registered_name("mnist2v") == "cmmd-mnist2v"
    assert registered_name("mst", "mnist", "mnist") == "cmmd-mst"
    assert registered_name("mst", "mnist+svhn", "mnist") == "cmmd-mst-mnist_svhn"


def test_ui_command():
    assert ui_command("http://tracking:5000").startswith("open http://tracking:5000 in a browser")
    assert ui_command("sqlite:////p/mlruns.db").startswith("mlflow ui --backend-store-uri sqlite:////p/mlruns.db --port 5000")


def test_unreachable_server_is_a_clear_error_not_a_hang():
    with pytest.raises(TrackingError, match=r"127\.0\.0\.1:9 is unreachable.*embedded store"):
        Tracker("http://127.0.0.1:9")


def test_sweep_nests_trials_and_a_restarted_trial_continues_its_run(store):
    tracker, cwd = store
    assert tracker.uri == f"sqlite:///{cwd.resolve()}/mlruns.db"
    space = {"lam": {"dist": "uniform", "low": 0.0, "high": 1.0}, "zdim": {"dist": "choice", "values": [4, 8]}}
    parent = tracker.start_sweep("digits2v", None, space, tags={"ray_job_id": "job-1"}, sweep_id="sweep-a")
    runs = {}
    for trial in ("t0", "t1"):
        runs[trial] = tracker.trial_run(parent, trial, {"loss": {"lam": 0.5}, "model": {"zdim": 4, "hidden": [8, 8]}})
        for epoch in (1, 2):
            tracker.log_epoch(runs[trial], epoch, {"cv_mean": 0.5 / epoch, "fold": {"0": 0.4, "1": float("nan")},
                                                   "curve": [1, 2]})
    tracker.end_run(runs["t1"], "KILLED", pruned=True)
    # the restarted trial (and the resumed sweep) get their own runs back, params kept, epochs continue
    assert tracker.start_sweep("digits2v", None, space, sweep_id="sweep-a") == parent
    assert tracker.trial_run(parent, "t1", {"loss": {"lam": 0.5}, "extra": 1}) == runs["t1"]
    tracker.log_epoch(runs["t1"], 3, {"cv_mean": 0.1})

    c = tracker.client
    exp = c.get_experiment_by_name("cmmd-digits2v")
    assert exp.artifact_location.startswith((cwd.resolve() / "mlartifacts").as_uri())
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["trial_id"] for r in children) == ["t0", "t1"]
    p = c.get_run(parent).data
    assert p.tags["kind"] == "sweep" and p.tags["ray_job_id"] == "job-1" and p.tags["dataset"] == "digits2v"
    assert json.loads(p.params["space.zdim.values"]) == [4, 8]
    t1 = c.get_run(runs["t1"])
    assert t1.info.status == "RUNNING" and t1.data.tags["pruned"] == "true"
    assert t1.data.params["loss.lam"] == "0.5" and t1.data.params["model.hidden"] == "[8, 8]"
    assert t1.data.params["extra"] == "1"
    assert [m.step for m in c.get_metric_history(runs["t1"], "cv_mean")] == [1, 2, 3]
    assert [m.value for m in c.get_metric_history(runs["t0"], "fold.0")] == [0.4, 0.4]
    assert c.get_metric_history(runs["t0"], "fold.1") == []  # NaN is no figure
    assert "curve" not in t1.data.metrics


def test_final_run_artifacts(store, tmp_path):
    tracker, _ = store
    parent = tracker.start_sweep("digits2v", None, {})
    final = tracker.retrain_run(parent, {"lam": 0.4})
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    (tmp_path / "config.yaml").write_text("lam: 0.4\n")
    tracker.log_final(final, {"test": {"error": 0.1, "collapse": [0.0, 0.5]}},
                      {"curve.png": fig, "summary.json": {"best": 0.1}, "note.txt": "hello",
                       "config.yaml": tmp_path / "config.yaml"})
    tracker.end_run(final)
    names = {a.path for a in tracker.client.list_artifacts(final)}
    assert names == {"curve.png", "summary.json", "note.txt", "config.yaml"}
    assert tracker.client.get_run(final).data.metrics == {"test.error": 0.1}
    assert tracker.client.get_run(final).data.tags["kind"] == "retrain"


@pytest.fixture(scope="module")
def champion(store):
    """Two registrations of cmmd-digits2v: the champion alias ends on version 2 (seed 1)."""
    tracker, _ = store
    parent = tracker.start_sweep("digits2v", None, {})
    x = np.random.default_rng(0).random((7, 8, 8)).astype(np.float32)
    uris = []
    for seed in (0, 1):
        run = tracker.retrain_run(parent, {"seed": seed}) if seed == 0 else tracker.trial_run(parent, "again", {})
        core = tiny_core(seed)
        uris.append(tracker.register_best(run, core, DIGITS2V_SPEC, {"error": 0.2 - seed / 10, "rmse": 0.3},
                                          "digits2v", None, {"view1": x[:2]}))
    return tracker, core, x, uris


def test_register_pull_and_pyfunc_tasks_match_the_model(champion):
    import mlflow.pyfunc

    tracker, core, x, uris = champion
    assert uris == ["models:/cmmd-digits2v@champion"] * 2
    mv = tracker.model_version("cmmd-digits2v")
    assert str(mv.version) == "2" and mv.tags["metric.error"] == "0.1" and mv.tags["scenario"] == "view1"

    pulled, spec = pull("cmmd-digits2v", uri=tracker.uri)
    assert spec == DIGITS2V_SPEC and not pulled.training
    for a, b in zip(pulled.state_dict().values(), core.state_dict().values()):
        assert torch.equal(a, b)

    folder = tracker.download("cmmd-digits2v")
    model = mlflow.pyfunc.load_model(str(folder))
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["view1"]
    ref = core.predict({"view1": torch.from_numpy(x)})
    df = rows_frame({"view1": x})
    got = model.predict(df, params={"task": "classify"})
    assert list(got["label"]) == list(ref["probs"].argmax(1).numpy())
    np.testing.assert_allclose(np.stack(got["probs"]), ref["probs"].numpy(), rtol=1e-6)
    got = model.predict(df, params={"task": "generate"})
    np.testing.assert_allclose(np.stack(got["view2"]), ref["generated"]["view2"].reshape(7, -1).numpy(), rtol=1e-6)
    got = model.predict(df, params={"task": "embed"})
    np.testing.assert_allclose(np.stack(got["z"]), ref["z"].numpy(), rtol=1e-6)

    with pytest.raises(ValueError, match=r"column 'view1' has 60 floats per row, expected 64"):
        model.predict(rows_frame({"view1": x.reshape(7, -1)[:, :60]}))
    with pytest.raises(ValueError, match="unknown task 'cluster'"):
        model.predict(df, params={"task": "cluster"})


def test_unknown_model_or_alias(champion):
    tracker = champion[0]
    with pytest.raises(TrackingError, match=r"no registered model 'cmmd-nope'.*known: \['cmmd-digits2v'\]"):
        pull("cmmd-nope", uri=tracker.uri)
    with pytest.raises(TrackingError, match=r"no alias 'best'; aliases: \['champion'\]"):
        pull("cmmd-digits2v", alias="best", uri=tracker.uri)


def write_rows(path, columns: dict[str, np.ndarray]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v[0].size)
                             for k, v in columns.items()}), path)


def test_models_cli_list_pull_predict(champion, tmp_path, capsys):
    import pyarrow.parquet as pq

    from cmmd_dist.cli.app import main

    tracker, core, x, _ = champion
    assert main(["models", "list", "--mlflow", tracker.uri]) == 0
    assert "cmmd-digits2v" in capsys.readouterr().out
    assert main(["models", "pull", "cmmd-digits2v", "--mlflow", tracker.uri, "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model" / "MLmodel").exists() and (tmp_path / "m" / "model" / "artifacts" / "model.pt").exists()

    write_rows(tmp_path / "rows.parquet", {"view1": x, "view2": x})
    out = tmp_path / "preds" / "p.parquet"
    assert main(["models", "predict", "cmmd-digits2v", "--mlflow", tracker.uri, "--input", str(tmp_path / "rows.parquet"),
                 "--output", str(out), "--task", "generate"]) == 0
    got = np.stack(pq.read_table(out).column("view2").to_pylist())
    np.testing.assert_allclose(got, core.predict({"view1": torch.from_numpy(x)})["generated"]["view2"].reshape(7, -1),
                               rtol=1e-6)


@pytest.mark.parametrize("columns, message", [
    ({"view2": 64}, "no column 'view1'"),
    ({"view1": 63}, "column 'view1' has 63 floats per row, expected 64"),
])
def test_models_cli_predict_bad_input_writes_nothing(champion, tmp_path, capsys, columns, message):
    from cmmd_dist.cli.app import main

    tracker = champion[0]
    write_rows(tmp_path / "bad.parquet", {k: np.ones((3, w), np.float32) for k, w in columns.items()})
    out = tmp_path / "out.parquet"
    assert main(["models", "predict", "cmmd-digits2v", "--mlflow", tracker.uri, "--input", str(tmp_path / "bad.parquet"),
                 "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.parquet"]


def test_models_cli_unknown_alias(champion, capsys):
    from cmmd_dist.cli.app import main

    assert main(["models", "pull", "cmmd-digits2v", "--alias", "old", "--mlflow", champion[0].uri]) == 2
    assert "no alias 'old'" in capsys.readouterr().err


def test_sweep_recorder_follows_trial_events_and_registers(store):
    """The events a Tune Callback on the sweep driver forwards; a resumed sweep (new recorder) continues."""
    tracker, _ = store
    rec = SweepRecorder("recorder", None, {"lam": [0, 1]}, sweep_id="rec-1", uri=tracker.uri)
    rec.trial_started("a", {"lam": 0.3})
    for it in (1, 2):
        rec.trial_result("a", {"training_iteration": it, "cv_mean": 0.5 / it, "timestamp": 1, "config": {"lam": 0.3},
                               "trial_id": "a"})
    run_a = rec.runs["a"]
    rec.trial_finished("a", pruned=True)
    again = pickle.loads(pickle.dumps(SweepRecorder("recorder", None, {}, sweep_id="rec-1", uri=tracker.uri)))
    assert again.parent == rec.parent
    again.trial_result("a", {"epoch": 3, "cv_mean": 0.1, "config": {"lam": 0.3}})  # no start event after a restore
    assert again.runs["a"] == run_a
    again.trial_finished("a")
    run = tracker.client.get_run(run_a)
    assert run.info.status == "FINISHED" and run.data.tags["pruned"] == "true" and run.data.params["lam"] == "0.3"
    assert set(run.data.metrics) == {"cv_mean"}
    assert [m.step for m in tracker.client.get_metric_history(run_a, "cv_mean")] == [1, 2, 3]
    x = np.zeros((2, 8, 8), np.float32)
    uri = again.finish(tiny_core(), DIGITS2V_SPEC, {"error": 0.5}, {"lam": 0.3}, {"view1": x}, {"summary.json": {"n": 1}})
    assert uri == "models:/cmmd-recorder@champion"
    assert tracker.client.get_run(again.parent).info.status == "FINISHED"


def test_pyfunc_multilabel_classify_lists_classes_above_one_half():
    from cmmd_dist.tracking.pyfunc import CMMDPyfunc

    torch.manual_seed(0)
    cfg = CMMDConfig(observed=(ModalityDef("image", (5,)),), missing=(ModalityDef("tags", (7,), "bernoulli"),),
                     num_classes=4, multilabel=True, zdim=2, encoder_hidden=(8,), prior_hidden=(8,),
                     decoder_hidden=(8,), classifier_hidden=(4,))
    model = CMMDPyfunc()
    model.core = CMMD(cfg).eval()
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    got = model.predict(None, rows_frame({"image": x}), {"task": "classify"})
    probs = np.stack(got["probs"])
    assert probs.shape == (6, 4)
    assert [list(ls) for ls in got["label"]] == [list(np.flatnonzero(p >= 0.5)) for p in probs]
    tags = np.stack(model.predict(None, rows_frame({"image": x}), {"task": "generate"})["tags"])
    assert tags.shape == (6, 7) and ((tags >= 0) & (tags <= 1)).all()
    empty = model.predict(None, rows_frame({"image": x[:0]}), {"task": "classify"})
    assert list(empty.columns) == ["label", "probs"] and len(empty) == 0
