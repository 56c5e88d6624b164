"""The CV trial worker (``cmmd_dist.tune.trial.cv_worker``) under a real 2-worker TorchTrainer (gloo, CPU).

A tiny Flickr-shaped dataset (``data synth --like flickr``, prepared with the flickr converter) with an
``unlabeled`` split, 3 folds, 2 pretrain + 2 supervised epochs, trained once per module. The worker's
``observe`` hook (a function passed in the config) records each rank's batches (stable row ids, labels,
a fingerprint of the random state) and the latent samples it contributes to the global MMD; a Ray Train
``UserCallback`` records what the workers reported. Checked:
(a) a fold's model pretrains on its own fit rows and the unlabeled rows, never its held-out fold;
(b) ranks draw different noise (their random states differ at every step);
(c) the reported ``train_mmd`` is the global-batch MMD, recomputed here on the concatenated samples;
(d) every report carries its stage, pretrain reports first, epochs numbered on across the stages.
The ``gpu`` tests run the worker on CUDA (one worker, fp32 and bf16): model, optimiser state, batches there.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.synth import synth_like_flickr
from cmmd_dist.datasets.row_ids import SPLIT_CODES
from cmmd_dist.train.folds import assign_folds, development_ids, development_split
from cmmd_dist.model.mmd import mmd
from cmmd_dist.config import Folds
from tiny import TINY

pytestmark = pytest.mark.integration

FOLDS = Folds(k=3, strategy="kfold", seed=0)
PRETRAIN, EPOCHS = 2, 2
UNLABELED = SPLIT_CODES["unlabeled"] * 10**12


class Recorder:
    """The worker's ``observe`` hook: keeps this rank's events, saved to ``<folder>/rank<r>.pt`` after each fold."""

    def __init__(self, folder: str):
        self.folder, self.events = folder, []

    def __call__(self, e: dict) -> None:
        if e["kind"] == "batch":
            rng = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
            self.events.append({**e, "ids": e["ids"].cpu().numpy(), "y": e["y"].cpu(), "rng": rng,
                                "device": str(e["y"].device)})
        elif e["kind"] == "latents":
            self.events.append({**e, "z": e["z"].float().cpu(), "dtype": str(e["z"].dtype), "device": str(e["z"].device)})
        else:  # "trained": where the fold's model and optimiser state live
            state = [t for st in e["optimizer"].state.values() for k, t in st.items() if torch.is_tensor(t) and k != "step"]
            self.events.append({k: e[k] for k in ("kind", "rank", "fold", "stage", "epoch")} |
                               {"params": sorted({str(p.device) for p in e["model"].parameters()}),
                                "optimizer": sorted({str(t.device) for t in state})})
            torch.save(self.events, Path(self.folder) / f"rank{e['rank']}.pt")


def _reports_callback(path: str):
    import ray.train

    class Reports(ray.train.UserCallback):
        """Every report as Ray Train received it, one JSON line per report: the rows of all workers."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps(metrics) + "\n")

    return Reports()


@pytest.fixture(scope="module")
def flickr_tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr")
    synth_like_flickr(root / "src", 60, 30, seed=0)
    prepare("flickr", root / "src", str(root / "prepared"), rows_per_file=64)
    return str(root / "prepared")


def run_trial(ray_session, data: str, out: Path, workers: int, stream: str = "auto",
              **distributed) -> tuple[list[list[dict]], dict[int, list]]:
    """Fit the CV worker once; returns (the reports, each a list of the workers' rows; each rank's events)."""
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    from cmmd_dist.tune.trial import cv_worker

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    out.mkdir()
    run = load_run_config(None, {
        "data": {"dataset": data, "stream": stream, "shuffle_buffer": 16}, "model": TINY,
        "train": {"epochs": EPOCHS, "pretrain_epochs": PRETRAIN, "batch_size": 4, "lr": 1e-3, "patience": 10,
                  "progress": False, "baseline": False},
        "distributed": {"workers": workers, **distributed},
    })
    use_gpu = bool(distributed.get("use_gpu"))
    TorchTrainer(
        cv_worker,
        train_loop_config={"run": run, "folds": FOLDS, "trial_id": "t", "verdicts": None,
                           "observe": Recorder(str(out))},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name=out.name, storage_path=str(out / "ray"),
                                       callbacks=[_reports_callback(str(out / "reports.jsonl"))]),
    ).fit()
    reports = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    events = {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(workers)}
    return reports, events


