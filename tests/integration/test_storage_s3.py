"""Prepared datasets on a real SeaweedFS S3 server: bit-identical to a local copy, clear errors."""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.loaders import default_mnist_path
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.shards import load_prepared, read_split
from cmmd_dist.datasets.streaming import ShardStream
from cmmd_dist.storage import S3Settings, StorageError, bucket_exists, create_bucket, read_bytes

pytestmark = pytest.mark.integration
BUCKET = "cmmd-data"


@pytest.fixture(scope="module")
def bucket(s3_server):
    create_bucket(BUCKET, s3_server.settings)
    return s3_server.settings


def assert_same(a, b):
    assert a.spec == b.spec and set(a.splits()) == set(b.splits())
    for name, split in a.splits().items():
        other = b.splits()[name]
        assert np.array_equal(split.labels, other.labels)
        for k, arr in split.arrays.items():
            assert arr.dtype == other.arrays[k].dtype and arr.tobytes() == other.arrays[k].tobytes()


def test_digits2v_on_s3_is_bit_identical_to_local(bucket, tmp_path):
    m_s3 = prepare("digits2v", None, f"s3://{BUCKET}/digits2v", rows_per_file=500, settings=bucket)
    m_local = prepare("digits2v", None, str(tmp_path), rows_per_file=500)
    assert m_s3 == m_local  # same shard checksums: byte-identical files
    for f in m_s3["files"]:
        assert read_bytes(f"s3://{BUCKET}/digits2v/{f['path']}", bucket) == (tmp_path / f["path"]).read_bytes()
    assert_same(load_prepared(f"s3://{BUCKET}/digits2v", settings=bucket), load_prepared(str(tmp_path)))


def test_mnist2v_on_s3_is_bit_identical_to_local(bucket, tmp_path):
    source = default_mnist_path()
    if not source.exists():
        pytest.skip(f"real MNIST not found at {source} (set CMMD_MNIST_PATH)")
    uri = f"s3://{BUCKET}/mnist2v"
    prepare("mnist2v", source, uri, rows_per_file=1000, limit=2500, settings=bucket)
    prepare("mnist2v", source, str(tmp_path), rows_per_file=1000, limit=2500)
    from_s3 = load_prepared(uri, settings=bucket)
    assert_same(from_s3, load_prepared(str(tmp_path)))
    assert len(from_s3.train) == 2500 and from_s3.train.arrays["view1"].shape[1:] == (28, 28)
    halves = [np.concatenate([b["row"] for b in ShardStream(uri, "train", 256, rank=r, world_size=2, settings=bucket,
                                                          columns=["view1", "label", "row"])]) for r in range(2)]
    assert len(halves[0]) == len(halves[1]) == 1250 and not set(halves[0]) & set(halves[1])


