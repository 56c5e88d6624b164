"""Where prepared datasets live: local folders or ``s3://bucket/prefix``, through pyarrow filesystems.

This module knows URIs, credentials, bytes and the manifest; what the bytes mean (Parquet shards of a
dataset) is ``cmmd_dist.datasets.shards``. S3 settings come from the standard AWS environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``) unless an
explicit :class:`S3Settings` is passed. boto3 is used only for bucket administration.

Atomicity: a local file is written under a temporary name and renamed; an S3 object becomes visible
only when its upload completes. The manifest is written LAST, so a dataset without a manifest is
unfinished and no reader accepts it.

Confinement: every path joined to a dataset root is checked lexically (:func:`check_relative_path`) and,
locally, again once links are resolved (:func:`confined`), before the file is opened, written or deleted;
a writer deletes only regular files inside its root (:func:`own_file`). A link swapped in between that
check and the open is not caught: it guards against mistakes and planted links, not a concurrent writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import stat
import uuid
from dataclasses import dataclass, replace
from typing import Any

import pyarrow.fs as pafs

from cmmd_dist.errors import UserError
from cmmd_dist.storage.retry import RetryingS3FileSystem, arrow_attempts, boto_attempts, retry_seconds

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAMES",
    "StorageError",
    "S3Settings",
    "is_s3_uri",
    "join_uri",
    "check_relative_path",
    "check_manifest_files",
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

FORMAT_VERSION = 1
# a connection attempt gives up after 5 s; S3 calls retry for CMMD_S3_RETRY_S (cmmd_dist.storage.retry)
S3_CONNECT_TIMEOUT_S = 5
# the writer produces manifest.json; a hand-written YAML manifest of someone else's shards is also read
MANIFEST_NAMES = ("manifest.json", "manifest.yaml", "manifest.yml")


class StorageError(UserError, RuntimeError):
    """A dataset or storage location that cannot be used; the message names the file (and column)."""


@dataclass(frozen=True)
class S3Settings:
    """Endpoint, region and credentials of an S3 service (None: pyarrow's / boto3's own default)."""

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    retry_s: float | None = None  # how long each S3 call keeps retrying; None: CMMD_S3_RETRY_S, else 90 s

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "S3Settings":
        env = os.environ if env is None else env
        return cls(
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def without_keys(self) -> "S3Settings":
        """Endpoint and region only: its filesystem pickles without credentials and finds them wherever it is
        built or unpickled (AWS environment variables, ``~/.aws``, instance profile: the AWS SDK's default chain)."""
        return replace(self, access_key=None, secret_key=None, session_token=None)

    def retry_seconds(self) -> float:
        return retry_seconds() if self.retry_s is None else self.retry_s

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3FileSystem whose calls retry for :meth:`retry_seconds` (a server restart), also in the copies
        Ray pickles into its controller and workers."""
        kwargs: dict[str, Any] = {"region": self.region or "us-east-1", "connect_timeout": S3_CONNECT_TIMEOUT_S,
                                  "retry_attempts": arrow_attempts(self.retry_seconds())}
        if self.access_key is not None:
            kwargs.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        if self.endpoint_url:
            kwargs["endpoint_override"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                kwargs["scheme"] = "http"
        return RetryingS3FileSystem(**kwargs)


def is_s3_uri(uri: str) -> bool:
    return str(uri).startswith("s3://")


# "s3:", "file:", "http:", a drive letter "C:": anything that names another place than the folder it is joined to
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _escape(path: str) -> str | None:
    """Why ``path`` would leave the folder it is joined to (or is no usable name), or None."""
    if not path.strip("/. "):
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "has control characters"
    if "\\" in path:  # a Windows separator: "..\\x" climbs out on a filesystem that honours it
        return "has a backslash"
    if path.startswith(("/", "~")):
        return "is absolute"
    if _SCHEME.match(path):
        return "has a URI scheme"
    if ".." in path.split("/"):
        return "climbs out with '..'"
    return None


def check_relative_path(path: object, where: str) -> str:
    """``path`` as a clean relative path ('train/part-00000.parquet') that stays inside the folder or
    prefix it is joined to, on local disks and S3 alike; a StorageError naming ``where`` otherwise.

    Refused: a non-string, the empty path, an absolute path (or ``~``), a scheme (``s3://``, ``file:``,
    ``C:``), a ``..`` component, a backslash, control characters. ``.`` and empty components are dropped."""
    if not isinstance(path, str):
        raise StorageError(f"{where}: path must be a string, got {type(path).__name__} {path!r}")
    reason = _escape(path)
    if reason is not None:
        raise StorageError(f"{where}: path {path!r} {reason}; it must be a relative path inside the dataset root")
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def check_manifest_files(manifest: dict, where: str | None = None, root: str | None = None) -> list[dict]:
    """The manifest's ``files`` entries, each with a 'split' and a 'path' checked (and normalised) by
    :func:`check_relative_path` and, given the dataset ``root``, by :func:`confined` (links resolved):
    every entry is refused before any file is opened."""
    where = where or manifest.get("_uri", "manifest")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise StorageError(f"{where}: column 'files' is missing or not a list")
    for i, entry in enumerate(files):
        if not isinstance(entry, dict) or "path" not in entry or "split" not in entry:
            raise StorageError(f"{where}: files[{i}]: every entry of 'files' needs 'path' and 'split', got {entry!r}")
        entry["path"] = check_relative_path(entry["path"], f"{where}: files[{i}]")
        if root is not None:
            confined(root, entry["path"], f"{where}: files[{i}] {entry['path']!r}")
    return files


def confined(root: str, rel: str, where: str | None = None, inside: str = "the dataset root") -> str:
    """``join_uri(root, rel)`` once it is known to lie inside ``root`` after every link is resolved.

    Locally both ``root`` and the joined path go through ``os.path.realpath`` (a ``root`` that is itself a
    link is fine; a shard, split folder or manifest linked to a place outside it is not); S3 has no links,
    so its URIs are only checked lexically (by :func:`join_uri`). The refusal names ``where`` (default: the
    joined path) and the target, never anything read from the target: nothing has been opened yet."""
    uri = join_uri(root, rel)
    if is_s3_uri(uri):
        return uri
    top, real = os.path.realpath(root), os.path.realpath(uri)
    if os.path.commonpath([top, real]) != top:
        raise StorageError(f"{where or uri}: resolves to {real}, outside {inside} {top}; "
                           "links may not leave it (copy the files in instead)")
    return uri


def own_file(root: str, rel: str, where: str | None = None, inside: str = "--out") -> str | None:
    """The URI of ``rel`` under ``root`` if a writer may delete it: locally a regular file (not a link,
    folder or device) inside ``root`` once links are resolved; None when there is nothing there locally.
    Anything else is a StorageError that says how to clear it by hand. S3 keys are plain objects."""
    uri = join_uri(root, rel)
    if is_s3_uri(uri):
        return uri
    try:
        mode = os.lstat(uri).st_mode
    except FileNotFoundError:
        confined(root, rel, where, inside)
        return None
    if not stat.S_ISLNK(mode):
        confined(root, rel, where, inside)  # a parent folder may be a link that leaves
        if stat.S_ISREG(mode):
            return uri
    kind = (f"a link to {os.path.realpath(uri)}" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a special file")
    raise StorageError(f"{where or uri}: is {kind}, not a regular file this prepare wrote: not deleted; "
                       f"remove it yourself (rm {'-r ' if stat.S_ISDIR(mode) else ''}{shlex.quote(uri)}) "
                       f"or choose another {inside}")


def join_uri(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by '/', for local paths and s3:// URIs alike; the result is always
    inside ``base`` (each part is checked by :func:`check_relative_path`: no '..', no absolute path)."""
    base = str(base)
    rel = "/".join(check_relative_path(part, base) for part in parts)  # each part: "/etc" is no subfolder
    if is_s3_uri(base):
        inside = base[len("s3://") :].strip("/")
        if not inside:
            raise StorageError(f"{base}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        return f"s3://{inside}/{rel}"
    head = base.rstrip("/")
    if not head:
        return f"/{rel}" if base.startswith("/") else rel
    return f"{head}/{rel}"


def resolve(uri: str | os.PathLike, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an ``s3://bucket/key`` URI; any other scheme
    (``file:``, ``gs://``, ...) is refused rather than taken for a local folder of that name."""
    uri = str(uri)
    if _SCHEME.match(uri) and not is_s3_uri(uri):
        raise StorageError(f"{uri}: unsupported location: use a local path or s3://bucket/prefix")
    if is_s3_uri(uri):
        path = uri[len("s3://") :].strip("/")
        if not path:
            raise StorageError(f"{uri}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        return (settings or S3Settings.from_env()).filesystem(), path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def resolve_without_keys(uri: str | os.PathLike, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """Like :func:`resolve`, for a filesystem handed to other processes (Ray Tune, Ray Train).

    Ray pickles it into ``tuner.pkl``, searcher state and its object store: it carries endpoint, region and
    scheme only, never keys, and each process that unpickles it takes credentials from its own node
    (environment, instance profile), so every Ray node needs them. Keys in ``settings`` are ignored."""
    return resolve(uri, (settings or S3Settings.from_env()).without_keys())


def _explain(uri: str, err: Exception, action: str, settings: S3Settings | None = None) -> StorageError:
    """A StorageError that says what went wrong in words (credentials, bucket) and names the URI."""
    text = str(err)
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "curlCode: 28" in text:
        endpoint = (settings or S3Settings.from_env()).endpoint_url or "the AWS default endpoint"
        hint = f"cannot reach the S3 endpoint {endpoint} (is it running? check AWS_ENDPOINT_URL)"
    elif "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or "403" in text:
        hint = "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (wrong S3 credentials?)"
    elif "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text or "bucket does not exist" in text.lower():
        hint = "the bucket does not exist (create it first, e.g. cmmd_dist.storage.create_bucket)"
    else:
        hint = text
    return StorageError(f"{uri}: cannot {action}: {hint}")


def check_bucket(uri: str, settings: S3Settings | None = None) -> None:
    """Fail clearly when the bucket of an s3:// URI is missing or the credentials are refused
    (some S3 services create a bucket on the first PUT: a writer checks before writing)."""
    if is_s3_uri(uri):
        bucket = uri[len("s3://") :].split("/", 1)[0]
        if not bucket_exists(bucket, settings, uri=uri):
            raise StorageError(f"{uri}: bucket {bucket!r} does not exist (create it first, e.g. cmmd_dist.storage.create_bucket)")


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
        raise _explain(uri, err, "write", settings) from err


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
        raise _explain(uri, err, "read", settings) from err


def exists(uri: str, settings: S3Settings | None = None) -> bool:
    fs, path = resolve(uri, settings)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise _explain(uri, err, "look up", settings) from err


def delete_file(uri: str, settings: S3Settings | None = None) -> None:
    fs, path = resolve(uri, settings)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise _explain(uri, err, "delete", settings) from err


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_manifest(root: str, settings: S3Settings | None = None) -> str | None:
    """URI of the manifest under ``root``, or None when the dataset is absent or unfinished."""
    for name in MANIFEST_NAMES:
        uri = confined(root, name)  # a manifest linked outside the root is refused, not read
        if exists(uri, settings):
            return uri
    return None


def read_manifest(root: str, settings: S3Settings | None = None) -> dict:
    """The manifest of the dataset under ``root`` as a dict, its format version checked."""
    uri = find_manifest(root, settings)
    if uri is None:
        check_bucket(root, settings)
        raise StorageError(
            f"{join_uri(root, MANIFEST_NAMES[0])}: no manifest: not a prepared dataset, or its prepare did not finish"
        )
    text = read_bytes(uri, settings).decode("utf-8")
    try:
        if uri.endswith(".json"):
            manifest = json.loads(text)
        else:
            import yaml

            manifest = yaml.safe_load(text)
    except ValueError as err:
        raise StorageError(f"{uri}: manifest is not valid {'JSON' if uri.endswith('.json') else 'YAML'}: {err}") from err
    if not isinstance(manifest, dict):
        raise StorageError(f"{uri}: a manifest must be a mapping, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise StorageError(f"{uri}: column 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"{uri}: manifest format_version {version} is newer than this cmmd_dist understands ({FORMAT_VERSION}); upgrade cmmd_dist"
        )
    manifest["_uri"] = uri
    if "files" in manifest:  # every path checked now (links resolved), before any shard is opened
        check_manifest_files(manifest, uri, root)
    return manifest


def write_manifest(root: str, manifest: dict, settings: S3Settings | None = None) -> str:
    """Write ``manifest.json`` under ``root`` (deterministic bytes: sorted keys); returns its URI."""
    uri = confined(root, MANIFEST_NAMES[0])
    body = {k: v for k, v in manifest.items() if not k.startswith("_")}
    write_bytes(uri, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"), settings)
    return uri


def remove_manifest(root: str, settings: S3Settings | None = None) -> None:
    """Mark the dataset under ``root`` unfinished (done first by a prepare that overwrites it)."""
    for name in MANIFEST_NAMES[:1]:
        delete_file(join_uri(root, name), settings)


def s3_client(settings: S3Settings | None = None):
    """A boto3 S3 client for the same endpoint and credentials as the pyarrow filesystem."""
    import boto3
    from botocore.config import Config

    s = settings or S3Settings.from_env()
    retries = {"total_max_attempts": boto_attempts(s.retry_seconds()), "mode": "standard"}
    return boto3.client(
        "s3",
        config=Config(connect_timeout=S3_CONNECT_TIMEOUT_S, retries=retries),
        endpoint_url=s.endpoint_url,
        region_name=s.region,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        aws_session_token=s.session_token,
    )


def bucket_exists(bucket: str, settings: S3Settings | None = None, uri: str | None = None) -> bool:
    """True if ``bucket`` exists; a StorageError for refused credentials."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        s3_client(settings).head_bucket(Bucket=bucket)
        return True
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise _explain(uri or f"s3://{bucket}", err, "access the bucket", settings) from err
    except BotoCoreError as err:  # no connection, no credentials at all: one line, not botocore's traceback
        where = uri or f"s3://{bucket}"
        if isinstance(err, NoCredentialsError):
            raise StorageError(f"{where}: no S3 credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from err
        endpoint = (settings or S3Settings.from_env()).endpoint_url or "the AWS default endpoint"
        raise StorageError(f"{where}: cannot reach the S3 endpoint {endpoint}: {err}") from err


def create_bucket(bucket: str, settings: S3Settings | None = None, exist_ok: bool = True) -> None:
    from botocore.exceptions import ClientError

    if exist_ok and bucket_exists(bucket, settings):
        return
    try:
        s3_client(settings).create_bucket(Bucket=bucket)
    except ClientError as err:
        raise _explain(f"s3://{bucket}", err, "create the bucket") from err


def delete_bucket(bucket: str, settings: S3Settings | None = None) -> None:
    """Delete every object of ``bucket``, then the bucket."""
    client = s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)