@pytest.fixture(scope="module")
def trial(ray_session, flickr_tiny, tmp_path_factory):
    return run_trial(ray_session, flickr_tiny, tmp_path_factory.mktemp("cv") / "cpu", workers=2)


@pytest.fixture(scope="module")
def trial_streamed(ray_session, flickr_tiny, tmp_path_factory):
    """The same trial with every fold's rows streamed from the shards (``data.stream: always``)."""
    return run_trial(ray_session, flickr_tiny, tmp_path_factory.mktemp("cv") / "streamed", workers=2, stream="always")


def _batches(events, kind="batch"):
    return [e for e in events if e["kind"] == kind]


@pytest.mark.parametrize("which", ["trial", "trial_streamed"])
def test_a_pretraining_never_sees_the_held_out_fold(which, flickr_tiny, request):
    _, events = request.getfixturevalue(which)
    bundle = load_bundle(load_run_config(None, {"data": {"dataset": flickr_tiny}}).data)
    fold_of = assign_folds(development_split(bundle), FOLDS.k, FOLDS.strategy, FOLDS.seed)
    dev_ids = development_ids(bundle)
    assert {e["epoch"] for e in _batches(events[0]) if e["stage"] == "pretrain"} == set(range(1, PRETRAIN + 1))
    for f in range(FOLDS.k):
        held_out, fit = set(dev_ids[fold_of == f]), set(dev_ids[fold_of != f])
        for stage in ("pretrain", "supervised"):
            for epoch in {e["epoch"] for e in _batches(events[0]) if e["stage"] == stage}:
                seen = {}
                for rank in (0, 1):
                    batches = [e for e in _batches(events[rank]) if (e["fold"], e["stage"], e["epoch"]) == (f, stage, epoch)]
                    seen[rank] = np.concatenate([b["ids"] for b in batches])
                    assert len(set(seen[rank])) == len(seen[rank])  # one pass over the shard
                    assert not set(seen[rank]) & held_out, f"fold {f} {stage} epoch {epoch} rank {rank} used held-out rows"
                    unlabeled = {i for i in seen[rank] if i >= UNLABELED}
                    assert set(seen[rank]) - unlabeled <= fit
                    if stage == "pretrain":
                        assert unlabeled, "pretraining left out the unlabeled rows"
                        assert all(float(b["y"].abs().sum()) == 0 for b in batches), "a label reached pretraining"
                    else:
                        assert not unlabeled
                assert not set(seen[0]) & set(seen[1]), "ranks share rows: not sharded"
                assert len(seen[0]) == len(seen[1])
                if stage == "supervised":  # every fit row once per epoch over the ranks (the remainder < 2 aside)
                    assert len(fit) - 1 <= len(seen[0]) + len(seen[1]) <= len(fit)
        orders = [np.concatenate([b["ids"] for b in _batches(events[0]) if (b["fold"], b["stage"], b["epoch"]) ==
                                  (f, "supervised", e)]) for e in (PRETRAIN + 1, PRETRAIN + 2)]
        assert not np.array_equal(orders[0], orders[1]), "the same order two epochs running"


def test_b_ranks_draw_their_own_noise(trial):
    _, events = trial
    steps = [{(e["fold"], e["stage"], e["epoch"], e["step"]): e["rng"] for e in _batches(events[r])} for r in (0, 1)]
    assert steps[0].keys() == steps[1].keys()
    assert all(steps[0][k] != steps[1][k] for k in steps[0]), "two ranks share a random state"


