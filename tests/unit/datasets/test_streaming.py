"""ShardStream: disjoint equal parts per DDP worker, per-epoch shuffles, and a hand-made manifest."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import get_spec, load_bundle
from cmmd_dist.datasets.streaming import ShardStream
from cmmd_dist.errors import UserError
from cmmd_dist.storage import StorageError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    prepare("digits2v", None, str(out), rows_per_file=250)
    return str(out)


def rows_of(stream):
    return np.concatenate([b["row"] for b in stream])


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_workers_get_disjoint_equal_parts_covering_the_epoch(root, world_size):
    parts = []
    for rank in range(world_size):
        s = ShardStream(root, "train", 64, rank=rank, world_size=world_size, seed=3, columns=["view1", "label", "row"])
        s.set_epoch(1)
        batches = list(s)
        assert len(batches) == len(s) and all(len(b["label"]) == 64 for b in batches[:-1])
        assert batches[0]["view1"].shape == (64, 8, 8) and batches[0]["view1"].dtype == np.float32
        parts.append(rows_of(batches))
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == 1197 // world_size
    allrows = np.concatenate(parts)
    assert len(np.unique(allrows)) == len(allrows) and len(allrows) >= 1197 - world_size + 1


def test_epochs_reshuffle_and_are_reproducible(root):
    s = ShardStream(root, "train", 100, seed=0, columns=["row"])
    e0 = rows_of(s)
    s.set_epoch(1)
    e1 = rows_of(s)
    assert sorted(e0) == sorted(e1) == list(range(1197)) and not np.array_equal(e0, e1)
    s.set_epoch(0)
    assert np.array_equal(rows_of(s), e0)


def test_unshuffled_stream_matches_the_stored_order_and_values(root):
    ref = load_bundle(DataConfig(dataset=root)).val
    s = ShardStream(root, "val", 128, shuffle=False, drop_last=True)
    batches = list(s)
    assert len(batches) == 2
    got = np.concatenate([b["view2"] for b in batches])
    assert np.array_equal(got, ref.arrays["view2"][:256])


def test_truncated_shard_is_caught_while_streaming(root, tmp_path):
    import shutil

    shutil.copytree(root, tmp_path / "c")
    p = tmp_path / "c" / "train" / "part-00002.parquet"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(StorageError, match=r"train/part-00002.parquet: truncated or altered shard"):
        list(ShardStream(str(tmp_path / "c"), "train", 64, shuffle=False))


def test_a_hand_written_yaml_manifest_for_a_new_dataset_needs_no_code(tmp_path):
    """Someone else's shards: a new dataset name, modalities and scenario, no checksums or row counts."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        (tmp_path / split).mkdir()
        table = pa.table({
            "audio": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 6).astype(np.float32)), 6),
            "video": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 4).astype(np.float32)), 4),
            "label": pa.array(rng.integers(0, 3, n)),
            "split": pa.array([split] * n),
            "row": pa.array(np.arange(n)),
        })
        pq.write_table(table, tmp_path / split / "data.parquet")
    (tmp_path / "manifest.yaml").write_text("""
format_version: 1
spec:
  name: av-toy
  modalities:
    - {name: audio, shape: [2, 3], likelihood: gaussian}
    - {name: video, shape: [4], likelihood: gaussian}
  label_kind: classes
  num_classes: 3
  scenarios: {audio: [audio]}
  default_scenario: audio
files:
  - {path: train/data.parquet, split: train}
  - {path: val/data.parquet, split: val}
  - {path: test/data.parquet, split: test}
""")
    bundle = load_bundle(DataConfig(dataset=str(tmp_path)))
    assert bundle.spec.name == "av-toy" and bundle.train.arrays["audio"].shape == (40, 2, 3)
    assert get_spec(str(tmp_path)).split_modalities()[1][0].name == "video"
    assert sum(len(b["label"]) for b in ShardStream(str(tmp_path), "train", 16, world_size=2, rank=1)) == 20


def test_registry_loads_a_prepared_dataset_and_checks_its_name(root):
    b = load_bundle(DataConfig(dataset="digits2v", prepared=root, limit=50))
    assert len(b.train) == len(b.test) == 50
    with pytest.raises(UserError, match="holds dataset 'digits2v', but data.dataset is 'mnist2v'"):
        load_bundle(DataConfig(dataset="mnist2v", prepared=root))
