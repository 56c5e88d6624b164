"""Streamed epochs as training takes them: every row once per epoch over the ranks, disjoint parts,
a new order each epoch (across files, through the shuffle buffer), fold filters by row id, and the
rule that decides what streams."""

import numpy as np
import pytest

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.train.folds import DEV_SPLITS, assign_folds, development_ids, development_split, fold_keep, prepared_fold_ids
from cmmd_dist.datasets.row_ids import row_ids
from cmmd_dist.train.sources import StreamedRows, decoded_bytes, stream_of, streams


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-epochs")
    prepare("digits2v", None, str(out), rows_per_file=100)  # 12 train files, 3 val, 3 test
    return str(out)


def epoch_ids(root, splits, world, epoch, **kw):
    cfg = DataConfig(dataset=root, shuffle_buffer=kw.pop("shuffle_buffer", 256))
    parts = []
    for rank in range(world):
        rows = StreamedRows(stream_of(cfg, root, None, splits, 32, seed=4, rank=rank, world=world, **kw),
                            ["view1"], ["view2"], "cpu")
        batches = list(rows.batches(epoch))
        assert all(len(b["y"]) == 32 for b in batches[:-1]) and batches[0]["obs"]["view1"].shape[1:] == (8, 8)
        parts.append(np.concatenate([b["ids"].numpy() for b in batches]))
    return parts


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_together_see_every_row_once_per_epoch_and_the_order_changes(root, world):
    total = 1197
    seen = {}
    for epoch in (0, 1):
        parts = epoch_ids(root, "train", world, epoch)
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == total // world  # equal: DDP's rule
        every = np.concatenate(parts)
        assert len(np.unique(every)) == len(every)  # disjoint, no row twice
        assert set(every) <= set(row_ids("train", total)) and len(every) >= total - (world - 1)  # remainder < world
        seen[epoch] = parts
    for a, b in zip(seen[0], seen[1]):
        assert not np.array_equal(a, b)
    # reproducible: the same epoch gives the same order
    assert all(np.array_equal(a, b) for a, b in zip(seen[1], epoch_ids(root, "train", world, 1)))


def test_the_shuffle_buffer_mixes_rows_across_files(root):
    (ids,) = epoch_ids(root, "train", 1, 0, shuffle_buffer=400)
    files_in_first_batch = {int(i % 10**12) // 100 for i in ids[:32]}
    assert len(files_in_first_batch) >= 3  # a within-file shuffle would give 1
    (none,) = epoch_ids(root, "train", 1, 0, shuffle_buffer=0)
    assert len({int(i % 10**12) // 100 for i in none[:32]}) <= 2


def test_fold_ids_of_a_stream_equal_the_in_memory_folds(root):
    bundle = load_bundle(DataConfig(dataset=root))
    for strategy in ("stratified", "kfold"):
        ref = assign_folds(development_split(bundle), 3, strategy, 7)
        got = prepared_fold_ids(root, 3, strategy, 7)
        assert np.array_equal(np.concatenate([got[s] for s in DEV_SPLITS]), ref)


def test_a_fold_stream_holds_its_fit_rows_only_and_the_held_out_stream_the_rest(root):
    bundle = load_bundle(DataConfig(dataset=root))
    folds = prepared_fold_ids(root, 3, "stratified", 0)
    ids = development_ids(bundle)
    fold_of = dict(zip(ids.tolist(), np.concatenate([folds[s] for s in DEV_SPLITS]).tolist()))
    for f in range(3):
        fit = np.concatenate(epoch_ids(root, DEV_SPLITS, 2, 1, keep=fold_keep(folds, f, held_out=False)))
        held = np.concatenate(epoch_ids(root, DEV_SPLITS, 1, 0, keep=fold_keep(folds, f, held_out=True), shuffle=False))
        assert all(fold_of[i] != f for i in fit.tolist()) and all(fold_of[i] == f for i in held.tolist())
        assert len(fit) + len(held) >= len(ids) - 1 and not set(fit) & set(held)


def test_streaming_is_chosen_by_size_or_by_option(root):
    assert streams(DataConfig(dataset="digits2v")) is None  # a recipe always loads whole
    assert streams(DataConfig(dataset=root)) is None  # 1797 rows of 128 floats: far below 1000 MB
    assert streams(DataConfig(dataset=root, stream="always"))[0] == root
    uri, manifest = streams(DataConfig(dataset=root, stream_above_mb=0.5))
    assert decoded_bytes(manifest, load_bundle(DataConfig(dataset=root)).spec) > 0.5e6
    assert streams(DataConfig(dataset=root, stream="never", stream_above_mb=0.001)) is None
