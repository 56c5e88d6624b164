"""Whole files by URI, local or ``s3://``: write atomically, read, look up, delete, hash.

Atomicity: a local file is written under a temporary name (``<name>.tmp-<hex>``) and renamed; an S3
object becomes visible only when its upload completes, so a reader sees nothing or all of it. A missing
file read is a :class:`StorageError` ("file is missing", after the bucket is checked); deleting a missing
file is no error. These functions do not confine paths: callers join them with ``cmmd_dist.storage.paths``.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid

import pyarrow.fs as pafs

from cmmd_dist.storage.paths import StorageError, is_s3_uri
from cmmd_dist.storage.s3 import S3Settings, check_bucket, explain_error, resolve

__all__ = ["write_bytes", "read_bytes", "exists", "delete_file", "sha256_hex", "is_local_filesystem"]


def is_local_filesystem(fs) -> bool:
    """Whether ``fs`` (a pyarrow filesystem, e.g. a Ray checkpoint's) is this machine's own disk."""
    return isinstance(fs, pafs.LocalFileSystem)


def write_bytes(uri: str, data: bytes, settings: S3Settings | None = None) -> None:
    """Write ``data`` to ``uri`` so that a reader sees either nothing or all of it."""
    fs, path = resolve(uri, settings)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(posixpath.dirname(path), recursive=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)
    except OSError as err:
        if is_s3_uri(uri):
            check_bucket(uri, settings)
        raise explain_error(uri, err, "write", settings) from err


def read_bytes(uri: str, settings: S3Settings | None = None) -> bytes:
    fs, path = resolve(uri, settings)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as err:
        if is_s3_uri(uri):
            check_bucket(uri, settings)
        raise StorageError(f"{uri}: file is missing") from err
    except OSError as err:
        raise explain_error(uri, err, "read", settings) from err


def exists(uri: str, settings: S3Settings | None = None) -> bool:
    fs, path = resolve(uri, settings)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise explain_error(uri, err, "look up", settings) from err


def delete_file(uri: str, settings: S3Settings | None = None) -> None:
    fs, path = resolve(uri, settings)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise explain_error(uri, err, "delete", settings) from err


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
