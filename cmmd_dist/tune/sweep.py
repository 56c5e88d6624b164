"""The sweep driver: plan (every check before anything starts), search (Ray Tune + Optuna TPE + ASHA, k-fold CV
per trial), retrain the champion on train+val and test it once, register it in MLflow.

Every trial is judged by one figure, the space's ``figure`` (the best fold-mean CV metric so far,
``best_cv_metric``): the searcher is told it, ASHA prunes on it, and the champion is the best finished trial by
it. The trials themselves are ``cmmd_dist.tune.trial``; the command line, ``cmmd_dist.cli.tune``.
"""

from __future__ import annotations
import os
import time

from cmmd_dist.config import RunConfig, SweepConfig
from cmmd_dist.tune.paths import sweep_paths
from cmmd_dist.tune.plan import SweepFailed, SweepPlan, plan_sweep, sweep_base
from cmmd_dist.tune.preflight import check_before_ray
from cmmd_dist.tune.register import champion_row, register_champion, write_summary
from cmmd_dist.tune.results import trials_table

# plan_sweep ... champion_row live in plan, paths, preflight and register; importable from here as before
__all__ = ["run_sweep", "plan_sweep", "check_before_ray", "SweepPlan", "SweepFailed", "champion_row", "sweep_base", "sweep_paths",
           "resume_command"]


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
    from cmmd_dist.tune.workarounds import keep_credentials_out_of_runtime_env
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

    from cmmd_dist.tune.budget import budget_in_force
    from cmmd_dist.tune.workarounds import Verdicts

    settings, space, name = plan.settings, plan.space, plan.name
    workers = settings.workers_per_trial or space.workers_per_trial
    # save the experiment state often, so that a killed driver's finished trials are known as finished
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # those saves forced by trial checkpoints (below) are expected: no warning for each
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    concurrent = settings.max_concurrent_trials or max(1, int(cluster_cpus // workers))
    verdicts = f"cmmd-verdicts-{name}" if settings.asha and workers > 1 else None  # workarounds.CooperativeASHA
    # the named actor lives as long as this handle: until the trials are done
    verdicts_actor = Verdicts.options(name=verdicts, get_if_exists=True).remote() if verdicts else None
    t0 = time.time()
    tuner = _tuner(plan, recorder, log, workers, concurrent, verdicts)
    grid_result = tuner.fit()
    del verdicts_actor
    rows = trials_table(grid_result, space)
    budget = budget_in_force(tuner)
    summary = {"dataset": plan.dataset, "scenario": settings.scenario, "preset": settings.preset, "sweep": plan.exp_path,
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
        raise SweepFailed(f"no trial of sweep {plan.exp_path} finished its cross-validation "
                          f"({summary['trials_failed']} failed, {len(rows)} reported): nothing registered")
    register_champion(plan, best, summary, recorder, log, workers)
    write_summary(plan, summary, rows, recorder, log)
    return summary


def _trainable(plan: SweepPlan, workers: int, verdicts: str | None):
    """The trial function with the sweep's shared values and the resources a trial asks of Tune."""
    from ray import tune

    from cmmd_dist.tune.trial import trial_fn

    settings, root, base_run = plan.settings, plan.root, RunConfig.model_validate(plan.base)
    trainable = tune.with_parameters(trial_fn, base=plan.base, folds=plan.space.folds, workers=workers,
                                     use_gpu=settings.use_gpu, storage=f"{root.rstrip('/')}/{plan.name}-train",
                                     verdicts=verdicts, storage_fs=plan.fs)
    if workers == 1:  # the trial computes in its own process
        cpus = base_run.train.threads or base_run.distributed.cpus_per_worker
        trainable = tune.with_resources(trainable, {"cpu": cpus, "gpu": int(settings.use_gpu)})
    else:  # the trial only waits on its workers: no CPU of its own (a bundle may not be empty, so a little memory)
        trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 64 * 1024**2})
    return trainable


def _tuner(plan: SweepPlan, recorder, log, workers: int, concurrent: int, verdicts: str | None):
    """A new Tuner for the sweep, or the one ``--resume`` restores from its storage."""
    from ray import tune

    from cmmd_dist.tune.budget import TrialEpochBudget
    from cmmd_dist.tune.searchers import make_scheduler, make_searcher, tune_param_space
    from cmmd_dist.tune.sweep_tracking import MlflowTrials

    settings, space, name, fs, root, exp_path = plan.settings, plan.space, plan.name, plan.fs, plan.root, plan.exp_path
    trainable = _trainable(plan, workers, verdicts)
    epochs = RunConfig.model_validate(plan.base).train.epochs
    num_trials = settings.num_trials or space.num_trials
    if settings.resume:
        log(f"resuming sweep {exp_path}")
        if settings.max_trial_epochs:
            log("--max-trial-epochs is not read by --resume: the sweep keeps the budget it started with")
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    searcher = settings.searcher or space.searcher
    grid = searcher == "grid"
    search_alg = make_searcher(settings, space, concurrent, num_trials)
    trials_cb = MlflowTrials(recorder, space.figure)
    # the budget stops the sweep, then ends the trials it stopped in the searcher and in MLflow (budget.py)
    budget = (TrialEpochBudget(settings.max_trial_epochs, search_alg, [trials_cb])
              if settings.max_trial_epochs else None)
    return tune.Tuner(
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


def _silent_failures(result_grid) -> int:
    """Trials that failed before their first report (they have no metrics, so no row)."""
    return sum(1 for r in result_grid if r.error and not r.metrics)
