"""Where a training stage's rows come from: tensors in memory, or Parquet shards each worker streams.

Small data loads whole: a digits2v or mnist2v epoch from tensors in memory is faster than any reader,
and every path did so before. A prepared dataset (a manifest: ``--data``) streams when
``data.stream`` is ``always``, or ``auto`` (the default) and its rows take more than
``data.stream_above_mb`` megabytes as float32 (all splits: modalities plus labels); a recipe or
converter source (``--dataset mnist2v`` without ``--data``) always loads whole.

Streamed, each worker reads only its part of the shards every epoch (:class:`ShardStream`: file
order and a bounded shuffle buffer seeded by the epoch, ``data.shuffle_buffer`` rows, ``data.prefetch``
files read ahead), the same number of rows on every rank, and the evaluation splits come in chunks of
``EVAL_CHUNK`` rows. :class:`StreamedRows` turns the stream's numpy batches into the training batches
of ``cmmd_dist.datasets.tensors`` on the worker's device; :func:`stage_batches` and :func:`eval_chunks`
let the loops take either kind of rows unchanged.

The test evaluation also reports ``latent_accuracy`` on multi-class data (``evaluate.latent_classification``):
a logistic regression fit on the latents of ``LATENT_FIT_ROWS`` training rows, drawn at random from rows in
memory (:func:`latent_sample`) or, streamed, the first shuffled batch of the training stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.spec import DatasetSpec, Split
from cmmd_dist.datasets.streaming import ShardStream
from cmmd_dist.storage import S3Settings
from cmmd_dist.datasets.tensors import RowView, SplitTensors, iterate_batches

__all__ = ["StreamedRows", "streams", "decoded_bytes", "stage_batches", "eval_chunks", "eval_batches", "stream_of",
           "evaluate_rows", "latent_sample", "EVAL_CHUNK", "LATENT_FIT_ROWS"]

EVAL_CHUNK = 1024
LATENT_FIT_ROWS = 500  # training rows whose latents fit the latent classifier (DESIGN.md: "500 random training latents")


def decoded_bytes(manifest: dict, spec: DatasetSpec) -> int:
    """Bytes the manifest's rows take as float32 arrays in memory (modalities plus labels, every split)."""
    rows = sum(int(f.get("rows", 0)) for f in manifest.get("files", []))
    width = sum(m.size for m in spec.modalities) + (spec.num_classes if spec.label_kind == "multilabel" else 2)
    return rows * width * 4


def streams(cfg: DataConfig, settings: S3Settings | None = None) -> tuple[str, dict] | None:
    """(URI, manifest) when ``cfg``'s rows are to be streamed (see the module doc), else None."""
    from cmmd_dist.datasets.registry import checked_manifest, prepared_uri

    uri = prepared_uri(cfg)
    if uri is None or cfg.stream == "never":
        return None
    manifest, spec = checked_manifest(cfg, settings)
    if cfg.stream == "always" or decoded_bytes(manifest, spec) > cfg.stream_above_mb * 1e6:
        return uri, manifest
    return None


def stream_of(cfg: DataConfig, uri: str, manifest: dict, splits, batch_size: int, seed: int, rank: int = 0,
              world: int = 1, shuffle: bool = True, keep=None, settings: S3Settings | None = None) -> ShardStream:
    """A ShardStream over ``splits`` with ``cfg``'s buffer, prefetch and row limit (``data.limit``)."""
    if cfg.limit is not None:
        inner, limit = keep, cfg.limit
        keep = (lambda split, rows: (rows < limit) & (True if inner is None else inner(split, rows)))
    return ShardStream(uri, splits, batch_size, rank=rank, world_size=world, shuffle=shuffle, seed=seed, keep=keep,
                       prefetch=cfg.prefetch, shuffle_buffer=cfg.shuffle_buffer, settings=settings, manifest=manifest)


