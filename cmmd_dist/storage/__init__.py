"""Where prepared datasets live: local folders or ``s3://bucket/prefix``, through pyarrow filesystems.

This package knows URIs, credentials, bytes and the manifest; what the bytes mean (Parquet shards of a
dataset) is ``cmmd_dist.datasets.shards``. Its public names are re-exported here, so callers write
``from cmmd_dist.storage import X`` or ``from cmmd_dist import storage as store``; each lives in one
submodule by responsibility (submodules import their siblings directly, never this ``__init__``):

- :mod:`~cmmd_dist.storage.paths`: :class:`StorageError`, URI joining and the confinement checks
  (every path joined to a root is checked lexically and, locally, once links are resolved, before it is
  opened, written or deleted; a writer deletes only regular files inside its root);
- :mod:`~cmmd_dist.storage.s3`: :class:`S3Settings` (from the standard AWS environment variables unless
  passed), the filesystem of a URI (:func:`resolve`, :func:`resolve_without_keys` for other processes),
  S3 errors in words, bucket administration through boto3;
- :mod:`~cmmd_dist.storage.files`: whole files, written atomically (a local temporary name renamed; an S3
  object visible once its upload completes);
- :mod:`~cmmd_dist.storage.manifest`: the manifest, written LAST, so a dataset without one is unfinished
  and no reader accepts it;
- :mod:`~cmmd_dist.storage.retry`, :mod:`~cmmd_dist.storage.url_credentials`,
  :mod:`~cmmd_dist.storage.yaml_files`: S3 retries, credentials in URLs, YAML files by URI (import those
  modules themselves).
"""

from __future__ import annotations

from cmmd_dist.storage.files import delete_file, exists, is_local_filesystem, read_bytes, sha256_hex, write_bytes
from cmmd_dist.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAMES,
    check_manifest_files,
    find_manifest,
    read_manifest,
    remove_manifest,
    write_manifest,
)
from cmmd_dist.storage.paths import StorageError, check_relative_path, confined, is_s3_uri, join_uri, own_file
from cmmd_dist.storage.s3 import (
    S3_CONNECT_TIMEOUT_S,
    S3Settings,
    bucket_exists,
    check_bucket,
    create_bucket,
    delete_bucket,
    resolve,
    resolve_without_keys,
    s3_client,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAMES",
    "S3_CONNECT_TIMEOUT_S",
    "StorageError",
    "S3Settings",
    "is_s3_uri",
    "join_uri",
    "check_relative_path",
    "check_manifest_files",
    "is_local_filesystem",
    "confined",
    "own_file",
    "resolve",
    "resolve_without_keys",
    "write_bytes",
    "read_bytes",
    "exists",
    "check_bucket",
    "delete_file",
    "sha256_hex",
    "find_manifest",
    "read_manifest",
    "write_manifest",
    "remove_manifest",
    "s3_client",
    "create_bucket",
    "delete_bucket",
    "bucket_exists",
]
