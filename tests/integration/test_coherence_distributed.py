"""Coherence on the Ray Train path: ``cmmd-dist train --workers N`` (and so a sweep's retrains and compare's
seeds) on mst reports the coherence figures, judged on the driver by the cached unimodal judges."""

import json
import os
from pathlib import Path

import pytest

from cmmd_dist.evaluation import coherence
from cmmd_dist.evaluation.coherence import Recipe
from cmmd_dist.config import RunConfig
from tiny import TINY

pytestmark = pytest.mark.integration

MNIST_PKL = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.pkl.gz"


def test_a_distributed_run_on_mst_reports_coherence(ray_session, svhn_writer, tmp_path, monkeypatch):
    from cmmd_dist.train.distributed import run_distributed

    mnist = Path(os.environ.get("CMMD_MNIST_PATH") or MNIST_PKL)
    if not mnist.is_file():
        pytest.skip(f"real MNIST not found at {mnist} (set CMMD_MNIST_PATH)")
    src = tmp_path / "mst-source"
    src.mkdir()
    svhn_writer(src, 100, 40)
    (src / "mnist.pkl.gz").symlink_to(mnist.resolve())
    monkeypatch.setattr(coherence, "DEFAULT_RECIPE", Recipe(epochs=1, min_steps=30, batch_size=32))  # the driver's
    run = RunConfig.model_validate({
        "data": {"dataset": "mst", "source": str(src), "limit": 200, "scenario": "mnist"},
        "model": TINY,
        "train": {"epochs": 1, "batch_size": 50, "progress": False, "baseline": False, "threads": 1},
        "distributed": {"workers": 1, "storage": str(tmp_path / "ray")},
        "output_dir": str(tmp_path / "runs")})
    results, out = run_distributed(run, log=lambda *a: None)
    test = results["test"]
    assert 0.0 <= test["coherence"] <= 1.0
    assert {"coherence_svhn", "coherence_text", "coherence_ceiling_svhn", "coherence_ceiling_text"} <= set(test)
    judges = Path(results["coherence_judges"])
    assert judges.parent == tmp_path / "runs" / "coherence" and judges.is_file()
    assert json.loads((out / "metrics.json").read_text())["test"]["coherence"] == test["coherence"]
