"""S3 retries (cmmd_dist.storage.retry): the budget rides out a 60 s server restart, in every process Ray
pickles the filesystem into; a run that still fails is recognised as a storage failure."""

import pickle
import socket
import time

import pytest

from cmmd_dist.errors import UserError
from cmmd_dist.storage import S3Settings, s3_client
from cmmd_dist.storage.retry import (DEFAULT_RETRY_S, RETRY_ENV, arrow_attempts, arrow_waits, boto_attempts,
                                     boto_mean_waits, retry_seconds)
from cmmd_dist.train.storage_outage import storage_cause


def test_the_default_budget_covers_a_60_s_restart_in_pyarrow_and_boto3():
    seconds = retry_seconds({})
    assert seconds == DEFAULT_RETRY_S >= 60
    fs = S3Settings(endpoint_url="http://127.0.0.1:9").filesystem()
    assert sum(arrow_waits(fs.retry_attempts)) >= 60 and fs.retry_attempts == arrow_attempts(seconds)
    assert arrow_waits(4) == [0.0, 0.05, 0.1, 0.2]  # the AWS SDK's DefaultRetryStrategy: 25 ms * 2**k
    total = s3_client(S3Settings(endpoint_url="http://127.0.0.1:9")).meta.config.retries["total_max_attempts"]
    assert total == boto_attempts(seconds) and sum(boto_mean_waits(total)) >= 60
    assert max(boto_mean_waits(total)) == 10.0  # botocore's waits: at random up to 20 s


def test_the_budget_is_configurable_and_checked():
    assert retry_seconds({RETRY_ENV: "300"}) == 300 and arrow_attempts(300) > arrow_attempts(90)
    assert arrow_attempts(0) == 1 and boto_attempts(0) == 2
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(UserError, match=RETRY_ENV):
            retry_seconds({RETRY_ENV: bad})


def test_the_unpickled_filesystem_still_retries_for_its_budget():
    """Ray's controller and workers get a pickled copy: pyarrow's own pickle drops the retry strategy (3 tries,
    at most 3 s of waits); this copy waits 25 ms * (2 + 4 + ... + 128) = 6.35 s against a closed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fs = S3Settings(access_key="a", secret_key="b", endpoint_url=f"http://127.0.0.1:{port}", retry_s=5).filesystem()
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.retry_attempts == 8
    t0 = time.monotonic()
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        copy.get_file_info("bucket/key")
    assert 6.3 <= time.monotonic() - t0 < 9


def test_a_storage_failure_is_found_inside_ray_trains_errors():
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    upload = OSError("When uploading part for key 'runs/x/checkpoint_epoch_00002/rank0.pt': AWS Error "
                     "INTERNAL_FAILURE during CreateMultipartUpload operation: We encountered an internal error.")
    assert storage_cause(ControllerError(upload)).startswith("AWS Error INTERNAL_FAILURE during CreateMultipartUpload")
    wrapped = RuntimeError("shard read failed")
    wrapped.__cause__ = OSError("No space left on device")
    assert storage_cause(WorkerGroupError("2 workers failed", {0: ValueError("nan"), 1: wrapped})) == "No space left on device"
    assert storage_cause(WorkerGroupError("1 worker failed", {0: RuntimeError("gloo: connection reset")})) is None
    assert storage_cause("s3://b/d/train/part-00000.parquet: not a readable Parquet file: AWS Error NETWORK_CONNECTION "
                         "during GetObject operation: curlCode: 7") is not None
    assert storage_cause("s3://b/d/train/part-00000.parquet: checksum mismatch") is None
