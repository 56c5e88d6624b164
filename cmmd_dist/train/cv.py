"""k-fold cross-validation inside one sweep trial: every fold's rows, model and epoch, on each rank.

No Ray here: the trial loop that calls these (reports, ASHA's verdicts, a TorchTrainer for
multi-worker trials) is ``cmmd_dist.tune.trial``; torch.distributed shares the figures between ranks.

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
pretrain report carries ``cv_metric`` and ``best_cv_metric`` NaN (Tune wants the searcher's key in every
report), ``cv_rmse`` and ``cv_completed`` 0, and the trial asks for no verdict after it. Supervised reports alone
carry ``supervised_epoch`` (1 .. epochs): the scheduler's clock, absent from pretrain reports, so ASHA
never judges them. ``best_epoch`` counts supervised epochs (what a retrain after the same pretraining runs).

Device and ranks: model, optimiser state and rows live on the rank's device (Ray Train's ``get_device()``: the
TorchTrainer picks NCCL on GPU, gloo on CPU). Fold models start from the same weights on every rank,
then each rank reseeds (its own reparameterisation noise and dropout masks); the reported loss terms
are group means, so ``train_mmd`` is the global-batch MMD (``cmmd_dist.train.ranks``).

Checkpoints: :func:`folds_state` is everything the fold models need to continue (weights, optimiser states, shuffle
generators, RNG states; tensors and plain values only) and :func:`load_folds_state` restores it in place; a
1-worker trial saves one with every report (``cmmd_dist.tune.trial.TrialCheckpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.spec import DatasetSpec, Split
from cmmd_dist.datasets.shards import manifest_spec
from cmmd_dist.errors import UserError
from cmmd_dist.train.folds import DEV_SPLITS, assign_folds, development_ids, development_split, fold_keep, fold_positions, prepared_fold_ids
from cmmd_dist.datasets.row_ids import rank_positions, row_ids
from cmmd_dist.config import Folds
from cmmd_dist.datasets.tensors import RowView, SplitTensors
from cmmd_dist.train.build import build_model, loss_weights
from cmmd_dist.train.checkpoint import restore_rng, rng_state
from cmmd_dist.train.loop import train_epoch
from cmmd_dist.train.optim import load_optimizer_state, make_optimizer
from cmmd_dist.train.sources import EVAL_CHUNK, StreamedRows, evaluate_rows, stage_batches, stream_of, streams
from cmmd_dist.train.ranks import TERMS, group_mean, reseed_rank
from cmmd_dist.train.single import seed_everything

__all__ = ["FoldRows", "FoldState", "fold_rows", "build_folds", "cv_epoch", "folds_state", "load_folds_state", "STAGES"]

STAGES = ("pretrain", "supervised")


@dataclass
class FoldRows:
    """One fold's rows on this rank: its fit shard, its pretraining shard (fit shard + unlabeled shard,
    labels hidden; None without pretraining) and all its held-out rows (rank 0 only: it validates).
    In memory (RowView, SplitTensors) or streamed (StreamedRows)."""

    fit: RowView | StreamedRows
    pretrain: RowView | StreamedRows | None
    val: SplitTensors | StreamedRows | None


def _unlabeled_shard(split: Split, obs: list[str], mis: list[str], like_y: torch.Tensor, rank: int,
                     world: int) -> SplitTensors:
    """This rank's share of the unlabeled rows (equal shares, tail dropped), labels zero and shaped like ``like_y``."""
    mine = rank_positions(len(split), rank, world)
    part = SplitTensors.from_split(split.take(mine), obs, mis, like_y.device, ids=row_ids("unlabeled", len(split))[mine])
    part.y = torch.zeros((len(mine), *like_y.shape[1:]), dtype=like_y.dtype, device=like_y.device)
    return part


