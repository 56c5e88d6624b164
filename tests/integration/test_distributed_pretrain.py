"""Flickr's recipe under Ray Train: 2 gloo workers pretrain (no label, no classifier term, labelled + unlabeled
rows, both sharded), then train supervised; a worker killed DURING PRETRAINING resumes in pretraining at the
next epoch: every epoch runs once, in its stage, and the checkpoints record the stage.

The ``gpu`` tests (skipped without CUDA) run the single process, ``--workers`` and the champion retrain on CUDA,
fp32 and bf16: model, optimiser state and batches there."""

from __future__ import annotations

import json

import pytest
import torch

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.synth import synth_like_flickr
from cmmd_dist.train.distributed import retrain_distributed, run_distributed
from crash_drill import CrashOnce
from tiny import TINY

pytestmark = pytest.mark.integration

PRETRAIN, EPOCHS = 3, 2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def flickr_tiny(tmp_path_factory) -> str:
    """60 labelled rows (train 24, val 12, test 24) and about 20 unlabeled ones, prepared by the flickr converter."""
    root = tmp_path_factory.mktemp("flickr")
    synth_like_flickr(root / "src", 60, 30, seed=0)
    prepare("flickr", root / "src", str(root / "prepared"), rows_per_file=64)
    return str(root / "prepared")


def tiny_run(tmp_path, data: str, workers: int = 2, **distributed):
    return load_run_config(None, {
        "data": {"dataset": data}, "model": TINY,
        "train": {"epochs": EPOCHS, "pretrain_epochs": PRETRAIN, "batch_size": 4, "lr": 1e-3, "patience": 10,
                  "progress": False, "baseline": False},
        "distributed": {"workers": workers, "max_failures": 1, "keep_checkpoints": None,
                        "storage": str(tmp_path / "ray"), **distributed},
        "output_dir": str(tmp_path / "runs"),
    })


