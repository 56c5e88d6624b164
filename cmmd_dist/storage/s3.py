"""S3 settings, filesystems and buckets: which filesystem a URI lives on, and S3 errors said in words.

Settings come from the standard AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
``AWS_REGION`` or ``AWS_DEFAULT_REGION``) unless an explicit :class:`S3Settings` is passed. Files go
through pyarrow filesystems (:func:`resolve`) whose calls retry (``cmmd_dist.storage.retry``); boto3 is
used only for bucket administration. A filesystem handed to other processes carries no keys
(:func:`resolve_without_keys`). Every failure is a :class:`StorageError` naming the URI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import pyarrow.fs as pafs

from cmmd_dist.storage.paths import SCHEME, StorageError, is_s3_uri
from cmmd_dist.storage.retry import RetryingS3FileSystem, arrow_attempts, boto_attempts, retry_seconds

__all__ = [
    "S3_CONNECT_TIMEOUT_S",
    "S3Settings",
    "resolve",
    "resolve_without_keys",
    "explain_error",
    "check_bucket",
    "s3_client",
    "bucket_exists",
    "create_bucket",
    "delete_bucket",
]

# a connection attempt gives up after 5 s; S3 calls retry for CMMD_S3_RETRY_S (cmmd_dist.storage.retry)
S3_CONNECT_TIMEOUT_S = 5


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


def resolve(uri: str | os.PathLike, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an ``s3://bucket/key`` URI; any other scheme
    (``file:``, ``gs://``, ...) is refused rather than taken for a local folder of that name."""
    uri = str(uri)
    if SCHEME.match(uri) and not is_s3_uri(uri):
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


def explain_error(uri: str, err: Exception, action: str, settings: S3Settings | None = None) -> StorageError:
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
        raise explain_error(uri or f"s3://{bucket}", err, "access the bucket", settings) from err
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
        raise explain_error(f"s3://{bucket}", err, "create the bucket") from err


def delete_bucket(bucket: str, settings: S3Settings | None = None) -> None:
    """Delete every object of ``bucket``, then the bucket."""
    client = s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)