def test_c_reported_mmd_is_the_global_batch_mmd(trial):
    reports, events = trial
    lat = [{(e["fold"], e["stage"], e["epoch"], e["step"]): e["z"] for e in _batches(events[r], "latents")} for r in (0, 1)]
    rows = {(e["fold"], e["stage"], e["epoch"], e["step"]): len(e["ids"]) for e in _batches(events[0])}
    assert lat[0].keys() == lat[1].keys() == rows.keys()
    for report in reports:
        row = report[0]
        assert report[1]["train_mmd"] == row["train_mmd"]  # every rank reports the group's figures
        per_fold = []
        for f in range(FOLDS.k):
            keys = sorted(k for k in rows if k[:3] == (f, row["stage"], row["epoch"]))
            total = 0.0
            for k in keys:
                n = lat[0][k].shape[0] // 2
                zq = torch.cat([lat[0][k][:n], lat[1][k][:n]])
                zp = torch.cat([lat[0][k][n:], lat[1][k][n:]])
                total += float(mmd(zq, zp)) * rows[k]
            per_fold.append(total / sum(rows[k] for k in keys))
        assert row["train_mmd"] == pytest.approx(float(np.mean(per_fold)), rel=1e-4), row["epoch"]


def test_d_reports_carry_the_stage_in_order(trial):
    reports, events = trial
    rows = [r[0] for r in reports]
    assert [r["stage"] for r in rows] == ["pretrain"] * PRETRAIN + ["supervised"] * EPOCHS
    assert [r["epoch"] for r in rows] == list(range(1, PRETRAIN + EPOCHS + 1))
    assert [r.get("supervised_epoch") for r in rows] == [None] * PRETRAIN + list(range(1, EPOCHS + 1))
    for r in rows[:PRETRAIN]:  # no CV figure before the classifier trains: nothing for ASHA or best-epoch
        assert math.isnan(r["cv_metric"]) and math.isnan(r["best_cv_metric"]) and r["cv_completed"] == 0
    for r in rows[PRETRAIN:]:
        assert 0 <= r["cv_metric"] <= 1 and 1 <= r["best_epoch"] <= EPOCHS
    assert rows[-1]["cv_completed"] == 1
    assert {e["params"][0] for e in events[0] if e["kind"] == "trained"} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_cv_trial_on_gpu(ray_session, flickr_tiny, tmp_path, bf16):
    reports, events = run_trial(ray_session, flickr_tiny, tmp_path / "gpu", workers=1, use_gpu=True, bf16=bf16)
    trained = [e for e in events[0] if e["kind"] == "trained"]
    assert trained and all(e["params"] == ["cuda:0"] and e["optimizer"] == ["cuda:0"] for e in trained)
    assert {e["device"] for e in _batches(events[0])} == {"cuda:0"}
    rows = [r[0] for r in reports]
    assert [r["stage"] for r in rows] == ["pretrain"] * PRETRAIN + ["supervised"] * EPOCHS
    assert all(r["train_mmd"] > 0 and math.isfinite(r["train_loss"]) for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bf16,stream", [(False, "auto"), (True, "auto"), (False, "always")],
                         ids=["fp32", "bf16", "fp32-streamed"])
def test_fold_epochs_on_gpu_in_process(flickr_tiny, bf16, stream):
    """The worker's pieces in this process (one rank, no Ray Train): rows (or streamed batches), model and Adam
    state on CUDA."""
    from cmmd_dist.train.cv import build_folds, cv_epoch
    from cmmd_dist.train.ranks import autocast_for
    from cmmd_dist.train.sources import StreamedRows

    run = load_run_config(None, {"data": {"dataset": flickr_tiny, "stream": stream}, "model": TINY,
                                 "train": {"batch_size": 4, "pretrain_epochs": 1, "progress": False, "baseline": False}})
    device = torch.device("cuda", 0)
    states, _ = build_folds(run, FOLDS, 0, 1, device)
    seen = []
    autocast = autocast_for(device, bf16)
    rows = [cv_epoch(run, states, 1, None, 0, stage, autocast, seen.append, epoch)
            for epoch, stage in enumerate(("pretrain", "supervised"), start=1)]
    assert {str(e["y"].device) for e in seen if e["kind"] == "batch"} == {"cuda:0"}
    for s in states:
        assert {p.device for p in s.core.parameters()} == {device}
        if stream == "always":
            assert isinstance(s.rows.fit, StreamedRows) and s.rows.fit.device == s.rows.pretrain.device == device
        else:
            assert s.rows.fit.base.y.device == device and s.rows.pretrain.base.y.device == device
        state = [t for st in s.optimizer.state.values() for k, t in st.items() if torch.is_tensor(t) and k != "step"]
        assert state and {t.device for t in state} == {device}
    assert all(r["train_mmd"] > 0 and math.isfinite(r["train_loss"]) for r in rows)
