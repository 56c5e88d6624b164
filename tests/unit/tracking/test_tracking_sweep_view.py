"""What a person sees of a sweep in MLflow, driven through ``SweepRecorder`` on a SQLite store (no Ray):
a model-training experiment (not MLflow 3's GenAI view), the sweep's parent run named by its folder,
the sweep's own figures on that run and on the champion's model version, and the lambda plot.
"""

import numpy as np
import pytest
import torch

from cmmd_dist.tracking import plots
from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.tracking.recorder import SweepRecorder
from cmmd_dist.tracking.schema import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from cmmd_dist.tracking.store import Tracker

SWEEP_ID = "s3://bucket/sweeps/sweep-view2-20260101-120000"


def tiny_core() -> CMMD:
    torch.manual_seed(0)
    return CMMD(CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                           num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                           classifier_hidden=(8,))).eval()


def summary() -> dict:
    """What ``tune.run_sweep`` hands ``finish_sweep``: three trials (one pruned by ASHA, one failed)."""
    trials = [
        {"trial_id": "t0", "params": {"loss.lam": 0.3}, "best_cv_metric": 0.12, "cv_std": 0.01, "epochs_run": 6,
         "stopped_early": False, "error": None},
        {"trial_id": "t1", "params": {"loss.lam": 0.9}, "best_cv_metric": 0.30, "cv_std": 0.02, "epochs_run": 2,
         "stopped_early": True, "error": None},
        {"trial_id": "t2", "params": {"loss.lam": 0.5}, "best_cv_metric": None, "cv_std": None, "epochs_run": 1,
         "stopped_early": True, "error": "RayTaskError"},
    ]
    return {"trials": trials, "best": trials[0], "test": {"error": 0.125, "collapse": [0.0]},
            "trials_failed": 1, "trial_epochs_total": 9, "search_seconds": 42.5}


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sweep-view') / 'mlruns.db'}"


def test_experiments_are_model_development_experiments(uri):
    tracker = Tracker(uri)
    made = tracker.client.get_experiment(tracker.experiment("cmmd-new"))
    assert made.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    # one created before the tag existed (or by hand) is tagged when a sweep next uses it
    old = tracker.client.create_experiment("cmmd-old")
    assert EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(old).tags
    assert tracker.experiment("cmmd-old") == old
    assert tracker.client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_experiments_carry_a_runs_table_view_of_every_sweep_figure(uri):
    import json

    from cmmd_dist.tune.sweep_tracking import sweep_figures
    from cmmd_dist.tracking.schema import SWEEP_COLUMNS, SWEEP_VIEW

    tracker = Tracker(uri)
    tags = tracker.client.get_experiment(tracker.experiment("cmmd-view")).tags
    columns = json.loads(tags[f"mlflow.sharedViewState.{SWEEP_VIEW}"])["selectedColumns"]
    assert set(SWEEP_COLUMNS) <= set(sweep_figures(summary())) | {"test_map"}  # every column is a logged figure
    assert [f"metrics.`{k}`" for k in SWEEP_COLUMNS] == columns


def test_sweep_run_is_named_by_its_folder_and_tagged_with_its_path(uri):
    rec = SweepRecorder("named", None, {}, sweep_id=SWEEP_ID, uri=uri)
    run = rec.tracker.client.get_run(rec.parent)
    assert run.info.run_name == "sweep-view2-20260101-120000"
    assert run.data.tags["sweep_id"] == SWEEP_ID and run.data.tags["kind"] == "sweep"
    unnamed = SweepRecorder("named", None, {}, uri=uri)
    assert rec.tracker.client.get_run(unnamed.parent).info.run_name.startswith("sweep-named-")


def test_sweep_figures_count_finished_pruned_and_failed_trials():
    from cmmd_dist.tune.sweep_tracking import sweep_figures

    assert sweep_figures(summary()) == {
        "best_cv_mean": 0.12, "best_cv_std": 0.01, "trials_finished": 3 - 2, "trials_pruned": 1.0,
        "trials_failed": 1.0, "trial_epochs": 9.0, "wall_s": 42.5, "test_error": 0.125}


def test_finish_puts_the_sweep_figures_on_its_run_and_on_the_champion(uri):
    from cmmd_dist.tune.sweep_tracking import sweep_figures

    rec = SweepRecorder("view2", None, {"lam": [0, 1]}, sweep_id=SWEEP_ID, uri=uri)
    for trial, lam, pruned in (("t0", 0.3, False), ("t1", 0.9, True)):
        rec.trial_started(trial, {"loss.lam": lam})
        rec.trial_result(trial, {"epoch": 1, "cv_metric": lam / 2})
        rec.trial_finished(trial, pruned=pruned)
    figures = sweep_figures(summary())
    model_uri = rec.finish(tiny_core(), DIGITS2V_SPEC, {"error": 0.125}, {"loss.lam": 0.3},
                           {"view1": np.zeros((2, 8, 8), np.float32)}, {"summary.json": {"n": 3}}, figures)
    assert model_uri == "models:/cmmd-view2@champion"
    c = rec.tracker.client
    parent = c.get_run(rec.parent)
    assert parent.info.status == "FINISHED" and parent.data.metrics == figures
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{rec.parent}'")
    assert sorted(r.info.run_name for r in children) == ["retrain", "t0", "t1"]
    assert [r.data.tags.get("pruned") for r in children if r.info.run_name == "t1"] == ["true"]

    mv = c.get_model_version_by_alias("cmmd-view2", "champion")
    assert mv.tags["sweep_id"] == SWEEP_ID and mv.tags["sweep_run_id"] == rec.parent
    assert {k: float(v) for k, v in mv.tags.items() if k.startswith("sweep.")} == {f"sweep.{k}": v for k, v in figures.items()}
    assert mv.tags["metric.error"] == "0.125" and mv.run_id == next(r.info.run_id for r in children
                                                                     if r.info.run_name == "retrain")
    assert mv.description.startswith(f"Champion of sweep sweep-view2-20260101-120000 ({SWEEP_ID}): ")
    assert "best_cv_mean 0.12" in mv.description and "trials_pruned 1" in mv.description


def test_lambda_scatter_draws_pruned_trials_hollow_with_a_legend():
    fig = plots.lambda_scatter([
        {"lam": 0.2, "cv_mean": 0.30, "cv_std": 0.01},
        {"lam": 0.5, "cv_mean": 0.20, "cv_std": 0.02},
        {"lam": 0.8, "cv_mean": 0.05, "pruned": True},  # lowest, but pruned: not comparable, never the best
    ])
    ax = fig.axes[0]
    assert "lower is better" in ax.get_ylabel()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(texts) == ["best lambda=0.50", "pruned (at its last rung)", "ran to the end"]
    points = {tuple(line.get_xdata()): line for line in ax.lines if line.get_marker() == "o"}
    assert set(points) == {(0.2, 0.5), (0.8,)}
    assert points[(0.8,)].get_markerfacecolor() == "none"
    assert points[(0.2, 0.5)].get_markerfacecolor() != "none"
    star = next(line for line in ax.lines if line.get_marker() == "*")
    assert tuple(star.get_xdata()) == (0.5,)
