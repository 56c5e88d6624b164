"""The sweep driver: plan (every check before anything starts), search (Ray Tune + Optuna TPE + ASHA, k-fold CV
per trial), retrain the champion on train+val and test it once, register it in MLflow.

Every trial is judged by one figure, the space's ``figure`` (the best fold-mean CV metric so far,
``best_cv_metric``): the searcher is told it, ASHA prunes on it, and the champion is the best finished trial by
it. The trials themselves are ``cmmd_dist.tune.trial``; the command line, ``cmmd_dist.cli.tune``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cmmd_dist.config import RunConfig, SweepConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune.results import format_table, trials_table
from cmmd_dist.tune.search_space import SearchSpace, apply_params, load_search_space

__all__ = ["run_sweep", "plan_sweep", "check_before_ray", "SweepPlan", "SweepFailed", "champion_row", "sweep_base", "sweep_paths",
           "resume_command"]


def sweep_base(settings: SweepConfig, space: SearchSpace, dataset: str | None = None) -> dict:
    """The run-config values shared by every trial: the space's fixed values plus the sweep's settings."""
    base = {s: dict(v) for s, v in space.fixed.items()}
    data = base.setdefault("data", {})
    data["dataset"] = settings.data or dataset or space.dataset
    _pin_local_source(data)
    if settings.scenario:
        data["scenario"] = settings.scenario
    base.setdefault("train", {}).update(seed=settings.seed, progress=False, baseline=False)
    if settings.bf16:
        base.setdefault("distributed", {})["bf16"] = True
    RunConfig.model_validate(base)  # fail before any trial starts
    return base


def _pin_local_source(data: dict) -> None:
    """Give trials an absolute data source: Tune runs each trial in its own directory, where a relative
    path (or the relative default ``../shared/data/mnist.pkl.gz`` of mnist2v) names nothing."""
    from cmmd_dist.datasets.registry import looks_like_uri
    from cmmd_dist.storage import is_s3_uri

    source = data.get("source")
    if source is None and data["dataset"] == "mnist2v":
        from cmmd_dist.datasets.converters.mnist import find_mnist

        found = find_mnist(None)
        source = str(found) if found.exists() else None
    if source and not is_s3_uri(source):
        data["source"] = str(Path(source).resolve())
    if looks_like_uri(data["dataset"]) and not is_s3_uri(data["dataset"]):
        data["dataset"] = str(Path(data["dataset"]).resolve())


def sweep_paths(settings: SweepConfig, dataset: str) -> tuple[str, str]:
    """(storage root, sweep name). Unnamed sweeps get a timestamp; an unnamed --resume takes the newest one."""
    storage = settings.storage or str(Path(settings.output_dir, "sweeps").resolve())
    if settings.name:
        return storage, settings.name
    prefix = f"sweep-{dataset}" + (f"-{settings.scenario}" if settings.scenario else "")
    if settings.resume:
        import pyarrow.fs as pafs

        from cmmd_dist.storage import resolve

        fs, root = resolve(storage)
        found = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
                       if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix + "-"))
        if not found:
            raise UserError(f"--resume: no sweep named {prefix}-* under {storage}")
        return storage, found[-1]
    return storage, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


class SweepFailed(UserError):
    """The sweep ran but produced nothing to register (every trial failed, or none finished its CV)."""


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep needs that can be checked before it starts: nothing is written to make one."""

    settings: SweepConfig
    space: SearchSpace
    dataset: str  # the name its experiment, summary and registered model carry
    base: dict
    storage: str
    name: str
    root: str  # storage path inside ``fs`` (the storage URI itself for a local folder)
    fs: object  # pyarrow filesystem for s3:// storage (keyless), else None

    @property
    def exp_path(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"


def _prepared_name(uri: str) -> str:
    """The dataset name a prepared dataset's manifest gives (a bring-your-own dataset is named by it)."""
    from cmmd_dist.datasets.shards import manifest_spec
    from cmmd_dist.storage import read_manifest

    return manifest_spec(read_manifest(uri)).name


def _space_for(settings: SweepConfig, dataset: str | None) -> SearchSpace:
    if settings.space:
        space = load_search_space(settings.space)
    else:
        try:
            space = load_search_space(dataset or "digits2v")
        except FileNotFoundError as err:
            if settings.data:
                raise UserError(f"no search space for dataset {dataset!r} (named by the manifest of --data "
                                f"{settings.data}): write one and pass --space FILE.yaml (cmmd_dist/search_spaces/digits2v.yaml "
                                "is a template)") from None
            raise UserError(err.args[0]) from None
    return space.with_preset(settings.preset)


def plan_sweep(settings: SweepConfig) -> SweepPlan:
    """Every check a sweep can make before it starts (dataset, search space, preset, storage, resume or
    name clash), as one-line :class:`UserError`; nothing is written, no run is started."""
    from cmmd_dist.storage import check_bucket, is_s3_uri, resolve_without_keys
    from cmmd_dist.tune.identity import check_resumed, resume_identity

    settings = resume_identity(settings)  # a resume keeps its sweep's dataset, data, space, preset, tracking
    try:
        named = _prepared_name(settings.data) if settings.data else None
        if named and settings.dataset and settings.dataset != named:
            raise UserError(f"--data {settings.data} holds dataset {named!r}, but --dataset is {settings.dataset!r}")
        space = _space_for(settings, named or settings.dataset)
        dataset = named or settings.dataset or space.dataset
        base = sweep_base(settings, space, dataset)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(err.args[0] if err.args else str(err)) from None
    from cmmd_dist.tune.budget import check_budget

    check_budget(settings.max_trial_epochs, settings.workers_per_trial or space.workers_per_trial)
    check_before_ray(settings, space, base)
    storage, name = sweep_paths(settings, dataset)
    if is_s3_uri(storage):
        check_bucket(storage)
    # Tune pickles this filesystem into tuner.pkl and the trials: keyless, each node brings its own credentials
    fs, root = resolve_without_keys(storage) if is_s3_uri(storage) else (None, storage)
    plan = SweepPlan(settings, space, dataset, base, storage, name, root, fs)
    from ray import tune

    exists = tune.Tuner.can_restore(plan.exp_path, storage_filesystem=fs)
    if settings.resume and not exists:
        raise UserError(f"--resume: {plan.exp_path} holds no sweep to resume")
    if not settings.resume and settings.name and exists:
        raise UserError(f"sweep {plan.exp_path} exists: add --resume to continue it, or pick another --name")
    return check_resumed(plan, plan_sweep) if settings.resume else plan


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
    try:
        from ray._private.services import get_ray_address_from_environment
        from ray._private.utils import get_num_cpus

        if get_ray_address_from_environment(None, None) is not None:
            return
        have = {"CPU": int(get_num_cpus())}
    except (ImportError, AttributeError, ConnectionError):  # private API gone: Ray decides
        return
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


def run_sweep(settings: SweepConfig, log=print) -> dict:
    """Run (or resume) a sweep; returns the summary (also written as JSON).

    Checks come first (:func:`plan_sweep`), then the sweep's MLflow run; every way out ends that run:
    FINISHED with a registered champion, FAILED (an error, or no trial finished its CV: nothing is
    registered) or KILLED (Ctrl-C; the message says how to resume)."""
    from cmmd_dist.tracking.store import take_credentials
    from cmmd_dist.tune.identity import record_identity

    # a user and password in --mlflow go to this process's environment: no URI stored or printed carries them
    settings = settings.model_copy(update={"mlflow": take_credentials(settings.mlflow)})
    plan = plan_sweep(settings)
    record_identity(plan, log)
    from cmmd_dist.train.ray_connect import connect_ray
    from cmmd_dist.tune.ray_env import keep_credentials_out_of_runtime_env
    from cmmd_dist.tune.sweep_tracking import start_recorder

    keep_credentials_out_of_runtime_env()
    # a tracking outage is waited out by the recorder's queue, not by minutes of client retries per event
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    # Ctrl-C raises here (Tune's own handler would end fit() quietly and the run would look finished); the
    # experiment state is saved every 2 s anyway, so --resume loses at most that
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    connect_ray()
    recorder = start_recorder(plan.dataset, settings.scenario, plan.space.model_dump(mode="json"), plan.exp_path,
                              settings.mlflow, settings.searcher or plan.space.searcher, settings.preset)
    try:
        summary = _search_and_register(plan, recorder, log)
    except KeyboardInterrupt:
        recorder.abort("KILLED")
        log(f"sweep interrupted; continue it with: {resume_command(plan)}")
        raise
    except BaseException:
        recorder.abort("FAILED")
        raise
    return summary


def resume_command(plan: SweepPlan) -> str:
    from cmmd_dist.storage.url_credentials import tracking_uri_shown

    s = plan.settings.model_copy(update={"mlflow": tracking_uri_shown(plan.settings.mlflow)})
    parts = ["python -m cmmd_dist.tune", f"--dataset {plan.dataset}", f"--name {plan.name}", "--resume"]
    for flag, value in (("--data", s.data), ("--space", s.space), ("--scenario", s.scenario), ("--preset", s.preset),
                        ("--storage", s.storage), ("--mlflow", s.mlflow), ("--out", s.output_dir if s.output_dir != "runs" else None)):
        if value:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _search_and_register(plan: SweepPlan, recorder, log) -> dict:
    import ray
    from ray import tune

    from cmmd_dist.tune.budget import TrialEpochBudget, budget_in_force
    from cmmd_dist.tune.searchers import make_scheduler, make_searcher, tune_param_space
    from cmmd_dist.tune.sweep_tracking import MlflowTrials, finish_sweep
    from cmmd_dist.tune.trial import trial_fn
    from cmmd_dist.tune.workarounds import Verdicts

    settings, space, base, name, fs, root = plan.settings, plan.space, plan.base, plan.name, plan.fs, plan.root
    base_run = RunConfig.model_validate(base)
    epochs = base_run.train.epochs
    workers = settings.workers_per_trial or space.workers_per_trial
    num_trials = settings.num_trials or space.num_trials
    # save the experiment state often, so that a killed driver's finished trials are known as finished
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # those saves forced by trial checkpoints (below) are expected: no warning for each
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    concurrent = settings.max_concurrent_trials or max(1, int(cluster_cpus // workers))
    verdicts = f"cmmd-verdicts-{name}" if settings.asha and workers > 1 else None  # workarounds.CooperativeASHA
    # the named actor lives as long as this handle: until the trials are done
    verdicts_actor = Verdicts.options(name=verdicts, get_if_exists=True).remote() if verdicts else None
    trainable = tune.with_parameters(trial_fn, base=base, folds=space.folds, workers=workers,
                                     use_gpu=settings.use_gpu, storage=f"{root.rstrip('/')}/{name}-train",
                                     verdicts=verdicts, storage_fs=fs)
    if workers == 1:  # the trial computes in its own process
        cpus = base_run.train.threads or base_run.distributed.cpus_per_worker
        trainable = tune.with_resources(trainable, {"cpu": cpus, "gpu": int(settings.use_gpu)})
    else:  # the trial only waits on its workers: no CPU of its own (a bundle may not be empty, so a little memory)
        trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 64 * 1024**2})
    t0 = time.time()
    exp_path = plan.exp_path
    if settings.resume:
        log(f"resuming sweep {exp_path}")
        if settings.max_trial_epochs:
            log("--max-trial-epochs is not read by --resume: the sweep keeps the budget it started with")
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        searcher = settings.searcher or space.searcher
        grid = searcher == "grid"
        search_alg = make_searcher(settings, space, concurrent, num_trials)
        trials_cb = MlflowTrials(recorder, space.figure)
        # the budget stops the sweep, then ends the trials it stopped in the searcher and in MLflow (budget.py)
        budget = (TrialEpochBudget(settings.max_trial_epochs, search_alg, [trials_cb])
                  if settings.max_trial_epochs else None)
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(space, searcher),
            tune_config=tune.TuneConfig(  # metric and mode: the searcher's and the scheduler's, the space's figure
                num_samples=1 if grid else num_trials,
                search_alg=search_alg,
                scheduler=make_scheduler(settings, space, epochs, workers, verdicts or ""),
                max_concurrent_trials=concurrent, time_budget_s=settings.time_budget_s,
                reuse_actors=workers == 1,  # a 1-worker trial's process (torch imported) serves the next trial
            ),
            run_config=tune.RunConfig(name=name, storage_path=root, storage_filesystem=fs, verbose=1, stop=budget,
                                      callbacks=[trials_cb] + ([budget] if budget else []),
                                      # a 1-worker trial's epoch checkpoints (trial.py): Tune keeps the newest two,
                                      # and saves its state each time a trial has written two, so that the
                                      # checkpoint the saved state names is still there
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    grid_result = tuner.fit()
    del verdicts_actor
    rows = trials_table(grid_result, space)
    budget = budget_in_force(tuner)
    summary = {"dataset": plan.dataset, "scenario": settings.scenario, "preset": settings.preset, "sweep": exp_path,
               "searcher": settings.searcher or space.searcher, "folds": space.folds.model_dump(),
               "workers_per_trial": workers, "max_concurrent_trials": concurrent, "cpus": cluster_cpus,
               "trials": rows, "trial_epochs_total": sum(r["epochs_run"] or 0 for r in rows),
               "trials_failed": sum(r["error"] is not None for r in rows) + _silent_failures(grid_result),
               "search_seconds": time.time() - t0,
               "max_trial_epochs": budget.max_trial_epochs if budget else None,
               "stopped_by_budget": bool(budget and budget.spent)}
    if budget and budget.spent:
        log(f"trial-epoch budget spent: {budget.used} of {budget.max_trial_epochs}; the sweep stopped there, "
            f"{len(budget.stopped)} trials ended at their last reported epoch")
    best = champion_row(rows)
    if best is None:
        raise SweepFailed(f"no trial of sweep {exp_path} finished its cross-validation "
                          f"({summary['trials_failed']} failed, {len(rows)} reported): nothing registered")
    if settings.retrain:
        summary.update(_retrain_best(plan, best, log, workers))
        summary["model_uri"] = finish_sweep(recorder, summary, summary.pop("_retrain"), summary.pop("_bundle"),
                                            summary["best_run_config"])
    else:
        recorder.drain()
        recorder.tracker.end_run(recorder.parent)
    summary["tracking_points_lost"] = recorder.lost
    log(format_table(rows, summary.get("test"), summary.get("mx_o_test")))
    if recorder.lost:
        log(f"MLflow {recorder.tracker.uri} was away: {recorder.lost} tracking writes are lost")
    if "model_uri" in summary:
        from cmmd_dist.tracking.store import ui_command

        log(f"registered {summary['model_uri']}\nbrowse the sweep: {ui_command(settings.mlflow)}")
    out = Path(settings.output_dir) / f"{name}-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=2, default=str))
    summary["summary_path"] = str(out)
    log(f"summary: {out}")
    return summary


def _silent_failures(result_grid) -> int:
    """Trials that failed before their first report (they have no metrics, so no row)."""
    return sum(1 for r in result_grid if r.error and not r.metrics)


def champion_row(rows: list[dict]) -> dict | None:
    """The best trial that finished its cross-validation (not pruned, not failed), or None."""
    done = [r for r in rows if not r["stopped_early"] and r["error"] is None and r["best_cv_metric"] is not None]
    return done[0] if done else None


def _retrain_best(plan: SweepPlan, best: dict, log, workers: int) -> dict:
    """The champion retrained on Ray Train with the trials' workers and GPU setting: its pretraining, then the
    supervised epochs CV chose, on train+val; tested once. Checkpointed under ``<storage>/<sweep>-train/
    retrain-<trial>``: a sweep resumed after its driver died during the retrain continues it there."""
    from cmmd_dist.datasets.registry import load_bundle
    from cmmd_dist.train.distributed import retrain_distributed

    run = RunConfig.model_validate(apply_params(plan.base, best["params"]))
    epochs = max(1, int(best["best_epoch"] or run.train.epochs))
    dist = {"workers": workers, "use_gpu": plan.settings.use_gpu, "name": f"retrain-{best['trial_id']}-e{epochs}",
            "storage": f"{plan.storage.rstrip('/')}/{plan.name}-train"}
    run = run.model_copy(update={"distributed": run.distributed.model_copy(update=dist)})
    log(f"retraining trial {best['trial_id']} on train+val: {run.train.pretrain_epochs} pretraining + {epochs} "
        f"supervised epochs on {workers} Ray Train workers{' (GPU)' if plan.settings.use_gpu else ''}")
    res = retrain_distributed(run, epochs, log=log)  # its test figures include latent_accuracy (multi-class data)
    bundle = load_bundle(run.data)
    out = {"best": best, "best_run_config": run.model_dump(mode="json"), "retrain_epochs": epochs,
           "retrain_pretrain_epochs": run.train.pretrain_epochs, "retrain_workers": res["workers"],
           "retrain_device": res["device"], "retrain_checkpoint": res["checkpoint"],
           "test": res["test"], "_retrain": res, "_bundle": bundle}
    if run.model.kind != "mx_o":
        out["mx_o_test"] = _retrain_mx_o(run, epochs, log)
    return out


def _retrain_mx_o(run: RunConfig, epochs: int, log) -> dict:
    """M-x_o (the champion's prior network and classifier on x_o alone, ``model.kind=mx_o``) under the champion's
    budget: the same train+val rows, supervised epochs, batch size, learning rate, seed and workers; tested once.
    No pretraining: without labels M-x_o has nothing to learn."""
    from cmmd_dist.train.distributed import retrain_distributed

    mx = run.model_copy(update={
        "model": run.model.model_copy(update={"kind": "mx_o"}),
        "train": run.train.model_copy(update={"pretrain_epochs": 0}),
        "distributed": run.distributed.model_copy(update={"name": f"{run.distributed.name}-mx_o"})})
    log(f"retraining M-x_o (x_o alone) on the same rows for {epochs} epochs")
    return retrain_distributed(mx, epochs, log=log)["test"]
