"""``cmmd-dist compare`` end to end at a tiny budget: CMMD and M-x_o on digits2v (smoke preset, 2 trials per sweep,
2 seeds), on real local Ray and an MLflow SQLite store: the table, its files, and the MLflow parent run."""

import json

import pytest
import yaml

from cmmd_dist.tune.compare import run_compare
from cmmd_dist.config import SweepConfig

pytestmark = pytest.mark.integration


def test_compare_two_kinds_two_seeds(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    settings = SweepConfig(dataset="digits2v", preset="smoke", num_trials=2, workers_per_trial=1, seed=0,
                           output_dir=str(tmp_path / "out"), storage=str(tmp_path / "sweeps"), mlflow=uri, name="cmp")
    result = run_compare(settings, ["cmmd", "mx_o"], seeds=2)

    folder = tmp_path / "out" / "cmp"
    on_disk = json.loads((folder / "compare.json").read_text())
    models = on_disk["models"]
    assert list(models) == ["cmmd", "mx_o"] and on_disk["seeds"] == 2
    for m in models.values():
        assert m["seeds"] == [0, 1] and len(m["per_seed"]) == 2
        assert 0 <= m["test_error_mean"] < 0.9 and len(m["test_error_ci95"]) == 2
        assert 0 < m["latent_accuracy_mean"] <= 1
    assert models["cmmd"]["rmse_mean"] > 0 and 0 <= models["cmmd"]["collapsed_1nat_mean"] <= 1
    assert "rmse_mean" not in models["mx_o"] and "collapse_mean" not in models["mx_o"]
    assert set(on_disk["beats_mx_o"]) == {"cmmd"} and "M-x_o" in on_disk["verdict"]
    # each kind swept its own space: M-x_o fixed, lambda (which it does not read) not searched
    space = yaml.safe_load((folder / "spaces" / "mx_o.yaml").read_text())
    assert space["fixed"]["model"]["kind"] == "mx_o" and "loss.lam" not in space["params"]
    assert "loss.lam" not in on_disk["sweeps"]["mx_o"]["best_params"]
    assert "loss.lam" in on_disk["sweeps"]["cmmd"]["best_params"]
    text = (folder / "compare.md").read_text()
    assert "| cmmd | 2 |" in text and "| mx_o | 2 |" in text and on_disk["verdict"] in text
    assert (folder / "collapse.png").stat().st_size > 0

    # MLflow: a FINISHED parent run with the table's means and files, the two sweeps nested under it
    client = MlflowClient(uri)
    parent = client.get_run(result["run_id"])
    assert parent.data.tags["kind"] == "compare" and parent.info.status == "FINISHED"
    assert parent.data.metrics["cmmd.test_error_mean"] == pytest.approx(models["cmmd"]["test_error_mean"])
    assert parent.data.metrics["mx_o.test_error_mean"] == pytest.approx(models["mx_o"]["test_error_mean"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"compare.json", "compare.md", "collapse.png"}
    nested = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["sweep_id"] for r in nested) == sorted(s["sweep"] for s in on_disk["sweeps"].values())
    assert {m.name for m in client.search_registered_models()} == {"cmmd-digits2v", "mx_o-digits2v"}
