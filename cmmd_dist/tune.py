"""``python -m cmmd_dist.tune --dataset NAME``: the sweep. Ray Tune + Optuna (TPE) + ASHA, k-fold CV per trial.

Each trial is a function that builds and fits a Ray Train ``TorchTrainer`` (Train V2) running the
fold-parallel CV loop of ``cmmd_dist.train.cv`` and forwards its reports with ``TuneReportCallback``.
After the search the best configuration is retrained on train+val for the epoch count CV chose,
tested once on the untouched test split, and summarised (table on stdout, JSON next to the results).

    python -m cmmd_dist.tune --dataset digits2v --preset smoke
    ray job submit -- python -m cmmd_dist.tune --dataset flickr --workers-per-trial 4 --use-gpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cmmd_dist.config import RunConfig, SweepConfig
from cmmd_dist.errors import UserError, run_cli
from cmmd_dist.search_space import Folds, SearchSpace, apply_params, load_search_space

__all__ = ["run_sweep", "plan_sweep", "SweepPlan", "SweepFailed", "champion_row", "trial_fn", "sweep_base", "main",
           "run_from_args", "build_parser", "sweep_paths"]

METRIC, MODE = "cv_metric", "min"


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


def trial_fn(config: dict, base: dict, folds: Folds, workers: int, use_gpu: bool, storage: str,
             verdicts: str | None = None, storage_fs=None) -> None:
    """One trial: a TorchTrainer over ``workers`` Ray Train workers running fold-parallel CV."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from cmmd_dist.train.cv import cv_worker
    from cmmd_dist.train.distributed import quick_report_polling

    quick_report_polling()  # an epoch of a small trial would otherwise wait 2 s for its report to be taken
    run = RunConfig.model_validate(apply_params(base, config))
    trial_id = ray.tune.get_context().get_trial_id()
    TorchTrainer(
        cv_worker,
        train_loop_config={"run": run, "folds": folds, "trial_id": trial_id, "verdicts": verdicts},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name=f"trial-{trial_id}", storage_path=storage, storage_filesystem=storage_fs,
                                       callbacks=[TuneReportCallback()]),
    ).fit()
    _drain_reports()


def _drain_reports(timeout_s: float = 60.0, settle_s: float = 1.0) -> None:
    """Return from a trial only once Tune has taken the trainer's last report.

    Ray 2.60 deadlocks otherwise: ``TuneReportCallback`` hands each report to the trial through a
    one-slot queue actor; when the trial function returns while the last report still sits there, the
    function's end-of-trial marker fills the trial's one-slot result queue first and the trial's main
    thread, forwarding that last report into the same full queue, blocks forever (seen on a loaded
    two-node cluster: the sweep never ends)."""
    import time

    from ray.train._internal.session import get_session

    queue = getattr(get_session(), "_inter_actor_queue", None)
    deadline = time.monotonic() + timeout_s
    while queue is not None and not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle_s)  # the main thread moves the item it just took into the result queue


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


def _trials_table(result_grid, space: SearchSpace) -> list[dict]:
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        if not m:
            continue
        rows.append({
            "trial_id": m.get("trial_id"), "params": {k: r.config.get(k) for k in space.params},
            "best_cv_metric": m.get("best_cv_metric"), "cv_metric": m.get(METRIC), "cv_std": m.get("cv_std"),
            "best_cv_rmse": m.get("best_cv_rmse"), "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epoch"), "stopped_early": not m.get("cv_completed", 0),
            "error": str(r.error) if r.error else None, "finished_at": m.get("timestamp"),
        })
    return sorted(rows, key=lambda row: (row["best_cv_metric"] is None, row["best_cv_metric"]))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(rows: list[dict], test: dict | None, top: int = 10) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", *[k.split(".")[-1] for k in keys], "cv mean", "+-", "epoch", "ran", "pruned"]
    lines = [" | ".join(head)]
    for r in rows[:top]:
        vals = [f"{r['params'][k]:.4g}" if isinstance(r["params"][k], float) else str(r["params"][k]) for k in keys]
        lines.append(" | ".join([str(r["trial_id"]), *vals, _fmt(r["best_cv_metric"]), _fmt(r["cv_std"]),
                                 str(r["best_epoch"]), str(r["epochs_run"]), "yes" if r["stopped_early"] else "no"]))
    if test:
        fig = f"error {100 * test['error']:.2f}%" if "error" in test else f"mAP {test['map']:.4f}"
        lines.append(f"best configuration retrained on train+val, tested once: {fig}, rmse {test['rmse']:.4f}")
    return "\n".join(lines)


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
                                f"{settings.data}): write one and pass --space FILE.yaml (search_spaces/digits2v.yaml "
                                "is a template)") from None
            raise UserError(err.args[0]) from None
    return space.with_preset(settings.preset)