def test_a_worker_killed_during_pretraining_resumes_in_pretraining(ray_session, flickr_tiny, tmp_path):
    bundle = load_bundle(load_run_config(None, {"data": {"dataset": flickr_tiny}}).data)
    labelled, unlabeled = len(bundle.train), len(bundle.extra["unlabeled"])
    assert unlabeled > 0
    marker = tmp_path / "crashed"
    run = tiny_run(tmp_path, flickr_tiny, name="pretrain-recovery")
    results, out = run_distributed(run, on_step=CrashOnce(str(marker), epoch=2, rank=1, step=1))

    assert marker.exists(), "the injected failure never fired"
    history = results["history"]
    stages = ["pretrain"] * PRETRAIN + ["supervised"] * EPOCHS
    assert [(r["stage"], r["epoch"]) for r in history] == list(zip(stages, range(1, PRETRAIN + EPOCHS + 1)))
    assert [r.get("pretrain_epoch") for r in history[:PRETRAIN]] == list(range(1, PRETRAIN + 1))
    assert [r.get("supervised_epoch") for r in history[PRETRAIN:]] == list(range(1, EPOCHS + 1))
    # killed in epoch 2 (pretraining): epoch 1 ran in the first attempt, the rest resumed from its checkpoint
    assert [r["resumed_from"] for r in history] == [0] + [1] * (PRETRAIN + EPOCHS - 1)
    assert results["reported_epochs"] == list(range(1, PRETRAIN + EPOCHS + 1))
    # pretraining: labelled and unlabeled rows, each sharded in equal parts, and no classifier term
    shard = lambda n: (n // 2) * 2  # noqa: E731 (2 equal shards, the tail dropped)
    for r in history[:PRETRAIN]:
        assert r["train_rows"] == shard(labelled) + shard(unlabeled) and r["train_ce"] == 0.0
        assert "val_metric" not in r and r["val_rmse"] > 0
    for r in history[PRETRAIN:]:
        assert r["train_rows"] == shard(labelled) and r["train_ce"] > 0 and 0 <= r["val_metric"] <= 1
    assert 1 <= results["best_epoch"] <= EPOCHS and 0 <= results["test"]["map"] <= 1

    folder = tmp_path / "ray" / "pretrain-recovery"
    recorded = {}
    for e in (2, PRETRAIN, PRETRAIN + 1):
        state = torch.load(folder / f"checkpoint_epoch_{e:05d}" / "state.pt", weights_only=True)
        recorded[e] = (state["stage"], state["stage_epoch"])
    assert recorded == {2: ("pretrain", 2), PRETRAIN: ("pretrain", PRETRAIN), PRETRAIN + 1: ("supervised", 1)}
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == stages


def test_a_retrain_left_half_done_goes_on_from_its_checkpoint(ray_session, flickr_tiny, tmp_path):
    """The champion retrain after its driver died: started again under the same name (what the sweep's
    --resume does), it continues from the latest checkpoint, in the stage it was in; here the first attempt
    ends mid-way because its worker group dies with no restarts left."""
    import ray.train

    bundle = load_bundle(load_run_config(None, {"data": {"dataset": flickr_tiny}}).data)
    run = tiny_run(tmp_path, flickr_tiny, name="retrain-e2", max_failures=0)
    marker = tmp_path / "crashed"
    with pytest.raises(ray.train.TrainingFailedError):
        retrain_distributed(run, epochs=2, on_step=CrashOnce(str(marker), epoch=3, rank=1, step=0))
    assert marker.exists()
    res = retrain_distributed(run, epochs=2)
    history = res["history"]
    assert [(r["stage"], r["resumed_from"]) for r in history] == [("pretrain", 0), ("pretrain", 0)] + [
        ("pretrain", 2)] * (PRETRAIN - 2) + [("supervised", 2)] * 2
    dev = ((len(bundle.train) + len(bundle.val)) // 2) * 2  # a retrain trains on train+val, sharded
    assert all(r["train_rows"] == dev and "val_metric" not in r for r in history[PRETRAIN:])
    assert res["workers"] == 2 and 0 <= res["test"]["map"] <= 1
    assert next(res["model"].parameters()).device.type == "cpu"  # for the registry: loadable anywhere


def _check_on_cuda(results: dict) -> None:
    assert results["device"].startswith("cuda")
    for kind in ("params", "optimizer", "batches"):
        assert results["placement"][kind] and all(d.startswith("cuda") for d in results["placement"][kind]), kind


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_single_process_trains_on_cuda(flickr_tiny, tmp_path, bf16):
    from cmmd_dist.train.single import fit

    run = tiny_run(tmp_path, flickr_tiny, workers=1, use_gpu=True, bf16=bf16)  # --use-gpu without --workers
    results = fit(run, load_bundle(run.data))
    _check_on_cuda(results)
    assert [r["stage"] for r in results["history"]] == ["pretrain"] * PRETRAIN + ["supervised"] * EPOCHS


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_workers_train_on_cuda(ray_session, flickr_tiny, tmp_path, bf16):
    workers = min(2, torch.cuda.device_count())
    results, _ = run_distributed(tiny_run(tmp_path, flickr_tiny, workers=workers, use_gpu=True, bf16=bf16))
    _check_on_cuda(results)
    assert results["workers"] == workers and len(results["history"]) == PRETRAIN + EPOCHS


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_champion_retrain_on_cuda(ray_session, flickr_tiny, tmp_path, bf16):
    workers = min(2, torch.cuda.device_count())
    res = retrain_distributed(tiny_run(tmp_path, flickr_tiny, workers=workers, use_gpu=True, bf16=bf16, name="retrain"),
                              epochs=2)
    _check_on_cuda(res)
    assert res["workers"] == workers and [r["stage"] for r in res["history"]] == ["pretrain"] * PRETRAIN + ["supervised"] * 2
    assert next(res["model"].parameters()).device.type == "cpu"  # for the registry: loadable anywhere
