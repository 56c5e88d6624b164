"""prepare + shards: byte-identical output, exact read-back, and a clear error for each bad input."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cmmd_dist.datasets.shards as shards
from cmmd_dist.datasets.loaders import load_digits2v
from cmmd_dist.datasets.prepare import add_data_subcommand, prepare
from cmmd_dist.datasets.shards import load_prepared, read_split, write_bundle
from cmmd_dist.storage import StorageError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits2v")
    manifest = prepare("digits2v", None, str(root), rows_per_file=400)
    return root, manifest


def copy_of(prepared, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(prepared[0], dst)
    return dst


def test_layout_bounded_files_and_manifest(prepared):
    root, m = prepared
    assert m["rows"] == {"train": 1197, "val": 300, "test": 300}
    assert [f["rows"] for f in m["files"] if f["split"] == "train"] == [400, 400, 397]
    assert all(len(f["sha256"]) == 64 for f in m["files"]) and len(m["source_sha256"]) == 64
    schema = pq.read_schema(root / "train" / "part-00000.parquet")
    t = schema.field("view1").type
    assert pa.types.is_fixed_size_list(t) and t.list_size == 64 and t.value_type == pa.float32()
    assert {"label", "split", "row"} <= set(schema.names)
    assert json.loads((root / "manifest.json").read_text())["spec"]["name"] == "digits2v"


def test_same_source_and_seed_give_byte_identical_shards(prepared, tmp_path):
    prepare("digits2v", None, str(tmp_path), rows_per_file=400)
    for f in prepared[1]["files"] + [{"path": "manifest.json"}]:
        assert (tmp_path / f["path"]).read_bytes() == (prepared[0] / f["path"]).read_bytes()


def test_read_back_is_bit_identical(prepared):
    ref, got = load_digits2v(seed=0), load_prepared(str(prepared[0]))
    for name in ("train", "val", "test"):
        a, b = getattr(ref, name), getattr(got, name)
        assert np.array_equal(a.labels, b.labels) and b.labels.dtype == np.int64
        for k in ("view1", "view2"):
            assert b.arrays[k].dtype == np.float32 and np.array_equal(a.arrays[k], b.arrays[k])


def test_missing_shard(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    (root / "val" / "part-00000.parquet").unlink()
    with pytest.raises(StorageError, match=r"val/part-00000.parquet: file is missing"):
        load_prepared(str(root))


def test_truncated_shard(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    p = root / "train" / "part-00001.parquet"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(StorageError, match=r"train/part-00001.parquet: truncated"):
        read_split(str(root), "train")


def test_checksum_mismatch(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    p = root / "test" / "part-00000.parquet"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"test/part-00000.parquet: checksum mismatch"):
        read_split(str(root), "test")


def test_wrong_modality_shape_names_file_and_column(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    m["spec"]["modalities"][1]["shape"] = [9, 9]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match=r"train/part-00000.parquet: column 'view2' has type .*\[64\], expected .*\[81\]"):
        read_split(str(root), "train")


def test_newer_format_version(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    m["format_version"] = 99
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match="format_version 99 is newer"):
        load_prepared(str(root))


def test_nan_and_bad_labels_are_refused_before_anything_is_written(tmp_path):
    bundle = load_digits2v(seed=0)
    bundle.val.arrays["view2"][3, 2, 2] = np.nan
    with pytest.raises(StorageError, match=r"split 'val': column 'view2' has NaN/inf values \(first at row 3\)"):
        write_bundle(bundle, str(tmp_path / "a"))
    bundle = load_digits2v(seed=0)
    bundle.test.labels[0] = 10
    with pytest.raises(StorageError, match=r"split 'test': column 'label' has values outside \[0, 10\)"):
        write_bundle(bundle, str(tmp_path / "b"))
    bundle = load_digits2v(seed=0)
    bundle.train.arrays["view1"] = bundle.train.arrays["view1"][:, :7]
    with pytest.raises(StorageError, match=r"column 'view1' has shape \(1197, 7, 8\), expected \(1197, 8, 8\)"):
        write_bundle(bundle, str(tmp_path / "c"))
    assert not any(tmp_path.rglob("*.parquet"))


def test_nan_in_a_stored_shard_names_the_file(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    bundle = load_digits2v(seed=0)
    bundle.val.arrays["view1"][5, 0, 0] = np.inf
    table = shards.split_to_table(bundle.spec, bundle.val, "val")
    pq.write_table(table, root / "val" / "part-00000.parquet")
    m = json.loads((root / "manifest.json").read_text())
    for f in m["files"]:
        f.pop("sha256"), f.pop("bytes")
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match=r"val/part-00000.parquet: column 'view1' has NaN/inf values \(first at row 5\)"):
        read_split(str(root), "val")


def test_interrupted_prepare_leaves_no_manifest_and_rerun_completes(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    prepare("digits2v", None, str(root), rows_per_file=400)  # an older complete dataset is being replaced
    real, calls = shards.write_bytes, []

    def dying(uri, data, settings=None):
        calls.append(uri)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-prepare")
        real(uri, data, settings)

    monkeypatch.setattr(shards, "write_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare("digits2v", None, str(root), rows_per_file=300)
    monkeypatch.undo()
    assert not (root / "manifest.json").exists()
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    with pytest.raises(StorageError, match="no manifest"):
        load_prepared(str(root))
    prepare("digits2v", None, str(root), rows_per_file=300)
    assert len(load_prepared(str(root)).train) == 1197


def test_data_prepare_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_subcommand(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["data", "prepare", "--dataset", "digits2v", "--out", str(tmp_path), "--rows-per-file", "2000"])
    assert ns.func(ns) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 3
    ns = parser.parse_args(["data", "prepare", "--dataset", "xrmb", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    assert ns.func(ns) == 2
    assert "XRMB1.mat: XRMB file is missing" in capsys.readouterr().out
