"""Ray Train end to end: 2 gloo workers on CPU, a worker killed mid-training, recovery from the latest
checkpoint (local folder and SeaweedFS S3), the CLI entry, and the GPU path where CUDA exists."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
import torch

from cmmd_dist.cli.app import main as cli_main
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.storage import create_bucket, resolve
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.evaluation.metrics import evaluate_model
from cmmd_dist.train.build import build_model
from cmmd_dist.train.distributed import rank_rows, run_distributed
from crash_drill import CrashOnce
from tiny import TINY_WIDE
from waiting import wait_for

pytestmark = pytest.mark.integration


def tiny_run(tmp_path, epochs: int, **distributed):
    return load_run_config(None, {
        "data": {"dataset": "digits2v", "limit": 256},
        "model": TINY_WIDE,
        "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "progress": False, "baseline": False},
        "distributed": {"workers": 2, "max_failures": 1, "keep_checkpoints": None, **distributed},
        "output_dir": str(tmp_path / "runs"),
    })


def check_recovered(results, marker, epochs: int, crashed_epoch: int) -> None:
    """One real worker death, then epochs resumed from the last checkpoint: no gap, no duplicate."""
    assert marker.exists(), "the injected failure never fired"
    history = results["history"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    assert results["reported_epochs"] == list(range(1, epochs + 1))
    assert results["epochs_run"] == epochs
    # epochs before the crash ran in the first attempt, the rest resumed from the checkpoint before it
    assert [row["resumed_from"] for row in history] == [0] * (crashed_epoch - 1) + [crashed_epoch - 1] * (epochs - crashed_epoch + 1)
    assert all(row["samples_per_s"] > 0 and 0 <= row["val_metric"] <= 1 for row in history)
    assert all(row["train_rows"] == 256 for row in history)  # 2 shards of 128 rows
    assert 0 <= results["test"]["error"] <= 1


def assert_latent_accuracy(test: dict) -> None:
    """The distributed test itself reports the latent classification (logistic regression on training latents):
    above chance (10 classes: 0.10, sd 0.02 on these 256-300 test rows) even for a tiny model trained briefly
    (0.19-0.27 seen; misaligned latents and labels score chance)."""
    assert 0.15 <= test["latent_accuracy"] <= 1, test


def test_two_workers_recover_from_a_killed_worker(ray_session, tmp_path):
    run = tiny_run(tmp_path, epochs=3, storage=str(tmp_path / "ray"), name="local-recovery")
    marker = tmp_path / "crashed"
    results, out = run_distributed(run, on_step=CrashOnce(str(marker), epoch=2, rank=1, step=1))
    check_recovered(results, marker, epochs=3, crashed_epoch=2)
    assert_latent_accuracy(results["test"])
    saved = sorted(p.name for p in (tmp_path / "ray" / "local-recovery").glob("checkpoint_epoch_*"))
    assert saved == [f"checkpoint_epoch_{e:05d}" for e in (1, 2, 3)]
    last = tmp_path / "ray" / "local-recovery" / "checkpoint_epoch_00003"
    assert {p.name for p in last.iterdir()} >= {"state.pt", "rank0.pt", "rank1.pt"}
    state = torch.load(last / "state.pt", weights_only=True)  # a real Ray Train checkpoint loads safely
    assert state["epoch"] == 3 and [r["epoch"] for r in state["history"]] == [1, 2, 3]
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert json.loads((out / "metrics.json").read_text())["test"]["latent_accuracy"] == results["test"]["latent_accuracy"]
    # the protocol on the saved weights, here: the same figure as rank 0's (its 500 of the training rows, their latents)
    bundle = load_bundle(run.data)
    core = build_model(run, bundle.spec)
    core.load_state_dict(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    lead = rank_rows(bundle, run, rank=0, world=2, retrain=False, device="cpu")
    again = evaluate_model(core, lead.test, latent_train=lead.latent, latent_seed=run.train.seed)
    assert again["latent_accuracy"] == pytest.approx(results["test"]["latent_accuracy"], abs=0.01)
    assert (out / "model.pt").exists()


def test_recovery_with_checkpoints_on_s3(ray_session, s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env().items():  # storage handed to Ray carries no keys: the driver brings its own
        monkeypatch.setenv(k, v)
    create_bucket("cmmd-train", s3_server.settings)
    run = tiny_run(tmp_path, epochs=3, storage="s3://cmmd-train/runs", name="s3-recovery")
    marker = tmp_path / "crashed"
    results, _ = run_distributed(run, s3=s3_server.settings, on_step=CrashOnce(str(marker), epoch=3, rank=0, step=2))
    check_recovered(results, marker, epochs=3, crashed_epoch=3)
    assert results["checkpoint"].startswith("cmmd-train/runs/s3-recovery/checkpoint_epoch_00003")
    fs, path = resolve("s3://cmmd-train/runs/s3-recovery/checkpoint_epoch_00003", s3_server.settings)
    from pyarrow import fs as pafs

    names = {info.base_name for info in fs.get_file_info(pafs.FileSelector(path))}
    assert {"state.pt", "rank0.pt", "rank1.pt"} <= names


def test_cli_trains_with_workers_in_bf16_streamed(ray_session, tmp_path, capsys):
    """The CLI path with --workers (and bf16 autocast, on CPU here), the prepared rows streamed from their shards;
    the test figures, latent accuracy included, are the workers' own (in the run's metrics.json)."""
    from cmmd_dist.datasets.prepare import prepare

    prepare("digits2v", None, str(tmp_path / "d2v"), rows_per_file=100, limit=400)
    code = cli_main(["train", "--data", str(tmp_path / "d2v"), "--stream", "always", "--workers", "2", "--bf16",
                     "--epochs", "1", "--batch-size", "32", "--no-progress", "--no-baseline",
                     "--out", str(tmp_path / "runs"), "--storage", str(tmp_path / "ray")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test error" in printed and "latent accuracy" in printed
    assert len(list((tmp_path / "ray").glob("*/checkpoint_epoch_00001"))) == 1
    metrics = json.loads(next((tmp_path / "runs").glob("*/metrics.json")).read_text())
    assert metrics["streamed"]
    assert_latent_accuracy(metrics["test"])


def test_epoch_gauges_reach_the_metrics_agent(ray_session):
    """Where the node runs Ray's metrics agent (ray[default]), the gauges appear in its Prometheus text."""
    port = ray_session.nodes()[0]["MetricsExportPort"]
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except (OSError, ValueError):
        pytest.skip(f"no Ray metrics agent on this node (export port {port}); needs ray[default]")

    @ray_session.remote
    def record() -> None:
        from cmmd_dist.train.metrics import EpochGauges

        EpochGauges("gauge-probe", "digits2v").record({"epoch": 1, "train_rec": 1.0, "train_kl": 2.0, "train_mmd": 0.5,
                                                       "train_ce": 3.0, "val_metric": 0.1, "samples_per_s": 99.0})
        # deliberate: the worker that holds the gauges lives through one export interval (the test then waits
        # for the series to appear, not on the clock)
        time.sleep(12)

    def probe_text() -> str | None:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return text if 'run="gauge-probe"' in text else None

    ray_session.get(record.remote())
    text = wait_for(probe_text, 60, interval=2, what=f'run="gauge-probe" series at {url}')
    for term in ("rec", "kl", "mmd", "ce", "val_metric", "samples_per_s"):
        assert any(line.startswith(f"ray_cmmd_train_{term}{{") and 'run="gauge-probe"' in line for line in text.splitlines())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_worker_with_bf16(ray_session, tmp_path):
    run = tiny_run(tmp_path, epochs=2, workers=1, use_gpu=True, bf16=True, storage=str(tmp_path / "ray"))
    results, _ = run_distributed(run)
    assert [row["epoch"] for row in results["history"]] == [1, 2]
