"""The rows a Ray Train worker of a distributed run holds (``distributed.main`` loads them before training).

Each rank takes its own shard of the supervised rows (train, or train+val for a retrain) and of the pretraining
rows; rank 0 alone also holds the validation rows, the test rows and, for multi-class data, the rows whose
latents fit the test's latent classifier. In memory (``rank_rows``: one copy of the rows on the rank's device,
views into it) or streamed from a prepared dataset's shards (``streamed_rank_rows``, ``train.sources``).
No Ray here: the caller passes rank, world and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.row_ids import rank_positions
from cmmd_dist.datasets.shards import manifest_spec
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, Split
from cmmd_dist.datasets.tensors import RowView, SplitTensors
from cmmd_dist.train.folds import development_split
from cmmd_dist.train.single import stage_rows
from cmmd_dist.train.sources import EVAL_CHUNK, LATENT_FIT_ROWS, StreamedRows, latent_sample, stream_of, streams

__all__ = ["RankRows", "rank_rows", "streamed_rank_rows", "load_rank_rows"]


@dataclass
class RankRows:
    """This rank's rows on its device: its shard of the supervised rows (train, or train+val for a retrain), the
    pretraining rows (that shard plus its shard of the unlabeled rows, labels hidden: one copy of the rows),
    and on rank 0 the validation rows, the test rows and, for multi-class data, the training rows whose latents
    fit the test's latent classifier (``latent``: a random sample of all the supervised rows, or a shuffled
    stream of them whose first batch is read at test time). ``validates``: the run selects epochs on validation
    (every rank knows it; a retrain does not). In memory, or streamed from the shards (``train.sources``)."""

    supervised: RowView | StreamedRows
    pretrain: RowView | StreamedRows
    val: SplitTensors | StreamedRows | None
    test: SplitTensors | StreamedRows | None
    validates: bool
    latent: SplitTensors | StreamedRows | None = None


def _shard(split: Split, rank: int, world: int) -> Split:
    """Every ``world``-th row from ``rank`` (equal shares, tail dropped: every rank takes as many steps),
    taken before the rows reach the device."""
    return split.take(rank_positions(len(split), rank, world))


def rank_rows(bundle: DatasetBundle, run: RunConfig, rank: int, world: int, retrain: bool,
              device: torch.device | str) -> RankRows:
    obs, mis = bundle.spec.scenario_names(run.data.scenario)

    def tensors(split: Split) -> SplitTensors:
        return SplitTensors.from_split(split, obs, mis, device)

    every = development_split(bundle) if retrain else bundle.train
    extra = bundle.extra.get("unlabeled") if run.train.pretrain_epochs else None
    supervised, pretrain = stage_rows(tensors(_shard(every, rank, world)),
                                      None if extra is None else tensors(_shard(extra, rank, world)))
    lead = rank == 0
    latent = lead and bundle.spec.label_kind == "classes"
    return RankRows(supervised, pretrain, tensors(bundle.val) if lead and not retrain else None,
                    tensors(bundle.test) if lead else None, validates=not retrain,
                    latent=tensors(latent_sample(every, run.train.seed)) if latent else None)


def streamed_rank_rows(run: RunConfig, uri: str, manifest: dict, rank: int, world: int, retrain: bool,
                       device: torch.device | str) -> tuple[DatasetSpec, RankRows]:
    """As ``rank_rows``, streamed: this rank's part of the shards every epoch, evaluation splits in chunks."""
    spec = manifest_spec(manifest)
    obs, mis = spec.scenario_names(run.data.scenario)
    labelled = ("train", "val") if retrain else ("train",)
    has_unlabeled = any(f.get("split") == "unlabeled" for f in manifest.get("files", []))
    pre = (*labelled, "unlabeled") if run.train.pretrain_epochs and has_unlabeled else labelled

    def rows(splits, hide=False, lead_only=False, **kw):
        if lead_only and rank != 0:
            return None
        kw = kw or {"batch_size": run.train.batch_size, "seed": run.train.seed, "rank": rank, "world": world}
        return StreamedRows(stream_of(run.data, uri, manifest, splits, **kw), obs, mis, device, hide)

    chunks = {"batch_size": EVAL_CHUNK, "seed": 0, "shuffle": False}
    sample = {"batch_size": LATENT_FIT_ROWS, "seed": run.train.seed, "shuffle": True}  # its first batch: the sample
    return spec, RankRows(rows(labelled), rows(pre, hide=True), None if retrain else rows("val", lead_only=True, **chunks),
                          rows("test", lead_only=True, **chunks), validates=not retrain,
                          latent=rows(labelled, lead_only=True, **sample) if spec.label_kind == "classes" else None)


def load_rank_rows(run: RunConfig, rank: int, world: int, retrain: bool, device) -> tuple[DatasetSpec, RankRows]:
    """This rank's rows: streamed when the run's data streams (``sources.streams``), else loaded in memory."""
    streamed = streams(run.data)
    if streamed is not None:
        return streamed_rank_rows(run, *streamed, rank, world, retrain, device)
    bundle = load_bundle(run.data)
    return bundle.spec, rank_rows(bundle, run, rank, world, retrain, device)
