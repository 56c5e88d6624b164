"""Flickr's recipe as a sweep, end to end on real local Ray and a throwaway SQLite MLflow store:

    python -m cmmd_dist.tune --dataset flickr --data <synth prepared> --preset smoke --workers-per-trial 2

on ``data synth --like flickr`` rows prepared by the flickr converter (an ``unlabeled`` split included). Every
trial pretrains then trains supervised; the champion is retrained on 2 Ray Train workers (pretraining
included), registered, and its test mAP beats a random ranking's by ``MAP_MARGIN``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.synth import synth_like_flickr
from cmmd_dist.evaluation.metrics import classification_metrics
from cmmd_dist.tune.search_space import load_search_space
from cmmd_dist.tune import main as tune_main

pytestmark = pytest.mark.integration

ROWS, UNLABELLED = 300, 150  # test split: 120 rows, 38 labels
MAP_MARGIN = 0.05  # champion's test mAP over a random ranking's (seed 0: about 0.25 against 0.13)


def random_ranking_map(labels: np.ndarray, draws: int = 50) -> float:
    """A random ranking's mAP on these labels: the mean label prevalence on a large split, more on a small
    one (a rare label's single positive lands high by chance), so both are computed and the larger kept."""
    rng = np.random.default_rng(0)
    drawn = np.mean([classification_metrics(rng.random(labels.shape), labels, True)["map"] for _ in range(draws)])
    prevalence = labels[:, labels.sum(axis=0) > 0].mean()
    return float(max(drawn, prevalence))


def test_flickr_smoke_sweep_pretrains_retrains_on_two_workers_and_registers(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    from cmmd_dist.config import DataConfig
    from cmmd_dist.datasets.registry import load_bundle

    synth_like_flickr(tmp_path / "src", ROWS, UNLABELLED, seed=0)
    data = str(tmp_path / "prepared")
    prepare("flickr", tmp_path / "src", data, rows_per_file=256)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = tune_main(["--dataset", "flickr", "--data", data, "--preset", "smoke", "--workers-per-trial", "2",
                      "--name", "flickr-smoke", "--storage", str(tmp_path / "sweeps"), "--out", str(tmp_path / "out"),
                      "--mlflow", uri])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "flickr-smoke-summary.json").read_text())
    pretrain = load_search_space("flickr").with_preset("smoke").fixed["train"]["pretrain_epochs"]
    assert pretrain >= 1

    # every trial: the pretraining epochs first, then supervised ones (as many as ASHA let it run)
    trials = sorted((tmp_path / "sweeps" / "flickr-smoke").glob("*/result.json"))
    assert len(trials) == len(summary["trials"]) >= 2
    for f in trials:
        stages = [json.loads(line)["stage"] for line in f.read_text().splitlines() if line.strip()]
        supervised = len(stages) - pretrain
        assert supervised >= 1 and stages == ["pretrain"] * pretrain + ["supervised"] * supervised, f.parent.name

    # the retrain: a Ray Train run of 2 workers (each rank wrote its part of every checkpoint), pretraining first
    assert summary["retrain_workers"] == 2 and summary["retrain_pretrain_epochs"] == pretrain
    last = Path(summary["retrain_checkpoint"])
    assert {"state.pt", "rank0.pt", "rank1.pt"} <= {p.name for p in last.iterdir()}
    history = torch.load(last / "state.pt", weights_only=True)["history"]
    assert [r["stage"] for r in history] == ["pretrain"] * pretrain + ["supervised"] * summary["retrain_epochs"]

    # registered, and better than chance on the untouched test split
    version = MlflowClient(uri).get_model_version_by_alias("cmmd-flickr", "champion")
    assert version.run_id and summary["model_uri"]
    labels = load_bundle(DataConfig(dataset=data)).test.labels
    chance = random_ranking_map(labels)
    assert summary["test"]["map"] > chance + MAP_MARGIN, (summary["test"]["map"], chance)
