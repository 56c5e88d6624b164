"""The run API that code outside ``cmmd_dist.tracking`` uses (``tune.compare``'s parent run and the sweeps nested
under it), on a real SQLite store in a temporary folder; and that no code outside the package reaches into
``Tracker.client`` or ``Tracker._find``."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import cmmd_dist
from cmmd_dist.tracking.store import Tracker


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    """One store for the module (an MLflow SQLite database costs seconds of migrations)."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('api') / 'mlruns.db'}")


def test_start_run_names_and_tags_a_run_in_the_experiment(tracker):
    exp = tracker.experiment("cmmd-api")
    run_id = tracker.start_run(exp, "compare-x", tags={"kind": "compare", "seeds": 3})
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "compare-x" and run.info.status == "RUNNING"
    assert run.data.tags["kind"] == "compare" and run.data.tags["seeds"] == "3"
    assert tracker.experiment_of(run_id) == exp != tracker.experiment("cmmd-api-other")


def test_find_sweep_run_is_the_sweep_not_its_trials_and_only_in_its_experiment(tracker):
    exp = tracker.experiment("cmmd-api")
    assert tracker.find_sweep_run(exp, "s3://b/sweeps/sweep-api-1") is None
    # a trial's run carries its sweep's sweep_id tag too; this one starts before the sweep's own run
    decoy = tracker.start_run(exp, "t0", tags={"kind": "trial", "sweep_id": "s3://b/sweeps/sweep-api-1"})
    parent = tracker.start_sweep("api", None, {}, sweep_id="s3://b/sweeps/sweep-api-1", experiment="cmmd-api")
    assert parent != decoy
    tracker.start_sweep("api", None, {}, sweep_id="s3://b/sweeps/sweep-api-2", experiment="cmmd-api")
    assert tracker.find_sweep_run(exp, "s3://b/sweeps/sweep-api-1") == parent
    assert tracker.find_sweep_run(tracker.experiment("cmmd-api-other"), "s3://b/sweeps/sweep-api-1") is None


def test_nest_under_makes_a_run_a_child_of_another(tracker):
    exp = tracker.experiment("cmmd-api")
    outer = tracker.start_run(exp, "compare-y", tags={"kind": "compare"})
    sweep = tracker.start_sweep("api", None, {}, sweep_id="sweep-api-nested", experiment="cmmd-api")
    assert "mlflow.parentRunId" not in tracker.client.get_run(sweep).data.tags
    tracker.nest_under(sweep, outer)
    assert tracker.client.get_run(sweep).data.tags["mlflow.parentRunId"] == outer
    assert tracker.find_sweep_run(exp, "sweep-api-nested") == sweep  # still found as the sweep it is


def test_a_tracker_pickles_as_its_uri(tracker):
    again = pickle.loads(pickle.dumps(tracker))
    assert again.uri == tracker.uri and again.experiment("cmmd-api") == tracker.experiment("cmmd-api")


def test_nothing_outside_tracking_reaches_into_the_tracker():
    root = Path(cmmd_dist.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "tracking":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("client", "_find") and not (
                    isinstance(node.value, ast.Name) and node.value.id == "boto3"):
                found.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
    assert found == []
