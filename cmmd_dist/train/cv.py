"""k-fold cross-validation inside one sweep trial, on Ray Train workers.

The k fold models advance TOGETHER, epoch by epoch: each epoch trains every fold model one pass
over its own fit rows (sharded across the DDP workers, MMD over the global batch), then validates
each on its held-out fold, and the trial reports the fold mean (``cv_metric``), its spread and the
per-fold figures. A scheduler (ASHA) therefore prunes on the cross-validated figure, never on one
fold. ``cv_completed`` is 1 only on the report that ends the trial by itself (last epoch, or patience
ran out), so a searcher can tell a finished trial from one stopped early by the scheduler.

Stages (Flickr's recipe): with ``train.pretrain_epochs`` every fold model first trains that many epochs
with no label to the encoder and no classifier term, on ITS OWN fit rows plus the dataset's
``unlabeled`` rows (never its held-out fold; the unlabeled rows are sharded over the ranks like the
rest), then supervised, with a fresh optimiser (as the single process does). Every report carries
``stage`` ('pretrain' | 'supervised') and ``epoch``, which counts on across the stages (1 ..
pretrain_epochs + epochs). The CV metric of an untrained classifier is not a figure to compare, so a
pretrain report carries ``cv_metric`` NaN (Tune wants the key in every report), ``cv_rmse``, no
``best_*`` and ``cv_completed`` 0, and the trial asks for no verdict after it. Supervised reports alone
carry ``supervised_epoch`` (1 .. epochs): the scheduler's clock, absent from pretrain reports, so ASHA
never judges them. ``best_epoch`` counts supervised epochs (what a retrain after the same pretraining runs).

Device and ranks: model, optimiser state and rows live on ``ray.train.torch.get_device()`` (the
TorchTrainer picks NCCL on GPU, gloo on CPU). Fold models start from the same weights on every rank,
then each rank reseeds (its own reparameterisation noise and dropout masks); the reported loss terms
are group means, so ``train_mmd`` is the global-batch MMD (``cmmd_dist.train.ranks``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.spec import DatasetSpec, Split
from cmmd_dist.evaluate import evaluate_model
from cmmd_dist.folds import assign_folds, development_ids, development_split, fold_positions, row_ids
from cmmd_dist.model import CMMD
from cmmd_dist.search_space import Folds
from cmmd_dist.train.batches import RowView, SplitTensors, iterate_batches
from cmmd_dist.train.build import loss_weights, model_config
from cmmd_dist.train.gather import gather_for
from cmmd_dist.train.loop import train_epoch
from cmmd_dist.train.optim import make_optimizer
from cmmd_dist.train.ranks import TERMS, autocast_for, group_mean, reseed_rank
from cmmd_dist.train.single import seed_everything

__all__ = ["cv_worker", "FoldRows", "FoldState", "fold_rows", "build_folds", "cv_epoch", "STAGES"]

STAGES = ("pretrain", "supervised")


@dataclass
class FoldRows:
    """One fold's rows on this rank: its fit shard, its pretraining shard (fit shard + unlabeled shard,
    labels hidden; None without pretraining) and all its held-out rows (rank 0 only: it validates)."""

    fit: RowView
    pretrain: RowView | None
    val: SplitTensors | None


def _unlabeled_shard(split: Split, obs: list[str], mis: list[str], like_y: torch.Tensor, rank: int,
                     world: int) -> SplitTensors:
    """This rank's share of the unlabeled rows (equal shares, tail dropped), labels zero and shaped like ``like_y``."""
    n = (len(split) // world) * world
    mine = np.arange(rank, n, world)
    part = SplitTensors.from_split(split.take(mine), obs, mis, like_y.device, ids=row_ids("unlabeled", len(split))[mine])
    part.y = torch.zeros((len(mine), *like_y.shape[1:]), dtype=like_y.dtype, device=like_y.device)
    return part


def fold_rows(run: RunConfig, folds: Folds, rank: int, world: int,
              device: torch.device | str = "cpu") -> tuple[list[FoldRows], DatasetSpec]:
    """Every fold's rows on this rank, from the dataset's train+val rows (and ``unlabeled`` when pretraining).

    One copy of the rows on ``device``: the folds' sets are index views into it."""
    bundle = load_bundle(run.data)
    dev = development_split(bundle)
    fold_ids = assign_folds(dev, folds.k, folds.strategy, folds.seed)
    observed, missing = bundle.spec.split_modalities(run.data.scenario)
    obs, mis = [m.name for m in observed], [m.name for m in missing]
    pool = SplitTensors.from_split(dev, obs, mis, device, ids=development_ids(bundle))
    unlabeled = torch.zeros(0, dtype=torch.int64)
    if run.train.pretrain_epochs and "unlabeled" in bundle.extra:
        extra = _unlabeled_shard(bundle.extra["unlabeled"], obs, mis, pool.y, rank, world)
        unlabeled = len(pool) + torch.arange(len(extra))
        pool = SplitTensors.concat([pool, extra])
    out = []
    for f in range(folds.k):
        fit_pos, val_pos = fold_positions(fold_ids, f)
        fit = RowView(pool, torch.from_numpy(fit_pos)).shard(rank, world)
        pretrain = RowView(pool, torch.cat([fit.index, unlabeled]), hide_labels=True) if run.train.pretrain_epochs else None
        val = RowView(pool, torch.from_numpy(val_pos)).tensors() if rank == 0 else None
        out.append(FoldRows(fit, pretrain, val))
    return out, bundle.spec


class FoldState:
    """One fold's model, optimiser, shuffle generator and rows (see FoldRows), on ``device``."""

    def __init__(self, run: RunConfig, spec: DatasetSpec, rows: FoldRows, fold: int, rank: int,
                 device: torch.device | str = "cpu"):
        seed_everything(run.train.seed + 1000 * fold)  # same initial weights on every rank
        self.core = CMMD(model_config(run, spec)).to(device)
        self.optimizer = make_optimizer(self.core.parameters(), run.train)
        self.gen = torch.Generator().manual_seed(run.train.seed + 1000 * fold + 7919 * rank)
        self.rows = rows
        self.model: torch.nn.Module = self.core


def build_folds(run: RunConfig, folds: Folds, rank: int, world: int,
                device: torch.device | str = "cpu") -> tuple[list[FoldState], DatasetSpec]:
    """Every fold's state on this rank; then this rank's own random state (noise, dropout) for training."""
    rows, spec = fold_rows(run, folds, rank, world, device)
    states = [FoldState(run, spec, r, f, rank, device) for f, r in enumerate(rows)]
    reseed_rank(run.train.seed, rank)
    return states, spec


class _Tap:
    """What an ``observe`` function (the worker config's, optional) sees of one fold's epoch on this rank.

    Events (dicts with rank, fold, stage, epoch, step and kind): "batch", each batch's row ids and labels
    as it is drawn; "latents", the samples [z_q; z_p] this rank contributes to the global MMD, taken from
    the row-share gather hook (none where the MMD is not gathered). ``observe`` runs in the worker."""

    row_share = True

    def __init__(self, observe, gather, **where):
        self.observe, self.inner, self.where, self.step = observe, gather, where, -1

    def batches(self, batches):
        for step, b in enumerate(batches):
            self.step = step
            self.observe({**self.where, "kind": "batch", "step": step, "ids": b.get("ids"), "y": b["y"]})
            yield b

    def gather(self):
        return self if hasattr(self.inner, "start") else self.inner

    def start(self, x: torch.Tensor) -> None:
        self.observe({**self.where, "kind": "latents", "step": self.step, "z": x.detach()})
        self.inner.start(x)

    def collect(self, x: torch.Tensor):
        return self.inner.collect(x)


def cv_epoch(run: RunConfig, states: list[FoldState], world: int, gather, rank: int, stage: str = "supervised",
             autocast=None, observe=None, epoch: int = 0) -> dict:
    """Train every fold model one epoch of ``stage`` and validate it (rank 0 validates; the figures are broadcast).

    Loss terms: fold means, averaged over ranks. Pretraining has no CV metric (NaN), only ``cv_rmse``."""
    w = loss_weights(run)
    pretrain = stage == "pretrain"
    per_fold = []
    for f, s in enumerate(states):
        batches = iterate_batches(s.rows.pretrain if pretrain else s.rows.fit, run.train.batch_size, s.gen)
        hook = gather
        if observe is not None:
            tap = _Tap(observe, gather, rank=rank, fold=f, stage=stage, epoch=epoch)
            batches, hook = tap.batches(batches), tap.gather()
        per_fold.append(train_epoch(s.model, s.core, batches, s.optimizer, w, gather=hook, world_size=world,
                                    pretrain=pretrain, autocast=autocast))
        if observe is not None:
            observe({"rank": rank, "fold": f, "stage": stage, "epoch": epoch, "kind": "trained",
                     "model": s.core, "optimizer": s.optimizer})
    device = next(states[0].core.parameters()).device
    local = {k: float(np.mean([m.get(k, 0.0) for m in per_fold])) for k in TERMS}
    local.update(rows=sum(m["rows"] for m in per_fold), seconds=sum(m["seconds"] for m in per_fold))
    out = group_mean(local, device, world)
    metrics = torch.zeros(2, len(states), dtype=torch.float64, device=device)  # (metric, rmse of the generated views) per fold
    if rank == 0:
        for i, s in enumerate(states):
            ev = evaluate_model(s.core, s.rows.val, with_collapse=False)
            metrics[0, i], metrics[1, i] = ev["metric"], ev["rmse"]
    if world > 1:
        dist.broadcast(metrics, src=0)
    folds, rmses = metrics.tolist()
    out["cv_rmse"] = float(np.mean(rmses))
    if pretrain:
        out["cv_metric"] = float("nan")
        return out
    out.update(cv_metric=float(np.mean(folds)), cv_std=float(np.std(folds)))
    out.update({f"fold{i}_metric": v for i, v in enumerate(folds)})
    return out


def wait_for_verdict(verdicts: str, trial_id: str, epoch: int, rank: int, world: int, timeout_s: float = 120.0,
                     device: torch.device | str = "cpu") -> bool:
    """Whether the scheduler stopped this trial at ``epoch`` (rank 0 asks; every rank gets the answer)."""
    stop = torch.zeros(1, device=device)
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

    With ``verdicts`` (the name of the scheduler's verdict actor) the trial ends itself when ASHA says stop.
    ``observe`` (optional): a function that sees every batch and step of this rank (``_Tap``)."""
    run: RunConfig = config["run"]
    folds: Folds = config["folds"]
    observe = config.get("observe")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(run.train.threads or run.distributed.cpus_per_worker)
    device = ray.train.torch.get_device()
    states, _ = build_folds(run, folds, rank, world, device)
    for s in states:
        s.model = ray.train.torch.prepare_model(s.core, move_to_device=device) if world > 1 else s.core
    gather = gather_for(run.loss.mmd_scope)
    autocast = autocast_for(device, run.distributed.bf16)
    epoch = 0
    for pre in range(1, run.train.pretrain_epochs + 1):
        epoch += 1
        row = cv_epoch(run, states, world, gather, rank, "pretrain", autocast, observe, epoch)
        row.update(stage="pretrain", epoch=epoch, pretrain_epoch=pre, cv_completed=0)
        ray.train.report(row)
    if run.train.pretrain_epochs:
        for s in states:  # the supervised stage starts its own Adam moments, as the single process does
            s.optimizer = make_optimizer(s.core.parameters(), run.train)
    best, best_epoch, best_rmse = float("inf"), 0, float("nan")
    for sup in range(1, run.train.epochs + 1):
        epoch += 1
        row = cv_epoch(run, states, world, gather, rank, "supervised", autocast, observe, epoch)
        if row["cv_metric"] < best:
            best, best_epoch, best_rmse = row["cv_metric"], sup, row["cv_rmse"]
        patience_out = sup - best_epoch >= run.train.patience
        row.update(stage="supervised", epoch=epoch, supervised_epoch=sup, best_cv_metric=best, best_epoch=best_epoch,
                   best_cv_rmse=best_rmse, cv_completed=int(sup == run.train.epochs or patience_out))
        ray.train.report(row)
        if row["cv_completed"]:
            break
        if config.get("verdicts") and wait_for_verdict(config["verdicts"], config["trial_id"], epoch, rank, world,
                                                       device=device):
            break
