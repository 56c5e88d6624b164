"""One sweep trial: k-fold CV of one configuration, reported to Tune epoch by epoch.

A 1-worker trial runs its CV loop in the Tune function itself (its own process, one trial actor: no Train
controller, no worker actor, no report hand-over), and Tune's own ASHA stops it. A multi-worker trial builds a
Ray Train ``TorchTrainer`` (DDP over ``workers`` ranks, the MMD over the all-gathered global batch) whose
workers run the same loop (:func:`cv_worker`); its reports reach Tune through ``TuneReportCallback`` and ASHA's
decisions reach it cooperatively (``cmmd_dist.tune.workarounds``).

Every report carries ``stage``, ``epoch`` and the fold-mean figures of ``cmmd_dist.train.cv.cv_epoch``, plus
``best_cv_metric`` (the best fold-mean CV metric so far: the figure the searcher, ASHA and the final selection
use; NaN in pretraining reports, which no one judges), ``best_epoch`` and ``cv_completed`` (1 only on the report
that ends the trial by itself: last epoch, or patience ran out).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cmmd_dist.config import RunConfig
from cmmd_dist.tune.search_space import Folds, apply_params

__all__ = ["trial_fn", "cv_loop", "cv_worker"]


def cv_loop(run: RunConfig, folds: Folds, rank: int, world: int, device, report: Callable[[dict], None],
            stop: Callable[[int], bool] | None = None, observe=None, prepare=None) -> None:
    """The trial's epochs on this rank: pretraining (if any), then supervised CV until the last epoch, patience,
    or ``stop(epoch)`` (asked after each supervised report that did not end the trial)."""
    from cmmd_dist.train.cv import build_folds, cv_epoch
    from cmmd_dist.train.gather import gather_for
    from cmmd_dist.train.optim import make_optimizer
    from cmmd_dist.train.ranks import autocast_for

    states, _ = build_folds(run, folds, rank, world, device)
    if prepare is not None:
        for s in states:
            s.model = prepare(s.core)
    gather = gather_for(run.loss.mmd_scope)
    autocast = autocast_for(torch.device(device), run.distributed.bf16)
    epoch = 0
    for pre in range(1, run.train.pretrain_epochs + 1):
        epoch += 1
        row = cv_epoch(run, states, world, gather, rank, "pretrain", autocast, observe, epoch)
        row.update(stage="pretrain", epoch=epoch, pretrain_epoch=pre, best_cv_metric=float("nan"), cv_completed=0)
        report(row)
    if run.train.pretrain_epochs:
        for s in states:  # the supervised stage starts its own Adam moments, as the single process does
            s.optimizer = make_optimizer(s.core.parameters(), run.train)
    best, best_epoch, best_rmse = float("inf"), 0, float("nan")
    for sup in range(1, run.train.epochs + 1):
        epoch += 1
        row = cv_epoch(run, states, world, gather, rank, "supervised", autocast, observe, epoch)
        if row["cv_metric"] < best:  # the CV metric is lower-is-better (SearchSpace.mode)
            best, best_epoch, best_rmse = row["cv_metric"], sup, row["cv_rmse"]
        patience_out = sup - best_epoch >= run.train.patience
        row.update(stage="supervised", epoch=epoch, supervised_epoch=sup, best_cv_metric=best, best_epoch=best_epoch,
                   best_cv_rmse=best_rmse, cv_completed=int(sup == run.train.epochs or patience_out))
        report(row)
        if row["cv_completed"] or (stop is not None and stop(epoch)):
            break


def cv_worker(config: dict) -> None:
    """Ray Train worker loop of a multi-worker trial: ``config`` = {'run': RunConfig, 'folds': Folds, 'trial_id',
    'verdicts'}. With ``verdicts`` (the name of the scheduler's verdict actor) the trial ends itself when ASHA says
    stop. ``observe`` (optional): a function that sees every batch and step of this rank (``cv._Tap``)."""
    import ray.train
    import ray.train.torch

    from cmmd_dist.tune.workarounds import wait_for_verdict

    run: RunConfig = config["run"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(run.train.threads or run.distributed.cpus_per_worker)
    device = ray.train.torch.get_device()
    verdicts = config.get("verdicts")
    stop = (lambda epoch: wait_for_verdict(verdicts, config["trial_id"], epoch, rank, world, device=device)) \
        if verdicts else None
    prepare = (lambda core: ray.train.torch.prepare_model(core, move_to_device=device)) if world > 1 else None
    cv_loop(run, config["folds"], rank, world, device, ray.train.report, stop, config.get("observe"), prepare)


def trial_fn(config: dict, base: dict, folds: Folds, workers: int, use_gpu: bool, storage: str,
             verdicts: str | None = None, storage_fs=None) -> None:
    """One trial (a Tune function): its CV in this process for 1 worker, else on a TorchTrainer of ``workers``."""
    import ray.tune

    run = RunConfig.model_validate(apply_params(base, config))
    if workers == 1:
        torch.set_num_threads(run.train.threads or run.distributed.cpus_per_worker)
        device = torch.device("cuda" if use_gpu else "cpu")
        cv_loop(run, folds, 0, 1, device, ray.tune.report)
        return
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from cmmd_dist.train.distributed import quick_report_polling
    from cmmd_dist.tune.workarounds import drain_reports

    quick_report_polling()  # an epoch of a small trial would otherwise wait 2 s for its report to be taken
    trial_id = ray.tune.get_context().get_trial_id()
    TorchTrainer(
        cv_worker,
        train_loop_config={"run": run, "folds": folds, "trial_id": trial_id, "verdicts": verdicts},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name=f"trial-{trial_id}", storage_path=storage, storage_filesystem=storage_fs,
                                       callbacks=[TuneReportCallback()]),
    ).fit()
    drain_reports()
