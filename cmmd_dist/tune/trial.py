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

A 1-worker trial reports every epoch with a Tune checkpoint (:class:`TrialCheckpoints`: every fold model, optimiser,
shuffle generator and RNG state, and the reported row, which holds the early-stopping state); restarted (a
resumed sweep, a retried failure), it continues after the epoch of the latest checkpoint Tune holds, so its
epochs are never reported twice. Multi-worker trials are Ray Train runs and restart from their first epoch.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from cmmd_dist.config import RunConfig
from cmmd_dist.config import Folds
from cmmd_dist.tune.search_space import apply_params

__all__ = ["trial_fn", "cv_loop", "cv_worker", "TrialCheckpoints"]


class TrialCheckpoints:
    """A 1-worker trial's epoch checkpoints, through Tune: each report carries one file (``FILE``: the folds'
    state, ``cv.folds_state``, and the row reported), written to a temporary folder that ``ray.tune.report`` copies
    to the trial's storage; the latest Tune holds (``ray.tune.get_checkpoint``) is read with ``weights_only=True``.
    ``report`` and ``latest`` default to Tune's own."""

    FILE = "trial.pt"

    def __init__(self, report: Callable | None = None, latest: Callable | None = None):
        if report is None or latest is None:
            import ray.tune

            report, latest = report or ray.tune.report, latest or ray.tune.get_checkpoint
        self._report, self._latest = report, latest

    def restore(self, states) -> dict:
        """Load the latest checkpoint into ``states``; returns the row reported with it ({}: none, a fresh trial)."""
        from cmmd_dist.train.checkpoint import load_file
        from cmmd_dist.train.cv import load_folds_state

        found = self._latest()
        if found is None:
            return {}
        with found.as_directory() as folder:
            saved = load_file(Path(folder) / self.FILE)
        load_folds_state(states, saved)
        return saved["row"]

    def report(self, row: dict, states) -> None:
        import ray.tune

        from cmmd_dist.train.checkpoint import plain_row
        from cmmd_dist.train.cv import folds_state

        with tempfile.TemporaryDirectory(prefix="cmmd-trial-") as folder:
            torch.save({**folds_state(states), "row": plain_row(row)}, Path(folder) / self.FILE)
            self._report(row, checkpoint=ray.tune.Checkpoint.from_directory(folder))


def cv_loop(run: RunConfig, folds: Folds, rank: int, world: int, device, report: Callable[[dict], None],
            stop: Callable[[int], bool] | None = None, observe=None, prepare=None,
            keep: TrialCheckpoints | None = None) -> None:
    """The trial's epochs on this rank: pretraining (if any), then supervised CV until the last epoch, patience,
    or ``stop(epoch)`` (asked after each supervised report that did not end the trial). With ``keep`` (1 worker)
    the folds start from the trial's latest checkpoint, and every report carries a new one (``report`` unused)."""
    from cmmd_dist.train.cv import build_folds, cv_epoch
    from cmmd_dist.train.early_stop import EarlyStop
    from cmmd_dist.train.gather import gather_for
    from cmmd_dist.train.optim import make_optimizer
    from cmmd_dist.train.ranks import autocast_for

    states, _ = build_folds(run, folds, rank, world, device)
    last = keep.restore(states) if keep is not None else {}  # the row reported with the checkpoint restored
    if last.get("cv_completed"):
        return
    if keep is not None:
        report = functools.partial(keep.report, states=states)
    if prepare is not None:
        for s in states:
            s.model = prepare(s.core)
    gather = gather_for(run.loss.mmd_scope)
    autocast = autocast_for(torch.device(device), run.distributed.bf16)
    pretrain, done = run.train.pretrain_epochs, last.get("epoch", 0)  # epochs done, both stages
    for epoch in range(done + 1, pretrain + 1):
        row = cv_epoch(run, states, world, gather, rank, "pretrain", autocast, observe, epoch)
        row.update(stage="pretrain", epoch=epoch, pretrain_epoch=epoch, best_cv_metric=float("nan"), cv_completed=0)
        report(row)
    if pretrain and done <= pretrain:
        for s in states:  # the supervised stage starts its own Adam moments, as the single process does
            s.optimizer = make_optimizer(s.core.parameters(), run.train)
    best = EarlyStop(run.train.patience, state=float("nan"))  # its state: the best epoch's CV rmse
    if last.get("stage") == "supervised":  # the early-stopping state of the restored epoch
        best = EarlyStop(run.train.patience, last["best_cv_metric"], last["best_epoch"], last["best_cv_rmse"])
    for sup in range(max(done - pretrain, 0) + 1, run.train.epochs + 1):
        epoch = pretrain + sup
        row = cv_epoch(run, states, world, gather, rank, "supervised", autocast, observe, epoch)
        best.update(row["cv_metric"], sup, lambda: row["cv_rmse"])  # the CV metric is lower-is-better (SearchSpace.mode)
        row.update(stage="supervised", epoch=epoch, supervised_epoch=sup, best_cv_metric=best.value,
                   best_epoch=best.epoch, best_cv_rmse=best.state,
                   cv_completed=int(sup == run.train.epochs or best.should_stop(sup)))
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
        cv_loop(run, folds, 0, 1, device, ray.tune.report, keep=TrialCheckpoints())
        return
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from cmmd_dist.train.ray_setup import quick_report_polling
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
