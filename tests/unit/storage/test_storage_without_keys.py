"""storage.resolve_without_keys: the S3 filesystem handed to Ray pickles with endpoint and region, never keys."""

import pickle

import pyarrow.fs as pafs

from cmmd_dist.storage import S3Settings, resolve, resolve_without_keys

KEYS = {"access_key": "unit-access-AKIA", "secret_key": "unit-secret-0123", "session_token": "unit-token-xyz"}


def test_explicit_keys_stay_out_of_the_pickle_and_endpoint_region_stay_in():
    settings = S3Settings(**KEYS, endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert all(v.encode() in pickle.dumps(resolve("s3://b/p", settings)[0]) for v in KEYS.values())  # the leak
    fs, path = resolve_without_keys("s3://b/p", settings)
    blob = pickle.dumps(fs)
    assert path == "b/p" and not [k for k, v in KEYS.items() if v.encode() in blob]
    again = pickle.loads(blob)
    assert isinstance(again, pafs.S3FileSystem) and again.region == "eu-west-1"
    assert b"127.0.0.1:9" in blob and settings.access_key == KEYS["access_key"]  # the caller's settings unchanged


def test_keys_from_the_environment_are_not_embedded(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEYS["secret_key"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", KEYS["session_token"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    blob = pickle.dumps(resolve_without_keys("s3://b/p")[0])
    assert not [k for k, v in KEYS.items() if v.encode() in blob]


def test_local_paths_are_unchanged(tmp_path):
    fs, path = resolve_without_keys(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
