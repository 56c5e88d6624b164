"""The driver's side of a Ray Train run, before its worker group starts: the controller's report polling, the
run's storage for Ray, and the check that the Ray instance can hold the worker group.

Used by ``distributed.setup`` / ``run_distributed`` / ``retrain_distributed`` and by multi-worker sweep trials
(``tune.trial``: ``quick_report_polling``).
"""

from __future__ import annotations

import os

import ray

from cmmd_dist.config import RunConfig
from cmmd_dist.errors import UserError
from cmmd_dist.storage import S3Settings, is_s3_uri, resolve_without_keys
from cmmd_dist.train.run_folder import storage_uri

__all__ = ["REPORT_POLL_ENV", "quick_report_polling", "run_storage", "check_resources"]

REPORT_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def quick_report_polling(seconds: float = 0.2) -> None:
    """Let Train V2's controller take the workers' reports every ``seconds`` (unless the user set it).

    The controller collects a report only when it polls its workers, every 2 s by default, and a
    reporting worker waits on a one-slot queue until then: every epoch shorter than 2 s costs 2 s (a
    digits2v CV epoch computes in 0.7 s). The setting reaches the controller from the process that
    calls ``fit`` (Ray propagates it)."""
    os.environ.setdefault(REPORT_POLL_ENV, str(seconds))


def run_storage(run: RunConfig, s3: S3Settings | None = None):
    """(storage_path, storage_filesystem or None) for Ray Train from ``distributed.storage``."""
    uri = storage_uri(run)
    if is_s3_uri(uri):
        # Ray pickles this filesystem into its workers and run state: keyless, each node brings its own credentials
        fs, path = resolve_without_keys(uri, s3)
        return path, fs
    return uri, None


def check_resources(run: RunConfig) -> None:
    """Refuse a worker group that the Ray instance this process started cannot hold (Ray Train would wait
    60 s, then retry forever). A cluster we connected to (RAY_ADDRESS, ``ray job submit``) may autoscale:
    there Ray Train waits for nodes as usual."""
    from cmmd_dist.train.ray_compat import ray_started_here

    if not ray_started_here():  # no public API says who started Ray
        return
    d = run.distributed
    have = ray.cluster_resources()
    need = {"CPU": d.workers * d.cpus_per_worker, **({"GPU": d.workers} if d.use_gpu else {})}
    for kind, n in need.items():
        got = int(have.get(kind, 0))
        if got < n:
            per = d.cpus_per_worker if kind == "CPU" else 1
            fits = f"use --workers {got // per} or less" if got >= per else (
                "drop --use-gpu" if kind == "GPU" else f"lower distributed.cpus_per_worker ({per})")
            raise UserError(f"--workers {d.workers} needs {n} {kind}s ({per} per worker), but this machine's Ray has "
                            f"{got}: {fits}, or connect to a larger cluster (RAY_ADDRESS)")
