"""``ray_connect`` without a cluster: a named address where nothing listens is left to ``ray.init`` at once (a
GCS probe there would wait 40 s first), and the refusal says what to set for the client's auth mode. The
token-protected cluster itself: tests/integration/test_job_submit.py."""

from __future__ import annotations

import socket
import time

from cmmd_dist.train.ray_connect import check_cluster_access, cluster_address, refused_message


def test_an_address_where_nothing_listens_is_not_probed(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    assert cluster_address() == f"127.0.0.1:{port}"
    t0 = time.monotonic()
    check_cluster_access()
    assert time.monotonic() - t0 < 5


def test_the_refusal_names_what_to_set(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN" in refused_message("h:1")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "refused this client's token" in refused_message("h:1")
    assert "RAY_AUTH_TOKEN_PATH" in refused_message("h:1")