def test_cli_and_registry_take_s3_settings_from_the_aws_environment(s3_server, bucket, monkeypatch):
    env = {**os.environ, **s3_server.env(), "PYTHONPATH": str(Path.cwd())}
    uri = f"s3://{BUCKET}/cli-digits2v"
    out = subprocess.run([sys.executable, "-m", "cmmd_dist.datasets.prepare", "data", "prepare", "--dataset", "digits2v",
                          "--out", uri, "--rows-per-file", "800"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bundle = load_bundle(DataConfig(dataset=uri, limit=100))
    assert bundle.spec.name == "digits2v" and len(bundle.train) == 100


def test_wrong_credentials_are_named(s3_server, bucket):
    wrong = S3Settings(access_key=bucket.access_key, secret_key="not-the-secret", endpoint_url=bucket.endpoint_url)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        load_prepared(f"s3://{BUCKET}/digits2v", settings=wrong)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        prepare("digits2v", None, f"s3://{BUCKET}/never", settings=wrong)


def test_missing_bucket_is_named_and_nothing_is_written(bucket):
    with pytest.raises(StorageError, match="s3://no-such-bucket/x.*bucket 'no-such-bucket' does not exist"):
        load_prepared("s3://no-such-bucket/x", settings=bucket)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        prepare("digits2v", None, "s3://no-such-bucket/x", settings=bucket)
    assert not bucket_exists("no-such-bucket", bucket)


def test_missing_and_corrupt_shards_on_s3(bucket):
    uri = f"s3://{BUCKET}/corrupt"
    m = prepare("digits2v", None, uri, rows_per_file=700, settings=bucket)
    from cmmd_dist.storage import delete_file, write_bytes

    victim = f"{uri}/{m['files'][0]['path']}"
    data = bytearray(read_bytes(victim, bucket))
    data[100] ^= 1
    write_bytes(victim, bytes(data), bucket)
    with pytest.raises(StorageError, match=r"train/part-00000.parquet: checksum mismatch"):
        load_prepared(uri, settings=bucket)
    delete_file(victim, bucket)
    with pytest.raises(StorageError, match=r"train/part-00000.parquet: (file|shard) is missing"):
        list(ShardStream(uri, "train", 64, settings=bucket, shuffle=False))


def test_bucket_admin_creates_and_deletes_with_contents(bucket):
    from cmmd_dist.storage import delete_bucket, write_bytes

    create_bucket("cmmd-scratch", bucket)
    create_bucket("cmmd-scratch", bucket)  # exist_ok
    write_bytes("s3://cmmd-scratch/a/b.bin", b"x", bucket)
    delete_bucket("cmmd-scratch", bucket)
    assert not bucket_exists("cmmd-scratch", bucket)


def _set_entry(uri: str, settings, index: int, path) -> None:
    """Rewrite the manifest on S3 so that files[index] names ``path``."""
    from cmmd_dist.storage import write_bytes

    m = json.loads(read_bytes(f"{uri}/manifest.json", settings))
    m["files"][index]["path"] = path
    write_bytes(f"{uri}/manifest.json", json.dumps(m).encode(), settings)


@pytest.fixture(scope="module")
def s3_prepared(bucket):
    uri = f"s3://{BUCKET}/paths-src"
    manifest = prepare("digits2v", None, uri, rows_per_file=700, settings=bucket)
    last = max(i for i, f in enumerate(manifest["files"]) if f["split"] == "test")
    return uri, manifest, last


# (id, the bad path given the local decoy and the S3 decoy's key under the bucket, planted decoy)
S3_ESCAPES = [
    ("absolute-local", lambda local: str(local), "local"),
    ("file-uri", lambda local: f"file://{local}", "local"),
    ("parent-prefix", lambda local: "../decoy/part.parquet", "s3"),
    ("other-bucket", lambda local: "../../other-bucket/part.parquet", None),
    ("s3-uri", lambda local: f"s3://{BUCKET}/decoy/part.parquet", "s3"),
    ("backslash", lambda local: "..\\decoy\\part.parquet", "s3"),
    ("empty", lambda local: "", None),
]


@pytest.mark.parametrize("make_path,decoy", [c[1:] for c in S3_ESCAPES], ids=[c[0] for c in S3_ESCAPES])
def test_a_manifest_on_s3_cannot_name_files_outside_its_root(bucket, s3_prepared, tmp_path, make_path, decoy):
    """Each decoy is a byte-exact copy of the real shard (same sha256): following the path would load it quietly."""
    from cmmd_dist.storage import write_bytes

    src, manifest, i = s3_prepared
    uri = f"s3://{BUCKET}/paths-{uuid.uuid4().hex[:8]}"
    for f in manifest["files"]:
        write_bytes(f"{uri}/{f['path']}", read_bytes(f"{src}/{f['path']}", bucket), bucket)
    write_bytes(f"{uri}/manifest.json", read_bytes(f"{src}/manifest.json", bucket), bucket)
    shard = read_bytes(f"{src}/{manifest['files'][i]['path']}", bucket)
    local = tmp_path / "decoy.parquet"
    if decoy == "local":
        local.write_bytes(shard)
    elif decoy == "s3":
        write_bytes(f"s3://{BUCKET}/decoy/part.parquet", shard, bucket)
    bad = make_path(local)
    _set_entry(uri, bucket, i, bad)
    names_entry = rf"{uri}/manifest.json: files\[{i}\]: path {re.escape(repr(bad))}"
    # the bad entry is in split 'test': reading 'train' fails too, before any shard is opened
    for read in (lambda: load_prepared(uri, settings=bucket), lambda: read_split(uri, "train", settings=bucket),
                 lambda: ShardStream(uri, "train", 64, settings=bucket)):
        with pytest.raises(StorageError, match=names_entry):
            read()


def test_overwrite_on_s3_refuses_another_dataset_and_leaves_no_orphans(bucket):
    from cmmd_dist.storage import s3_client

    uri = f"s3://{BUCKET}/overwrite"
    prepare("digits2v", None, uri, rows_per_file=300, settings=bucket)
    with pytest.raises(StorageError, match=rf"{uri}: holds a different dataset \(seed 0 there, 2 now\); pass --overwrite"):
        prepare("digits2v", None, uri, rows_per_file=300, seed=2, settings=bucket)
    m = prepare("digits2v", None, uri, rows_per_file=2000, seed=2, overwrite=True, settings=bucket)
    listed = s3_client(bucket).list_objects_v2(Bucket=BUCKET, Prefix="overwrite/")["Contents"]
    keys = {o["Key"][len("overwrite/"):] for o in listed if not o["Key"].endswith("/")}  # SeaweedFS lists folders
    assert keys == {f["path"] for f in m["files"]} | {"manifest.json"}
    assert prepare("digits2v", None, uri, rows_per_file=2000, seed=2, settings=bucket)["seed"] == 2  # same: allowed


def test_stale_shards_of_a_killed_prepare_on_s3_are_removed_by_the_next(bucket):
    """A prepare killed before its manifest leaves shards no manifest lists; the next prepare into that prefix
    (another --rows-per-file) deletes them, and only them: objects not of its naming stay."""
    from cmmd_dist.storage import delete_file, s3_client, write_bytes

    uri = f"s3://{BUCKET}/stale"
    prepare("digits2v", None, uri, rows_per_file=100, settings=bucket)  # 12 + 3 + 3 shards
    delete_file(f"{uri}/manifest.json", bucket)  # as if killed before its manifest
    write_bytes(f"{uri}/notes.txt", b"mine", bucket)
    write_bytes(f"{uri}/other/part-00000.parquet", b"someone else's", bucket)
    m = prepare("digits2v", None, uri, rows_per_file=2000, settings=bucket)
    listed = s3_client(bucket).list_objects_v2(Bucket=BUCKET, Prefix="stale/")["Contents"]
    keys = {o["Key"][len("stale/"):] for o in listed if not o["Key"].endswith("/")}
    assert keys == {f["path"] for f in m["files"]} | {"manifest.json", "notes.txt", "other/part-00000.parquet"}
