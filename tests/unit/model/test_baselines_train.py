"""The baselines through the platform: ``model.kind`` in the run config, built by ``train.build``, trained by
the single-process loop and evaluated like CMMD (error, RMSE, collapse, latent classification), and the CLI."""

import json
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from cmmd_dist.config import ModelConfig
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.train.build import build_model
from cmmd_dist.train.single import fit
from tiny import TINY_WIDE


def run_of(kind: str, **model):
    return load_run_config(None, {
        "data": {"dataset": "digits2v", "limit": 150},
        "model": {**TINY_WIDE, "kind": kind, **model},
        "train": {"epochs": 2, "batch_size": 50, "lr": 1e-3, "progress": False, "baseline": False},
    })


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(run_of("vcca").data)


def test_model_kind_is_checked():
    with pytest.raises(ValidationError, match="kind"):
        ModelConfig(kind="dcca")
    with pytest.raises(ValidationError, match="mmvae_k >= 2"):
        ModelConfig(kind="mmvae", mmvae_objective="iwae", mmvae_k=1)
    assert ModelConfig().kind == "cmmd"


@pytest.mark.parametrize("kind, cls", [("cmmd", "CMMD"), ("vcca", "VCCA"), ("mvae", "MVAE"), ("mmvae", "MMVAE"),
                                       ("mx_o", "MxO")])
def test_build_model_by_kind(bundle, kind, cls):
    model = build_model(run_of(kind, beta=0.5), bundle.spec)
    assert type(model).__name__ == cls
    if kind != "cmmd":
        assert model.params.kind == kind and model.cfg.zdim == 4
    if kind in ("vcca", "mvae"):
        assert model.params.beta == 0.5


@pytest.mark.parametrize("kind, extra", [("vcca", {}), ("mvae", {}), ("mmvae", {"mmvae_objective": "iwae", "mmvae_k": 3}),
                                         ("mx_o", {})])
def test_fit_trains_and_evaluates_every_kind(bundle, kind, extra):
    res = fit(run_of(kind, **extra), bundle, log=lambda *a: None)
    assert type(res["model"]).__name__ == {"vcca": "VCCA", "mvae": "MVAE", "mmvae": "MMVAE", "mx_o": "MxO"}[kind]
    history = res["history"]
    assert len(history) == 2 and all(row["train_mmd"] == 0 for row in history)
    test = res["test"]
    assert 0 <= test["error"] <= 1 and 0 <= test["latent_accuracy"] <= 1
    if kind == "mx_o":  # no posterior, nothing generated
        assert "collapse" not in test and test["rmse_by_modality"] == {} and history[0]["train_kl"] == 0
    else:
        assert test["rmse"] > 0 and set(test["rmse_by_modality"]) == {"view2"}
        assert len(test["collapse"]) == len(test["collapse_eps"]) and all(0 <= c <= 1 for c in test["collapse"])
        assert history[-1]["train_kl"] > 0 and history[-1]["train_rec"] < history[0]["train_rec"]


def test_cli_trains_a_baseline_from_its_config(tmp_path):
    config = tmp_path / "mmvae.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "digits2v", "limit": 120},
                                      "model": {**TINY_WIDE, "kind": "mmvae", "mmvae_objective": "iwae", "mmvae_k": 2}}))
    out = subprocess.run([sys.executable, "-m", "cmmd_dist.train", "--config", str(config), "--epochs", "1",
                          "--no-progress", "--no-baseline", "--out", str(tmp_path / "runs")],
                         capture_output=True, text=True, check=True)
    assert "test error" in out.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["kind"] == "mmvae"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "latent_accuracy" in metrics["test"] and "collapse" in metrics["test"]
