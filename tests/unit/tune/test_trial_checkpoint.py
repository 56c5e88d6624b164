"""A 1-worker trial's epoch checkpoints (``cmmd_dist.tune.trial.TrialCheckpoints``), in process, no Tune session:
a trial restarted from the checkpoint of epoch e reports epochs e+1.. only, with the very figures of the trial that
was never stopped (fold models, optimisers, shuffle generators, RNG states and early-stopping state restored; the
supervised stage's fresh optimiser after pretraining too); a restarted trial whose checkpoint ended it reports nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import ray.tune
import torch

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.config import Folds
from cmmd_dist.tune.trial import TrialCheckpoints, cv_loop
from tiny import TINY

FOLDS = Folds(k=2, strategy="stratified", seed=0)
TIMING = ("seconds", "samples_per_s", "rows_per_s")


class Store:
    """Tune's side, played here: each report's checkpoint folder copied away (``ray.tune.report`` copies it too)."""

    def __init__(self, root: Path):
        self.root, self.rows, self.checkpoints = root, [], []

    def report(self, row: dict, checkpoint) -> None:
        dst = self.root / f"checkpoint_{len(self.rows):06d}"
        shutil.copytree(checkpoint.path, dst)
        self.rows.append(row)
        self.checkpoints.append(ray.tune.Checkpoint.from_directory(str(dst)))

    def run(self, run, latest=None) -> list[dict]:
        cv_loop(run, FOLDS, 0, 1, "cpu", report=None, keep=TrialCheckpoints(self.report, lambda: latest))
        return self.rows


@pytest.fixture(autouse=True)
def one_thread():
    """As the trial itself sets (``train.threads``): tiny nets on many threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def figures(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING)}


@pytest.mark.parametrize("pretrain,epochs", [(0, 3), (1, 2)])
def test_a_restarted_trial_continues_after_its_checkpoint_as_if_never_stopped(tmp_path, pretrain, epochs):
    run = load_run_config(None, {"data": {"dataset": "digits2v", "limit": 240}, "model": TINY,
                                 "train": {"epochs": epochs, "patience": epochs, "pretrain_epochs": pretrain,
                                           "batch_size": 32, "seed": 0, "progress": False, "baseline": False}})
    full = Store(tmp_path / "full")
    rows = full.run(run)
    total = pretrain + epochs
    assert [r["epoch"] for r in rows] == list(range(1, total + 1)) and rows[-1]["cv_completed"] == 1
    for done in range(1, total):  # restarted after each epoch but the last (at the stage change too)
        again = Store(tmp_path / f"after{done}").run(run, latest=full.checkpoints[done - 1])
        assert [r["epoch"] for r in again] == list(range(done + 1, total + 1)), done
        for got, want in zip(again, rows[done:]):
            assert figures(got) == figures(want), (done, got["epoch"])
    assert Store(tmp_path / "ended").run(run, latest=full.checkpoints[-1]) == []


def test_a_checkpoint_of_another_fold_count_is_refused(tmp_path):
    from cmmd_dist.errors import UserError

    run = load_run_config(None, {"data": {"dataset": "digits2v", "limit": 240}, "model": TINY,
                                 "train": {"epochs": 1, "patience": 1, "batch_size": 32, "progress": False,
                                           "baseline": False}})
    one = Store(tmp_path / "k2")
    one.run(run)
    with pytest.raises(UserError, match="2 fold models, the trial has 3 folds"):
        cv_loop(run, Folds(k=3, strategy="stratified", seed=0), 0, 1, "cpu", report=None,
                keep=TrialCheckpoints(one.report, lambda: one.checkpoints[0]))
