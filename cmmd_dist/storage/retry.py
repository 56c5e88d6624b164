"""How long S3 calls keep retrying: long enough to ride out a server restart, the same in every process.

    CMMD_S3_RETRY_S=90     # seconds of waiting between the tries of one S3 call (default 90; 0: one retry)

pyarrow (datasets, streams, Ray Train's checkpoints) retries with the AWS SDK's DefaultRetryStrategy: retry k
waits 25 ms * 2**k (the first none), deterministic and without a retry quota. (The SDK's StandardRetryStrategy
caps its waits at 20 s but draws them at random and keeps a quota of about 100 retries per filesystem that
pyarrow never refills: a long run's filesystem would stop retrying for good.) The waits double, so after the
server is back the next try comes at most about as late as the outage lasted. boto3 (bucket administration)
uses botocore's "standard" mode: random waits up to min(50 ms * 2**i, 20 s), enough attempts that their mean
covers the budget (botocore's quota allows 35 retries per client; :func:`cmmd_dist.storage.s3_client` makes a
client per call).

pyarrow's ``S3FileSystem`` pickles without its retry strategy (its ``__reduce__`` omits it): the copy Ray sends
to its controller and workers would retry 3 times. :class:`RetryingS3FileSystem` pickles its retries along.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from cmmd_dist.errors import UserError

__all__ = ["RETRY_ENV", "DEFAULT_RETRY_S", "retry_seconds", "arrow_waits", "arrow_attempts", "boto_mean_waits",
           "boto_attempts", "RetryingS3FileSystem"]

RETRY_ENV = "CMMD_S3_RETRY_S"
DEFAULT_RETRY_S = 90.0
_ARROW_SCALE_S = 0.025  # Aws::Client::DefaultRetryStrategy's scale factor (pyarrow exposes no other)
_BOTO_SCALE_S, _BOTO_CAP_S = 0.05, 20.0  # botocore standard mode, non-throttling errors


def retry_seconds(env: dict[str, str] | None = None) -> float:
    """The retry budget from ``CMMD_S3_RETRY_S`` (default 90 s); a UserError naming the variable if it is no
    non-negative number."""
    text = (os.environ if env is None else env).get(RETRY_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise UserError(f"{RETRY_ENV}={text!r}: expected the seconds S3 calls keep retrying (a number >= 0, e.g. 90)")
    return seconds


def arrow_waits(attempts: int) -> list[float]:
    """The waits (s) before each of the ``attempts`` retries of pyarrow's AwsDefaultS3RetryStrategy."""
    return [0.0 if k == 0 else _ARROW_SCALE_S * 2**k for k in range(attempts)]


def arrow_attempts(seconds: float) -> int:
    """The fewest retries (at least 1) whose waits add up to ``seconds`` or more."""
    n = 1
    while sum(arrow_waits(n)) < seconds:
        n += 1
    return n


def boto_mean_waits(total_attempts: int) -> list[float]:
    """The mean waits (s) between botocore's ``total_attempts`` tries in standard mode (full jitter)."""
    return [min(_BOTO_SCALE_S * 2**i, _BOTO_CAP_S) / 2 for i in range(total_attempts - 1)]


def boto_attempts(seconds: float) -> int:
    """The fewest ``total_max_attempts`` (at least 2) whose mean waits add up to ``seconds`` or more."""
    n = 2
    while sum(boto_mean_waits(n)) < seconds:
        n += 1
    return n


def _rebuild(kwargs: dict, attempts: int) -> "RetryingS3FileSystem":
    return RetryingS3FileSystem(retry_attempts=attempts, **kwargs)


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3FileSystem with ``retry_attempts`` retries of the AWS default strategy, kept when pickled."""

    def __init__(self, *, retry_attempts: int, **kwargs):
        super().__init__(retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=retry_attempts), **kwargs)
        self.retry_attempts = retry_attempts

    def __reduce__(self):
        _, (kwargs,) = super().__reduce__()
        return _rebuild, (kwargs, self.retry_attempts)
