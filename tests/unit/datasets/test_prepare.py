"""prepare + shards: byte-identical output, exact read-back, and a clear error for each bad input."""

import gzip
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cmmd_dist.datasets.shards as shards
from cmmd_dist.datasets.loaders import load_digits2v
from cmmd_dist.cli.app import main
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.shards import load_prepared, read_split, write_bundle
from cmmd_dist.errors import UserError
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
    assert main(["data", "prepare", "--dataset", "digits2v", "--out", str(tmp_path), "--rows-per-file", "2000"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 3
    assert main(["data", "prepare", "--dataset", "xrmb", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"cmmd-dist: error: xrmb: source '{tmp_path / 'none'}' does not exist\n"


def write_truncated_mnist(tmp_path) -> Path:
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple((np.zeros((n, 784), np.float32), np.zeros(n, np.int64)) for n in (30, 10, 10)), f)
    path.write_bytes(path.read_bytes()[:-200])
    return path


@pytest.mark.parametrize("case", ["rows-per-file", "limit", "truncated-pickle", "pickle-with-code", "bad-name",
                                  "unknown-dataset-api"])
def test_user_errors_are_one_line_naming_the_culprit(tmp_path, capsys, case):
    out = str(tmp_path / "out")
    if case == "rows-per-file":
        argv, expected = ["--dataset", "digits2v", "--rows-per-file", "0"], "--rows-per-file must be >= 1, got 0"
    elif case == "limit":
        argv, expected = ["--dataset", "digits2v", "--limit", "0"], "--limit must be >= 1, got 0"
    elif case == "truncated-pickle":
        path = write_truncated_mnist(tmp_path)
        argv, expected = ["--dataset", "mnist2v", "--source", str(path)], f"{path}: not a readable mnist.pkl.gz"
    elif case == "pickle-with-code":  # a pickle runs code when loaded: only numpy arrays are accepted
        path = tmp_path / "mnist.pkl.gz"
        with gzip.open(path, "wb") as f:
            pickle.dump(((os.getcwd, ()), (os.getcwd, ()), (os.getcwd, ())), f)
        argv = ["--dataset", "mnist2v", "--source", str(path)]
        expected = f"{path}: not a readable mnist.pkl.gz .*refusing to load posix.getcwd"
    elif case == "bad-name":
        argv, expected = ["--dataset", "digits2v", "--name", "../x"], "--name '../x': a dataset name is letters"
    else:
        with pytest.raises(UserError, match="--dataset 'nope': unknown"):
            prepare("nope", None, out)
        return
    assert main(["data", "prepare", *argv, "--out", out]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.match(rf"cmmd-dist: error: {expected}", err), err
    assert not Path(out, "manifest.json").exists()


def test_python_m_prepare_reports_one_line_and_exit_2(tmp_path):
    path = write_truncated_mnist(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cmmd_dist.datasets.prepare", "data", "prepare", "--dataset", "mnist2v",
                           "--source", str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == 2 and proc.stderr.startswith(f"cmmd-dist: error: {path}: not a readable mnist.pkl.gz"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_unreachable_s3_endpoint_is_one_line_in_seconds(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                 "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("CMMD_S3_RETRY_S", "2")  # S3 calls ride out a restart for 90 s by default (storage_retry)
    t0 = time.time()
    assert main(["data", "prepare", "--dataset", "digits2v", "--out", "s3://bucket/ds"]) == 2
    err = capsys.readouterr().err
    assert time.time() - t0 < 20
    assert len(err.splitlines()) == 1 and f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in err, err


def parquet_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet")}


def test_a_different_dataset_in_out_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    prepare("digits2v", None, str(out), rows_per_file=300)
    before = (out / "manifest.json").read_bytes()
    for kwargs, diff in (({"seed": 1}, "seed 0 there, 1 now"), ({"limit": 50}, "limit None there, 50 now"),
                         ({"name": "other"}, "name 'digits2v' there, 'other' now")):
        with pytest.raises(StorageError, match=rf"{out}: holds a different dataset \({diff}\); pass --overwrite"):
            prepare("digits2v", None, str(out), rows_per_file=300, **kwargs)
        assert (out / "manifest.json").read_bytes() == before
    m = prepare("digits2v", None, str(out), rows_per_file=2000, seed=1, overwrite=True)
    assert m["seed"] == 1 and parquet_files(out) == {f["path"] for f in m["files"]}  # no orphan of the 300-row files


def test_a_different_source_hash_is_refused(tmp_path):
    out = tmp_path / "ds"
    prepare("digits2v", None, str(out), rows_per_file=2000)
    m = json.loads((out / "manifest.json").read_text())
    m["source_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match="holds a different dataset \\(source_sha256 '0000"):
        prepare("digits2v", None, str(out), rows_per_file=2000)


def test_rerunning_the_same_prepare_is_allowed_and_leaves_no_orphans(tmp_path):
    out = tmp_path / "ds"
    prepare("digits2v", None, str(out), rows_per_file=300)
    m = prepare("digits2v", None, str(out), rows_per_file=2000)
    assert parquet_files(out) == {f["path"] for f in m["files"]} == {"train/part-00000.parquet", "val/part-00000.parquet",
                                                                      "test/part-00000.parquet"}


def test_an_unreadable_manifest_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match=rf"{out}: holds a manifest that cannot be read .* pass --overwrite"):
        prepare("digits2v", None, str(out))
    assert prepare("digits2v", None, str(out), overwrite=True)["rows"]["train"] == 1197


def test_an_interrupted_overwrite_leaves_no_manifest(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    prepare("digits2v", None, str(out), rows_per_file=300)
    real, calls = shards.write_bytes, []

    def dying(uri, data, settings=None):
        calls.append(uri)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-overwrite")
        real(uri, data, settings)

    monkeypatch.setattr(shards, "write_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare("digits2v", None, str(out), rows_per_file=2000, seed=3, overwrite=True)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and parquet_files(out) == {"train/part-00000.parquet"}
    prepare("digits2v", None, str(out), rows_per_file=2000, seed=3)  # no manifest: a re-run completes it
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3


def test_name_writes_another_dataset_through_the_same_converter(tmp_path):
    m = prepare("digits2v", None, str(tmp_path / "ds"), rows_per_file=2000, name="fashion-digits")
    assert m["spec"]["name"] == "fashion-digits"
    bundle = load_prepared(str(tmp_path / "ds"))
    assert bundle.spec.name == "fashion-digits" and bundle.spec.modalities == load_digits2v().spec.modalities
