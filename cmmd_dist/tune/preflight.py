"""The checks a sweep makes before Ray starts (nothing needs a Ray worker): the trials' dataset, the storage and
output folders, the MLflow store, a named cluster's token, and that a trial's workers fit the local Ray.
Each failure is a one-line :class:`UserError` naming the culprit.
"""

from __future__ import annotations

from pathlib import Path

from cmmd_dist.config import RunConfig, SweepConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune.search_space import SearchSpace

__all__ = ["check_before_ray"]


def check_before_ray(settings: SweepConfig, space: SearchSpace, base: dict) -> None:
    """What needs no Ray worker, checked before Ray starts: the trials' dataset (known, its manifest, the
    scenario, a prepared one's training classes from its Parquet footers), the storage and output folders, the
    MLflow store (form, server answering), that a named Ray cluster takes this client's token, and that a
    trial's workers fit the Ray this sweep would start. One-line UserErrors naming the culprit."""
    from cmmd_dist.datasets.footer_labels import check_train_classes
    from cmmd_dist.train.folds import DEV_SPLITS
    from cmmd_dist.train.ray_connect import check_cluster_access
    from cmmd_dist.tracking.store import check_tracking_uri
    from cmmd_dist.train.run_folder import check_folder_path
    from cmmd_dist.train.single import check_data

    run = RunConfig.model_validate(base)
    check_train_classes(run.data, check_data(run), DEV_SPLITS)  # the rows the trials' folds cut
    if settings.storage is not None:
        _check_storage_form(settings.storage)
    check_folder_path(settings.output_dir, "--out")
    check_tracking_uri(settings.mlflow)
    check_cluster_access()
    _check_workers_fit(settings.workers_per_trial or space.workers_per_trial, run, settings.use_gpu)


def _check_storage_form(storage: str) -> None:
    from cmmd_dist.storage import is_s3_uri
    from cmmd_dist.train.run_folder import check_folder_path

    if is_s3_uri(storage):
        return
    if "://" in storage or storage.startswith("file:"):
        raise UserError(f"--storage {storage}: use an absolute local folder or s3://bucket/prefix")
    path = Path(storage)
    if not path.is_absolute():
        raise UserError(f"--storage {storage}: a local storage must be an absolute path (Ray Tune takes no "
                        f"relative one), e.g. --storage {path.resolve()}")
    check_folder_path(storage, "--storage")


def _check_workers_fit(workers: int, run: RunConfig, use_gpu: bool) -> None:
    """A trial's workers against the Ray that ``ray.init()`` would start on this machine (Tune would wait forever
    for a bundle no node can hold); a cluster to connect to (RAY_ADDRESS, ``ray start``) may autoscale: not checked."""
    from cmmd_dist.tune.workarounds import local_ray_cpus

    cpus = local_ray_cpus()
    if cpus is None:
        return
    have = {"CPU": cpus}
    per = (run.train.threads or run.distributed.cpus_per_worker) if workers == 1 else run.distributed.cpus_per_worker
    need = {"CPU": workers * per}
    if use_gpu:
        import torch

        need["GPU"], have["GPU"] = workers, torch.cuda.device_count()
    for kind, n in need.items():
        if have[kind] < n:
            each = per if kind == "CPU" else 1
            fits = f"use --workers-per-trial {have[kind] // each} or less" if have[kind] >= each else (
                "drop --use-gpu" if kind == "GPU" else f"lower the CPUs per worker ({per})")
            raise UserError(f"--workers-per-trial {workers} needs {n} {kind}s ({each} per worker), but the Ray this "
                            f"sweep starts here has {have[kind]}: {fits}, or connect to a larger cluster (RAY_ADDRESS)")