def plan_sweep(settings: SweepConfig) -> SweepPlan:
    """Every check a sweep can make before it starts (dataset, search space, preset, storage, resume or
    name clash), as one-line :class:`UserError`; nothing is written, no run is started."""
    from cmmd_dist.storage import check_bucket, is_s3_uri, resolve_without_keys

    try:
        named = _prepared_name(settings.data) if settings.data else None
        if named and settings.dataset and settings.dataset != named:
            raise UserError(f"--data {settings.data} holds dataset {named!r}, but --dataset is {settings.dataset!r}")
        space = _space_for(settings, named or settings.dataset)
        dataset = named or settings.dataset or space.dataset
        base = sweep_base(settings, space, dataset)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(err.args[0] if err.args else str(err)) from None
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
    return plan


def run_sweep(settings: SweepConfig, log=print) -> dict:
    """Run (or resume) a sweep; returns the summary (also written as JSON).

    Checks come first (:func:`plan_sweep`), then the sweep's MLflow run; every way out ends that run:
    FINISHED with a registered champion, FAILED (an error, or no trial finished its CV: nothing is
    registered) or KILLED (Ctrl-C; the message says how to resume)."""
    plan = plan_sweep(settings)
    import ray

    from cmmd_dist.ray_env import keep_credentials_out_of_runtime_env
    from cmmd_dist.sweep_tracking import start_recorder

    keep_credentials_out_of_runtime_env()
    # a tracking outage is waited out by the recorder's queue, not by minutes of client retries per event
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    # Ctrl-C raises here (Tune's own handler would end fit() quietly and the run would look finished); the
    # experiment state is saved every 2 s anyway, so --resume loses at most that
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if not ray.is_initialized():
        ray.init()
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
    s = plan.settings
    parts = ["python -m cmmd_dist.tune", f"--dataset {plan.dataset}", f"--name {plan.name}", "--resume"]
    for flag, value in (("--data", s.data), ("--space", s.space), ("--scenario", s.scenario), ("--preset", s.preset),
                        ("--storage", s.storage), ("--mlflow", s.mlflow), ("--out", s.output_dir if s.output_dir != "runs" else None)):
        if value:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _search_and_register(plan: SweepPlan, recorder, log) -> dict:
    import ray
    from ray import tune

    from cmmd_dist.searchers import Verdicts, make_scheduler, make_searcher, tune_param_space
    from cmmd_dist.sweep_tracking import MlflowTrials, finish_sweep

    settings, space, base, name, fs, root = plan.settings, plan.space, plan.base, plan.name, plan.fs, plan.root
    epochs = RunConfig.model_validate(base).train.epochs
    workers = settings.workers_per_trial or space.workers_per_trial
    num_trials = settings.num_trials or space.num_trials
    # save the experiment state often, so that a killed driver's finished trials are known as finished
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    cpus = ray.cluster_resources().get("CPU", 1)
    concurrent = settings.max_concurrent_trials or max(1, int(cpus // workers))
    verdicts = f"cmmd-verdicts-{name}" if settings.asha else None
    if verdicts:
        verdicts_actor = Verdicts.options(name=verdicts, get_if_exists=True).remote()  # noqa: F841 (kept alive)
    trainable = tune.with_parameters(trial_fn, base=base, folds=space.folds, workers=workers,
                                     use_gpu=settings.use_gpu, storage=f"{root.rstrip('/')}/{name}-train",
                                     verdicts=verdicts, storage_fs=fs)
    # the trial driver only waits on its workers: no CPU of its own (a bundle may not be empty, so a little memory)
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 64 * 1024**2})
    t0 = time.time()
    exp_path = plan.exp_path
    if settings.resume:
        log(f"resuming sweep {exp_path}")
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        searcher = settings.searcher or space.searcher
        grid = searcher == "grid"
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(space, searcher),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=1 if grid else num_trials,
                search_alg=make_searcher(settings, space, concurrent, num_trials),
                scheduler=make_scheduler(settings, space, epochs, verdicts or ""),
                max_concurrent_trials=concurrent, time_budget_s=settings.time_budget_s,
            ),
            run_config=tune.RunConfig(name=name, storage_path=root, storage_filesystem=fs, verbose=1,
                                      callbacks=[MlflowTrials(recorder)]),
        )
    grid_result = tuner.fit()
    rows = _trials_table(grid_result, space)
    summary = {"dataset": plan.dataset, "scenario": settings.scenario, "preset": settings.preset, "sweep": exp_path,
               "searcher": settings.searcher or space.searcher, "folds": space.folds.model_dump(),
               "workers_per_trial": workers, "max_concurrent_trials": concurrent, "cpus": cpus,
               "trials": rows, "trial_epochs_total": sum(r["epochs_run"] or 0 for r in rows),
               "trials_failed": sum(r["error"] is not None for r in rows) + _silent_failures(grid_result),
               "search_seconds": time.time() - t0}
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
    log(format_table(rows, summary.get("test")))
    if recorder.lost:
        log(f"MLflow {recorder.tracker.uri} was away: {recorder.lost} tracking writes are lost")
    if "model_uri" in summary:
        from cmmd_dist.tracking import ui_command

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
    res = retrain_distributed(run, epochs, log=log)
    return {"best": best, "best_run_config": run.model_dump(mode="json"), "retrain_epochs": epochs,
            "retrain_pretrain_epochs": run.train.pretrain_epochs, "retrain_workers": res["workers"],
            "retrain_device": res["device"], "retrain_checkpoint": res["checkpoint"],
            "test": res["test"], "_retrain": res, "_bundle": load_bundle(run.data)}


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    standalone = p is None
    p = p or argparse.ArgumentParser(prog="python -m cmmd_dist.tune", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="dataset name (default: the manifest's name with --data, else digits2v)")
    p.add_argument("--space", help="search-space YAML (default: search_spaces/<dataset>.yaml)")
    p.add_argument("--scenario", help="observed-modality scenario (its own sweep and model)")
    p.add_argument("--preset", help="preset of the space: paper, smoke, ...")
    p.add_argument("--num-trials", type=int)
    p.add_argument("--time-budget-s", type=float)
    p.add_argument("--workers-per-trial", type=int)
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, nccl")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (the MMD stays fp32)")
    p.add_argument("--data", help="prepared dataset URI")
    p.add_argument("--storage", help="sweep storage (local folder or s3://...)")
    p.add_argument("--searcher", choices=["optuna", "grid"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    p.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial may be stopped (default: the space's)")
    p.add_argument("--reduction-factor", type=float, help="ASHA: rung reduction factor (default: the space's)")
    p.add_argument("--max-concurrent-trials", type=int)
    p.add_argument("--name", help="sweep name")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument("--out", default="runs", help="output folder for summaries and models")
    p.add_argument("--mlflow", help="MLflow tracking URI")
    if standalone:
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def settings_from_args(a: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        dataset=a.dataset, space=a.space, scenario=a.scenario, preset=a.preset, num_trials=a.num_trials,
        time_budget_s=a.time_budget_s, workers_per_trial=a.workers_per_trial, use_gpu=a.use_gpu, bf16=a.bf16, data=a.data,
        storage=a.storage, searcher=a.searcher, seed=a.seed, asha=not a.no_asha,
        grace_period=a.grace_period, reduction_factor=a.reduction_factor,
        max_concurrent_trials=a.max_concurrent_trials, name=a.name, resume=a.resume, retrain=not a.no_retrain,
        output_dir=a.out, mlflow=a.mlflow,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``cmmd-dist tune`` and ``python -m cmmd_dist.tune``: the same checks, the same sweep. A sweep in which
    no trial finished its CV exits 1; user errors are :class:`UserError` (one line, exit 2, via run_cli)."""
    try:
        run_sweep(settings_from_args(args))
    except SweepFailed as err:
        print(f"cmmd_dist.tune: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run_from_args(args), prog="cmmd_dist.tune", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