def fold_rows(run: RunConfig, folds: Folds, rank: int, world: int,
              device: torch.device | str = "cpu") -> tuple[list[FoldRows], DatasetSpec]:
    """Every fold's rows on this rank, from the dataset's train+val rows (and ``unlabeled`` when pretraining).

    In memory: one copy of the rows on ``device``, the folds' sets index views into it. Streamed (a large
    prepared dataset, ``cmmd_dist.train.sources``): each fold streams its fit rows (filtered by row id,
    ``folds.fold_keep``) and rank 0 its held-out rows in chunks; nothing is loaded whole."""
    streamed = streams(run.data)
    if streamed is not None:
        return _streamed_fold_rows(run, folds, rank, world, device, *streamed)
    bundle = load_bundle(run.data)
    dev = development_split(bundle)
    fold_ids = assign_folds(dev, folds.k, folds.strategy, folds.seed)
    obs, mis = bundle.spec.scenario_names(run.data.scenario)
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


def _streamed_fold_rows(run: RunConfig, folds: Folds, rank: int, world: int, device, uri: str,
                        manifest: dict) -> tuple[list[FoldRows], DatasetSpec]:
    spec = manifest_spec(manifest)
    obs, mis = spec.scenario_names(run.data.scenario)
    fold_ids = prepared_fold_ids(uri, folds.k, folds.strategy, folds.seed, manifest=manifest, limit=run.data.limit)
    has_unlabeled = any(f.get("split") == "unlabeled" for f in manifest.get("files", []))
    pre_splits = (*DEV_SPLITS, "unlabeled") if has_unlabeled else DEV_SPLITS
    bs, out = run.train.batch_size, []
    for f in range(folds.k):
        fit_keep, seed = fold_keep(fold_ids, f, held_out=False), run.train.seed + 1000 * f

        def rows(splits, keep, **kw) -> StreamedRows:
            hide = kw.pop("hide_labels", False)
            return StreamedRows(stream_of(run.data, uri, manifest, splits, keep=keep, **kw), obs, mis, device, hide)

        fit = rows(DEV_SPLITS, fit_keep, batch_size=bs, seed=seed, rank=rank, world=world)
        pretrain = (rows(pre_splits, fit_keep, batch_size=bs, seed=seed, rank=rank, world=world, hide_labels=True)
                    if run.train.pretrain_epochs else None)
        val = (rows(DEV_SPLITS, fold_keep(fold_ids, f, held_out=True), batch_size=EVAL_CHUNK, seed=seed,
                    shuffle=False) if rank == 0 else None)
        out.append(FoldRows(fit, pretrain, val))
    return out, spec


class FoldState:
    """One fold's model, optimiser, shuffle generator and rows (see FoldRows), on ``device``."""

    def __init__(self, run: RunConfig, spec: DatasetSpec, rows: FoldRows, fold: int, rank: int,
                 device: torch.device | str = "cpu"):
        seed_everything(run.train.seed + 1000 * fold)  # same initial weights on every rank
        self.core = build_model(run, spec).to(device)
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


def folds_state(states: list[FoldState]) -> dict:
    """What a trial needs to continue its folds as if never stopped: every fold model's weights, optimiser state
    and shuffle generator, and this process's RNG states (``checkpoint.rng_state``: dropout and reparameterisation
    noise). Tensors and plain values only: ``checkpoint.load_file`` reads it back with ``weights_only=True``."""
    return {"folds": [{"model": s.core.state_dict(), "optimizer": s.optimizer.state_dict(), "shuffle": s.gen.get_state()}
                      for s in states],
            "rng": rng_state(states[0].gen)}


def load_folds_state(states: list[FoldState], saved: dict) -> None:
    """Restore :func:`folds_state` in place (fold models and optimisers on their own device)."""
    if len(saved["folds"]) != len(states):
        raise UserError(f"trial checkpoint holds {len(saved['folds'])} fold models, the trial has {len(states)} folds")
    restore_rng(saved["rng"], states[0].gen)
    for s, fold in zip(states, saved["folds"]):
        s.core.load_state_dict(fold["model"])
        load_optimizer_state(s.optimizer, fold["optimizer"])
        s.gen.set_state(fold["shuffle"])


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
        batches = stage_batches(s.rows.pretrain if pretrain else s.rows.fit, run.train.batch_size, s.gen, epoch,
                                steps=run.train.steps_per_epoch)
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
            ev = evaluate_rows(s.core, s.rows.val, with_collapse=False)
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

