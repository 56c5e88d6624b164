"""cmmd_dist.storage: URIs, S3 settings from the AWS environment, atomic writes, manifests."""

import json

import pyarrow.fs as pafs
import pytest

from cmmd_dist.storage import (
    FORMAT_VERSION,
    S3Settings,
    StorageError,
    exists,
    join_uri,
    read_bytes,
    read_manifest,
    remove_manifest,
    resolve,
    write_bytes,
    write_manifest,
)


def test_settings_from_standard_aws_environment():
    env = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk", "AWS_ENDPOINT_URL": "http://generic:1",
           "AWS_ENDPOINT_URL_S3": "http://s3only:2", "AWS_REGION": "eu-west-1"}
    s = S3Settings.from_env(env)
    assert (s.access_key, s.secret_key, s.endpoint_url, s.region) == ("ak", "sk", "http://s3only:2", "eu-west-1")
    del env["AWS_ENDPOINT_URL_S3"], env["AWS_REGION"]
    s = S3Settings.from_env(env)
    assert s.endpoint_url == "http://generic:1" and s.region == "us-east-1"


def test_resolve_local_and_s3(tmp_path):
    fs, path = resolve(str(tmp_path / "a"))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "a")
    fs, path = resolve("s3://bucket/pre/fix/", S3Settings(access_key="a", secret_key="b", endpoint_url="http://127.0.0.1:9"))
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/pre/fix"
    with pytest.raises(StorageError, match="needs a bucket"):
        resolve("s3://")
    assert join_uri("s3://b/p/", "train", "x.parquet") == "s3://b/p/train/x.parquet"


def test_write_bytes_is_atomic_and_leaves_no_temp_files(tmp_path):
    uri = str(tmp_path / "deep" / "dir" / "f.bin")
    write_bytes(uri, b"abc")
    write_bytes(uri, b"defg")
    assert read_bytes(uri) == b"defg"
    assert [p.name for p in (tmp_path / "deep" / "dir").iterdir()] == ["f.bin"]
    with pytest.raises(StorageError, match="missing"):
        read_bytes(str(tmp_path / "nope.bin"))


def test_manifest_roundtrip_version_check_and_yaml(tmp_path):
    root = str(tmp_path)
    with pytest.raises(StorageError, match="no manifest"):
        read_manifest(root)
    write_manifest(root, {"format_version": FORMAT_VERSION, "files": [], "_uri": "dropped"})
    m = read_manifest(root)
    assert m["format_version"] == FORMAT_VERSION and m["_uri"].endswith("manifest.json")
    assert "_uri" not in json.loads((tmp_path / "manifest.json").read_text())
    write_manifest(root, {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(StorageError, match=r"manifest.json: manifest format_version 2 is newer"):
        read_manifest(root)
    remove_manifest(root)
    assert not exists(join_uri(root, "manifest.json"))
    (tmp_path / "manifest.yaml").write_text("format_version: 1\nfiles: []\n")
    assert read_manifest(root)["_uri"].endswith("manifest.yaml")
    (tmp_path / "manifest.yaml").write_text("files: []\n")
    with pytest.raises(StorageError, match="'format_version' is missing"):
        read_manifest(root)


ESCAPES = ["../x", "a/../../x", "..", "/etc/passwd", "//host/x", "~/x", "s3://other/x", "file:///etc/passwd",
           "file:x", "C:x", "..\\x", "a\\b", "", ".", "a\nb", "a\x00b"]


@pytest.mark.parametrize("base", ["/data/ds", "rel/ds", "s3://bucket/ds", "s3://bucket"])
@pytest.mark.parametrize("part", ESCAPES)
def test_join_uri_cannot_leave_its_base(base, part):
    reasons = "climbs out|is absolute|has a URI scheme|has a backslash|is empty|has control"
    with pytest.raises(StorageError, match=rf"^{base}: path .* ({reasons})"):
        join_uri(base, part)
    with pytest.raises(StorageError):
        join_uri(base, "train", part)


def test_join_uri_keeps_an_s3_base_on_s3_and_normalises():
    assert join_uri("s3://b/p", "./train//x.parquet") == "s3://b/p/train/x.parquet"
    assert join_uri("s3://b", "x") == "s3://b/x"
    assert join_uri("/", "x") == "/x" and join_uri("rel/", "x") == "rel/x"
    with pytest.raises(StorageError, match="needs a bucket"):
        join_uri("s3://", "x")


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "gs://bucket/x", "http://host/x", "C:/x"])
def test_resolve_refuses_other_schemes_instead_of_a_local_folder_of_that_name(uri):
    with pytest.raises(StorageError, match="unsupported location"):
        resolve(uri)
