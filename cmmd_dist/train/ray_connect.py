"""A driver's connection to Ray: a token-protected cluster that refuses this client is one user error.

``ray.init()`` connects to the cluster that ``RAY_ADDRESS`` (or a local ``ray start``) names, else starts a
Ray of its own. A cluster with token authentication (``RAY_AUTH_MODE=token``, as every manifest under
``cluster/`` starts it) refuses a client that sends no token, or another one: Ray then retries for 20 s,
printing a warning a second, and ends in a 70-line traceback. :func:`check_cluster_access` asks the
cluster once, before anything starts or is written (0.4 s; nothing when no cluster is named or it does
not listen: ``ray.init`` reports those its own way), and raises a :class:`UserError` saying what to set.
:func:`connect_ray` is ``ray.init()`` behind that check, and turns an authentication failure that still
happens in ``ray.init`` into the same error.
"""

from __future__ import annotations

import contextlib
import os
import socket

from cmmd_dist.errors import UserError

__all__ = ["cluster_address", "check_cluster_access", "connect_ray", "refused_message"]


def cluster_address() -> str | None:
    """The ``host:port`` of the cluster that ``ray.init()`` would connect to; None when it would start its own,
    uses Ray Client (``ray://``), or Ray's private lookup is gone."""
    from cmmd_dist.train.ray_compat import ray_address_from_environment

    address = ray_address_from_environment()
    if not address or "://" in address or address in ("auto", "local"):
        return None
    return address


def refused_message(address: str) -> str:
    """What the user must set for the token-protected cluster at ``address`` (the client's mode decides which)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        what = "refused this client's token (RAY_AUTH_MODE=token): put the cluster's token in RAY_AUTH_TOKEN"
    else:
        what = ("requires token authentication and this client sent none: set RAY_AUTH_MODE=token and the "
                "cluster's token in RAY_AUTH_TOKEN")
    return (f"the Ray cluster at {address} {what}, or in a file named by RAY_AUTH_TOKEN_PATH "
            f"(default ~/.ray/auth_token)")


def _listening(address: str, timeout_s: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _stderr_to_devnull():
    """Ray's C++ client logs each failed attempt on file descriptor 2 (``gcs_client.cc: Failed to get cluster
    ID``); the probe's failure is reported as one line instead."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_cluster_access() -> None:
    """A UserError naming the fix when the cluster that ``ray.init()`` would join refuses this client's token."""
    address = cluster_address()
    if address is None or not _listening(address):
        return
    from ray.exceptions import AuthenticationError

    from cmmd_dist.train.ray_compat import gcs_client

    try:
        with _stderr_to_devnull():
            gcs_client(address)  # None (warned) where Ray's GcsClient is gone: ray.init reports a refusal
    except AuthenticationError:
        raise UserError(refused_message(address)) from None
    except Exception:  # noqa: BLE001  anything else (not a GCS, not ready yet) is ray.init's to report
        return


def _authentication_failed(err: BaseException) -> bool:
    from ray.exceptions import AuthenticationError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, AuthenticationError) or "InvalidAuthToken" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def connect_ray() -> None:
    """``ray.init()`` (unless Ray is up in this process already), a refused token being one UserError."""
    import ray

    if ray.is_initialized():
        return
    check_cluster_access()
    try:
        ray.init()
    except (ConnectionError, RuntimeError) as err:
        if _authentication_failed(err):
            raise UserError(refused_message(cluster_address() or "RAY_ADDRESS")) from err
        raise
