"""k-fold cross-validation inside one sweep trial, on Ray Train workers.

The k fold models advance TOGETHER, epoch by epoch: each epoch trains every fold model one pass
over its own fit rows (sharded across the DDP workers, MMD over the global batch), then validates
each on its held-out fold, and the trial reports the fold mean (``cv_metric``), its spread and the
per-fold figures. A scheduler (ASHA) therefore prunes on the cross-validated figure, never on one
fold. ``cv_completed`` is 1 only on the report that ends the trial by itself (last epoch, or patience
ran out), so a searcher can tell a finished trial from one stopped early by the scheduler.
"""

from __future__ import annotations

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.evaluate import evaluate_model
from cmmd_dist.folds import assign_folds, development_split, fold_parts
from cmmd_dist.model import CMMD
from cmmd_dist.search_space import Folds
from cmmd_dist.train.batches import SplitTensors, iterate_batches
from cmmd_dist.train.build import loss_weights, model_config
from cmmd_dist.train.gather import gather_for
from cmmd_dist.train.loop import train_epoch
from cmmd_dist.train.optim import make_optimizer
from cmmd_dist.train.single import seed_everything

__all__ = ["cv_worker", "FoldState", "build_folds", "cv_epoch"]


class FoldState:
    """One fold's model, optimiser, shuffle generator and data (this rank's fit shard, all its val rows)."""

    def __init__(self, run: RunConfig, spec, fit_rows: SplitTensors, val_rows: SplitTensors, fold: int, rank: int):
        seed_everything(run.train.seed + 1000 * fold)  # same initial weights on every rank
        self.core = CMMD(model_config(run, spec))
        self.optimizer = make_optimizer(self.core.parameters(), run.train)
        self.gen = torch.Generator().manual_seed(run.train.seed + 1000 * fold + 7919 * rank)
        self.fit_rows, self.val_rows = fit_rows, val_rows
        self.model: torch.nn.Module = self.core


def build_folds(run: RunConfig, folds: Folds, rank: int, world: int) -> tuple[list[FoldState], object]:
    """Every fold's state on this rank, from the dataset's train+val rows (the test split is not loaded into CV)."""
    bundle = load_bundle(run.data)
    dev = development_split(bundle)
    ids = assign_folds(dev, folds.k, folds.strategy, folds.seed)
    observed, missing = bundle.spec.split_modalities(run.data.scenario)
    obs, mis = [m.name for m in observed], [m.name for m in missing]
    states = []
    for f in range(folds.k):
        fit_split, val_split = fold_parts(dev, ids, f)
        fit_rows = SplitTensors.from_split(fit_split, obs, mis).shard(rank, world)
        states.append(FoldState(run, bundle.spec, fit_rows, SplitTensors.from_split(val_split, obs, mis), f, rank))
    return states, bundle.spec


def cv_epoch(run: RunConfig, states: list[FoldState], world: int, gather, rank: int) -> dict:
    """Train every fold model one epoch and validate it (rank 0 validates; the figures are broadcast)."""
    w = loss_weights(run)
    losses, seconds, rows = [], 0.0, 0.0
    for s in states:
        m = train_epoch(s.model, s.core, iterate_batches(s.fit_rows, run.train.batch_size, s.gen), s.optimizer, w,
                        gather=gather, world_size=world)
        losses.append(m)
        seconds += m["seconds"]
        rows += m["rows"]
    metrics = torch.zeros(2, len(states), dtype=torch.float64)  # (metric, rmse of the generated views) per fold
    if rank == 0:
        for i, s in enumerate(states):
            ev = evaluate_model(s.core, s.val_rows, with_collapse=False)
            metrics[0, i], metrics[1, i] = ev["metric"], ev["rmse"]
    if world > 1:
        dist.broadcast(metrics, src=0)
    folds, rmses = metrics.tolist()
    out = {"cv_metric": float(np.mean(folds)), "cv_std": float(np.std(folds)), "cv_rmse": float(np.mean(rmses)),
           "samples_per_s": rows * world / seconds if seconds > 0 else 0.0}
    out.update({f"fold{i}_metric": v for i, v in enumerate(folds)})
    for term in ("rec", "kl", "mmd", "ce", "loss"):
        out[f"train_{term}"] = float(np.mean([m[term] for m in losses]))
    return out


def wait_for_verdict(verdicts: str, trial_id: str, epoch: int, rank: int, world: int, timeout_s: float = 120.0) -> bool:
    """Whether the scheduler stopped this trial at ``epoch`` (rank 0 asks; every rank gets the answer)."""
    import time

    stop = torch.zeros(1)
    if rank == 0:
        actor, deadline = ray.get_actor(verdicts), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = ray.get(actor.get.remote(trial_id))
            if seen is not None and seen[0] >= epoch:
                stop[0] = float(seen[1])
                break
            time.sleep(0.05)
    if world > 1:
        dist.broadcast(stop, src=0)
    return bool(stop[0])


def cv_worker(config: dict) -> None:
    """Ray Train worker loop of one trial: ``config`` = {'run': RunConfig, 'folds': Folds, 'trial_id', 'verdicts'}.

    With ``verdicts`` (the name of the scheduler's verdict actor) the trial ends itself when ASHA says stop."""
    run: RunConfig = config["run"]
    folds: Folds = config["folds"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(run.train.threads or run.distributed.cpus_per_worker)
    states, _ = build_folds(run, folds, rank, world)
    for s in states:
        s.model = ray.train.torch.prepare_model(s.core, move_to_device=False) if world > 1 else s.core
    gather = gather_for(run.loss.mmd_scope)
    best, best_epoch, best_rmse = float("inf"), 0, float("nan")
    for epoch in range(1, run.train.epochs + 1):
        row = cv_epoch(run, states, world, gather, rank)
        if row["cv_metric"] < best:
            best, best_epoch, best_rmse = row["cv_metric"], epoch, row["cv_rmse"]
        patience_out = epoch - best_epoch >= run.train.patience
        row.update(epoch=epoch, best_cv_metric=best, best_epoch=best_epoch, best_cv_rmse=best_rmse,
                   cv_completed=int(epoch == run.train.epochs or patience_out))
        ray.train.report(row)
        if row["cv_completed"]:
            break
        if config.get("verdicts") and wait_for_verdict(config["verdicts"], config["trial_id"], epoch, rank, world):
            break
