"""Ray Core / Ray Train private APIs that ``cmmd_dist.train`` relies on, in one place (Ray 2.60).

None has an upstream issue: each fills a gap of Ray's public API. Each has a sentinel test in
``tests/unit/train/test_ray_compat.py`` that fails when Ray moves it; where it is gone at run time, each
warns (``RuntimeWarning``) and the caller goes on without the check it enables, never silently.

- :func:`ray_started_here`: ``ray._private.worker._global_node.head`` (no public API says whether this
  process started the Ray it is connected to); used by ``ray_setup.check_resources``.
- :func:`ray_address_from_environment`: ``ray._private.services.get_ray_address_from_environment`` (the
  address ``ray.init()`` would connect to, before it runs); used by ``ray_connect.cluster_address``.
- :func:`gcs_client`: ``ray._raylet.GcsClient`` (a token check of a cluster without joining it); used by
  ``ray_connect.check_cluster_access``.
- :func:`wrap_sigint_registration`: ``DataParallelTrainer._register_sigint_handler`` (Ray Train installs its
  own SIGINT handler in ``fit``; wrapping it is the only way to tell Ctrl-C from a crash); used by
  ``run_folder._note_sigint``.
- :func:`checkpoint_folder`: not a private API but a race in a public one: Ray 2.60's
  ``Checkpoint.as_directory`` gives the ranks of a node one shared temporary download folder, and a rank that
  takes the download lock after another released it downloads again over the files that rank is reading
  (seen: a rank0.pt read half-rewritten, refused as unreadable, in a full test run). ``to_directory(path)``
  into a private folder takes no shared lock. Remove when Ray checks that the folder is complete before
  downloading again.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings

from cmmd_dist.storage import is_local_filesystem

__all__ = ["ray_started_here", "ray_address_from_environment", "gcs_client", "wrap_sigint_registration",
           "checkpoint_folder"]


def _gone(what: str, err: BaseException, consequence: str) -> None:
    warnings.warn(f"Ray's private {what} is gone ({err}): {consequence}", RuntimeWarning, stacklevel=3)


def ray_started_here() -> bool:
    """Whether this process started the Ray instance it is connected to (False where Ray's private node is gone)."""
    import ray

    try:
        return bool(ray._private.worker._global_node.head)
    except AttributeError as err:
        if getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", 0) is None:
            return False  # not connected in this process: nothing was started here
        _gone("worker._global_node", err, "the worker group is not checked against this machine's Ray")
        return False


def ray_address_from_environment() -> str | None:
    """The address ``ray.init()`` would connect to (RAY_ADDRESS, a ``ray start`` on this node), or None."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except (ImportError, AttributeError) as err:
        _gone("services.get_ray_address_from_environment", err, "the cluster is not probed before ray.init")
        return None
    try:
        return get_ray_address_from_environment(None, None)
    except ConnectionError:  # RAY_ADDRESS=auto and nothing up: ray.init reports it
        return None


def gcs_client(address: str):
    """A ``GcsClient`` of the cluster at ``address`` (raises what Ray raises), or None where the class is gone."""
    try:
        from ray._raylet import GcsClient
    except ImportError as err:
        _gone("_raylet.GcsClient", err, "a refused token is reported by ray.init instead")
        return None
    return GcsClient(address=address)


def wrap_sigint_registration(trainer, after_register) -> bool:
    """Have ``after_register()`` run right after Ray Train registers its SIGINT handler in ``trainer.fit``;
    False (warned) where Ray Train no longer registers one this way."""
    register = getattr(trainer, "_register_sigint_handler", None)
    if register is None:
        _gone("DataParallelTrainer._register_sigint_handler", AttributeError(type(trainer).__name__),
              'Ctrl-C still ends the run, reported as a plain "interrupted"')
        return False

    def register_and_note(controller) -> None:
        register(controller)
        after_register()

    trainer._register_sigint_handler = register_and_note
    return True


@contextlib.contextmanager
def checkpoint_folder(checkpoint, rank: int):
    """A local folder holding ``checkpoint`` (a ``ray.train.Checkpoint``) that no other rank writes into:
    its own path where it is on this machine's disk, else a private download removed on exit."""
    if is_local_filesystem(checkpoint.filesystem):
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix=f"cmmd-restore-rank{rank}-") as own:
        yield checkpoint.to_directory(own)