class StreamedRows:
    """This rank's rows of a stream as training batches ``{"obs", "mis", "y", "ids"}`` on ``device``.

    ``hide_labels``: every batch carries all-zero labels (pretraining: no label reaches the model). Iterating
    gives the rows in stored order as SplitTensors chunks (evaluation)."""

    def __init__(self, stream: ShardStream, observed: list[str], missing: list[str], device: torch.device | str,
                 hide_labels: bool = False):
        self.stream, self.observed, self.missing = stream, observed, missing
        self.device, self.hide_labels = torch.device(device), hide_labels

    def __len__(self) -> int:
        return self.stream.rows_per_rank

    def _tensors(self, b: dict) -> SplitTensors:
        def t(a: np.ndarray, dtype=None) -> torch.Tensor:
            a = np.ascontiguousarray(a, dtype=dtype)
            return torch.from_numpy(a if a.flags.writeable else a.copy()).to(self.device)  # in-order reads are views

        y = t(b["label"])
        if self.hide_labels:
            y = torch.zeros_like(y)
        return SplitTensors(obs={n: t(b[n], np.float32) for n in self.observed},
                            mis={n: t(b[n], np.float32) for n in self.missing}, y=y, ids=t(b["ids"]))

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        """This rank's shuffled batches of ``epoch``; ``start_batch`` skips ahead (a resumed epoch)."""
        self.stream.set_epoch(epoch)
        for i, b in enumerate(self.stream):
            if i >= start_batch:
                yield self._tensors(b).rows(slice(None))

    def __iter__(self) -> Iterator[SplitTensors]:
        for b in self.stream:
            yield self._tensors(b)


def stage_batches(rows: RowView | SplitTensors | StreamedRows, batch_size: int, generator: torch.Generator | None,
                  epoch: int, start_batch: int = 0, steps: int | None = None) -> Iterator[dict]:
    """One epoch's training batches of ``rows``: shuffled by ``generator`` in memory, by ``epoch`` when streamed;
    at most ``steps`` of them (``train.steps_per_epoch``)."""
    if isinstance(rows, StreamedRows):
        batches = rows.batches(epoch, start_batch)
    else:
        batches = iterate_batches(rows, batch_size, generator, start_batch=start_batch)
    return batches if steps is None else itertools.islice(batches, max(steps - start_batch, 0))


def eval_chunks(rows: SplitTensors | StreamedRows | RowView) -> Iterable[SplitTensors]:
    """Evaluation rows as SplitTensors chunks (one chunk in memory)."""
    if isinstance(rows, StreamedRows):
        return rows
    return [rows.tensors() if isinstance(rows, RowView) else rows]


def eval_batches(rows: SplitTensors | StreamedRows) -> Iterator[dict]:
    """Evaluation rows as batches of ``EVAL_CHUNK`` in stored order (for ``evaluate_loss``)."""
    for chunk in eval_chunks(rows):
        yield from iterate_batches(chunk, EVAL_CHUNK, shuffle=False)


def latent_sample(split: Split, seed: int, n: int = LATENT_FIT_ROWS) -> Split:
    """``n`` random rows of ``split`` (all of them when it has fewer), in stored order."""
    rng = np.random.default_rng(seed)
    return split.take(np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False)))


def _latent_fit_rows(rows: SplitTensors | StreamedRows) -> SplitTensors:
    """Rows in memory as they are; a stream's first batch (read once, the stream then closed)."""
    if not isinstance(rows, StreamedRows):
        return rows
    chunks = iter(rows)
    try:
        return next(chunks)
    finally:
        chunks.close()


def evaluate_rows(core: torch.nn.Module, rows: SplitTensors | StreamedRows, with_collapse: bool = True,
                  latent: SplitTensors | StreamedRows | None = None, latent_seed: int = 0) -> dict:
    """``evaluate.evaluate_model`` of rows in memory, ``evaluate.evaluate_chunks`` of streamed ones; with
    ``latent`` (training rows: a sample in memory, or a stream whose first batch is the sample) and multi-class
    data, also ``latent_accuracy``."""
    from cmmd_dist.evaluation.metrics import evaluate_chunks, evaluate_model

    fit = None if latent is None or core.cfg.multilabel else _latent_fit_rows(latent)
    if isinstance(rows, StreamedRows):
        return evaluate_chunks(core, rows, with_collapse, latent_train=fit, latent_seed=latent_seed)
    return evaluate_model(core, rows, with_collapse=with_collapse, latent_train=fit, latent_seed=latent_seed)
