"""Distributed CMMD training on Ray Train (Train V2): DDP, the global-batch MMD, epoch checkpoints, recovery.

    cmmd-dist train --dataset digits2v --workers 2 [--use-gpu] [--bf16] [--data URI] [--storage URI]

Device: model, optimiser state and batches live on ``ray.train.torch.get_device()`` (one GPU per worker
and NCCL with ``--use-gpu``, else CPU and gloo). Stages (Flickr's recipe): ``train.pretrain_epochs``
epochs with no label to the encoder and no classifier term, on this rank's shard of the labelled rows
plus its shard of the ``unlabeled`` rows, then the supervised epochs with a fresh optimiser; ``epoch``
counts on across the stages, every row and checkpoint records its ``stage`` (a worker killed during
pretraining resumes there). ``retrain_distributed`` is the sweep's champion retrain: train+val rows,
a fixed number of supervised epochs, no validation, the final weights tested once.

Three layers, as in litgpt: ``setup`` (Ray, storage, the ``TorchTrainer``), ``main`` (per-rank state on
every worker: data shard, model, DDP, resume from the latest checkpoint) and ``fit`` (the epoch loop:
the unchanged pure-torch ``train_epoch``, validation, checkpoint, report). ``run_distributed`` ties
them together and writes the output folder like the single-process path. Ray is touched only through
TorchTrainer / ScalingConfig / RunConfig, prepare_model, report, get_checkpoint and get_context.

User errors never reach Ray Train's retries: the driver checks the data's manifest and the cluster's
CPUs/GPUs before the worker group starts, and a ``UserError`` on a worker (a bad shard) is shared by
all ranks and returned as a marker that the driver raises again (Ray would restart the group
``max_failures`` times on the same bad file). The run folder ``<storage>/<name>`` (Ray's checkpoints, the
run's config), Ctrl-C and ``--resume``: ``cmmd_dist.train.run_folder``. Each worker's rows:
``cmmd_dist.train.worker_rows``; report polling, storage and the resource check: ``cmmd_dist.train.ray_setup``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import yaml

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.spec import DatasetSpec
from cmmd_dist.evaluation.metrics import run_coherence
from cmmd_dist.model import CMMD
from cmmd_dist.storage import S3Settings
from cmmd_dist.train.build import build_model, loss_weights, model_config
from cmmd_dist.train.checkpoint import STATE_FILE, ResumeState, load_checkpoint, load_file, save_checkpoint
from cmmd_dist.train.early_stop import EarlyStop
from cmmd_dist.train.gather import gather_for
from cmmd_dist.train.loop import evaluate_loss, placement, train_epoch
from cmmd_dist.train.metrics import WorkerMetrics
from cmmd_dist.train.optim import make_optimizer
from cmmd_dist.train.ranks import agreed, autocast_for, every_rank, group_mean, reseed_rank
from cmmd_dist.train.ray_compat import checkpoint_folder
from cmmd_dist.train.ray_setup import check_resources, quick_report_polling, run_storage
from cmmd_dist.train.run_folder import USER_ERROR_KEY, RunFolder
from cmmd_dist.train.single import check_data, seed_everything
from cmmd_dist.train.sources import StreamedRows, eval_batches, evaluate_rows, stage_batches
from cmmd_dist.train.worker_rows import RankRows, load_rank_rows, rank_rows

__all__ = ["StepHook", "setup", "main", "fit", "run_distributed", "retrain_distributed",
           "rank_rows"]  # rank_rows: re-exported from train.worker_rows for tests/integration

StepHook = Callable[[int, int, int], None]
"""``on_step(epoch, step, rank)``: called on every worker after each optimiser step (epochs count on across the
stages, steps from 0 within the epoch). It runs in the worker, so it must pickle (tests pass recovery drills)."""


def setup(run: RunConfig, s3: S3Settings | None = None, on_step: StepHook | None = None,
          retrain: bool = False) -> ray.train.torch.TorchTrainer:
    """The TorchTrainer of a run (``retrain``: on train+val, no validation); connects to Ray first (RAY_ADDRESS
    or a running cluster, else starts one locally)."""
    from cmmd_dist.train.ray_connect import connect_ray

    connect_ray()
    quick_report_polling()
    d = run.distributed
    path, fs = run_storage(run, s3)
    name = d.name or f"{Path(run.data.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    resources = {"CPU": d.cpus_per_worker, **({"GPU": 1} if d.use_gpu else {})}
    return ray.train.torch.TorchTrainer(
        main,
        train_loop_config={"run": run, "name": name, "on_step": on_step, "retrain": retrain},
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=d.workers, use_gpu=d.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=path, storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=d.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=d.keep_checkpoints),
        ),
    )


def main(config: dict) -> dict | None:
    """Per-rank state on a Ray Train worker, then ``fit``; rank 0 returns the results."""
    run: RunConfig = config["run"]
    retrain = bool(config.get("retrain"))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(run.train.threads or run.distributed.cpus_per_worker)
    device = ray.train.torch.get_device()
    run = run.model_copy(update={"train": run.train.model_copy(update={"device": str(device)})})
    # bad shards are found here, on every rank alike: a marker for the driver, not a retried failure
    loaded, failure = agreed(lambda: load_rank_rows(run, rank, world, retrain, device), world)
    if failure is not None:
        return {USER_ERROR_KEY: failure}
    spec, rows = loaded
    seed_everything(run.train.seed)  # the same initial weights on every rank
    core = build_model(run, spec).to(device)
    optimizer = make_optimizer(core.parameters(), run.train)
    gen = reseed_rank(run.train.seed, rank)  # own noise and shuffling per rank
    resume = ResumeState()
    metrics = WorkerMetrics(config["name"], spec.name, rank)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        metrics.restored()
        # a refused checkpoint file fails the same way on every attempt
        resume, failure = agreed(lambda: _restore(checkpoint, rank, core, optimizer, gen), world)
        if failure is not None:
            return {USER_ERROR_KEY: failure}
        if not resume.rng_restored:
            gen = seed_everything(run.train.seed + 7919 * rank + 104729 * resume.epoch)
    model = ray.train.torch.prepare_model(core, move_to_device=False)
    history, optimizer = fit(run, model, core, optimizer, rows, gen, resume, rank, world, config.get("on_step"), metrics)
    peak_rss = every_rank(_peak_rss_bytes(), world)
    if rank != 0:
        return None
    if resume.best_state is not None:  # test figures from the best-validation epoch, as in the single process
        core.load_state_dict(resume.best_state)
    return {"dataset": spec.name, "history": history, "epochs_run": history[-1]["epoch"] if history else 0,
            "best_epoch": resume.best_epoch, "val_metric": resume.best_metric, "workers": world,
            "peak_rss_per_worker_bytes": peak_rss, "streamed": isinstance(rows.supervised, StreamedRows),
            "device": str(device), "placement": placement(core, optimizer, rows.supervised),
            "test": evaluate_rows(core, rows.test, latent=rows.latent, latent_seed=run.train.seed),
            "model_config": asdict(core.cfg)}


def _restore(checkpoint, rank: int, core: CMMD, optimizer, gen: torch.Generator) -> ResumeState:
    """Load the checkpoint on this rank from a folder of its own (:func:`ray_compat.checkpoint_folder`)."""
    with checkpoint_folder(checkpoint, rank) as folder:
        return load_checkpoint(folder, rank, core, optimizer, gen)


def _peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports kilobytes)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def fit(run: RunConfig, model, core: CMMD, optimizer, rows: RankRows, gen: torch.Generator, resume: ResumeState,
        rank: int, world: int, on_step: StepHook | None = None,
        metrics: WorkerMetrics | None = None) -> tuple[list[dict], torch.optim.Optimizer]:
    """The epochs after ``resume``: pretraining, then supervised up to ``train.epochs``; validate (rank 0, unless
    a retrain), checkpoint and report every epoch.

    Stops early, on every rank alike, after ``train.patience`` supervised epochs without validation improvement.
    Returns the history and the optimiser of the last stage (the supervised stage builds its own)."""
    w = loss_weights(run)
    gather = gather_for(run.loss.mmd_scope)
    device = next(core.parameters()).device
    autocast = autocast_for(device, run.distributed.bf16)
    validates = rows.validates
    resumed_from = resume.epoch  # completed epochs this attempt started from (0: a fresh start)
    best = EarlyStop(run.train.patience, resume.best_metric, resume.best_epoch, resume.best_state)
    while True:
        stage, k = resume.next_stage(run.train.pretrain_epochs)
        if stage == "supervised" and k > run.train.epochs:
            break
        if stage == "supervised" and k == 1 and resume.epoch:  # the supervised stage starts its own Adam moments
            optimizer = make_optimizer(core.parameters(), run.train)
        epoch = resume.epoch + 1
        pretrain = stage == "pretrain"
        step_hook = (lambda step, _terms, e=epoch: on_step(e, step, rank)) if on_step else None
        batches = stage_batches(rows.pretrain if pretrain else rows.supervised, run.train.batch_size, gen, epoch,
                                start_batch=resume.batch, steps=run.train.steps_per_epoch)
        m = train_epoch(model, core, batches, optimizer, w, gather=gather, world_size=world, pretrain=pretrain,
                        autocast=autocast, on_step=step_hook)
        row = {"stage": stage, "epoch": epoch, f"{stage}_epoch": k, "resumed_from": resumed_from,
               **group_mean(m, device, world)}
        if rank == 0 and validates:
            val = evaluate_rows(core, rows.val, with_collapse=False)
            row.update(val_rmse=val["rmse"])
            if not pretrain:  # an untrained classifier's metric is no figure to select on
                row.update(val_metric=val["metric"],
                           val_loss=evaluate_loss(core, eval_batches(rows.val), w)["loss"])
                best.update(val["metric"], k, lambda: {n: v.detach().to("cpu", copy=True)
                                                        for n, v in core.state_dict().items()})
        if world > 1 and validates and not pretrain:  # share rank 0's best epoch: every rank stops together
            shared = torch.tensor([best.epoch], device=device)
            dist.broadcast(shared, src=0)
            best.epoch = int(shared)
        resume.best_metric, resume.best_epoch, resume.best_state = best.value, best.epoch, best.state
        if metrics is not None:
            metrics.record_epoch(row, m["samples_per_s"])
        resume.history.append(row)
        resume.advance(stage, k)
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(folder, rank, core, optimizer, gen, resume)
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint_epoch_{epoch:05d}")
        if metrics is not None:
            metrics.checkpoint_saved()
        if validates and not pretrain and best.should_stop(k):
            break
    return resume.history, optimizer


def _fit_on_ray(run: RunConfig, s3: S3Settings | None, on_step: StepHook | None,
                retrain: bool = False) -> tuple[DatasetSpec, ray.train.Result]:
    """Check the data (before Ray starts: a bad dataset name, manifest or scenario costs nothing), build the
    trainer, check the cluster can hold it, fit it in its run folder; (the data's spec, Ray's result)."""
    spec = check_data(run)
    trainer = setup(run, s3, on_step, retrain=retrain)
    check_resources(run)
    return spec, RunFolder(run, trainer.run_config.name, s3).fit(trainer)


def _saved_state(result: ray.train.Result) -> dict:
    """Rank 0's ``state.pt`` of the run's latest checkpoint."""
    with result.checkpoint.as_directory() as folder:
        return load_file(Path(folder) / STATE_FILE)  # weights_only: the checkpoint bucket is not trusted code


def _judged(run: RunConfig, spec: DatasetSpec, weights: dict) -> tuple[CMMD, dict, object]:
    """The model with ``weights`` on the driver, and its coherence figures and judges (mst: judged on the
    driver, the rows stay on the workers; ``evaluation.metrics.run_coherence``)."""
    core = build_model(run, spec)
    core.load_state_dict(weights)
    return (core, *run_coherence(core, run, spec))


def run_distributed(run: RunConfig, s3: S3Settings | None = None, on_step: StepHook | None = None,
                    log=print) -> tuple[dict, Path]:
    """Fit on Ray Train; write config.yaml, history.jsonl, metrics.json, model.pt under ``output_dir``."""
    t0 = time.time()
    spec, result = _fit_on_ray(run, s3, on_step)
    results = dict(result.return_value)
    results.update(seconds=time.time() - t0, checkpoint=result.checkpoint.path,
                   reported_epochs=[int(e) for e in result.metrics_dataframe["epoch"]])  # of the kept checkpoints
    name = Path(run.data.dataset).name
    out = Path(run.output_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{run.train.seed}-w{run.distributed.workers}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(run.model_dump(), sort_keys=False))
    with open(out / "history.jsonl", "w") as f:
        for row in results["history"]:
            f.write(json.dumps(row) + "\n")
    state = _saved_state(result)
    weights = state["best_model"] if state.get("best_model") is not None else state["model"]
    torch.save({"state_dict": weights, "model_config": results["model_config"]}, out / "model.pt")
    _, coherence, judges = _judged(run, spec, weights)
    results["test"] = {**results["test"], **coherence}
    if judges is not None:
        results["coherence_judges"] = str(judges)
    meta = {k: v for k, v in results.items() if k not in ("history", "model_config")}
    (out / "metrics.json").write_text(json.dumps(meta, indent=2, default=str))
    log(f"distributed run: {results['epochs_run']} epochs on {results['workers']} workers; checkpoints {result.checkpoint.path}")
    return results, out


def retrain_distributed(run: RunConfig, epochs: int, s3: S3Settings | None = None, on_step: StepHook | None = None,
                        log=print) -> dict:
    """A sweep's champion retrain on Ray Train: ``train.pretrain_epochs`` pretraining epochs, then ``epochs``
    supervised ones on train+val (no validation, no early stop), the final weights tested ONCE on rank 0.

    Checkpointed every epoch like any distributed run, under ``<distributed.storage>/<distributed.name>``:
    a retrain started again under the same name (the sweep's ``--resume`` after its driver died) goes on from
    its latest checkpoint, and one that had finished only reports again. Returns model (on the CPU),
    model_config, history, epochs, test, workers, device and checkpoint."""
    run = run.model_copy(update={"train": run.train.model_copy(update={"epochs": epochs})})
    spec, result = _fit_on_ray(run, s3, on_step, retrain=True)
    value = dict(result.return_value)
    core, coherence, judges = _judged(run, spec, _saved_state(result)["model"])
    log(f"retrain: {value['epochs_run']} epochs on {value['workers']} workers ({value['device']}); "
        f"checkpoints {result.checkpoint.path}")
    return {"model": core.eval(), "model_config": model_config(run, spec), "history": value["history"],
            "epochs": epochs, "test": {**value["test"], **coherence}, "coherence_judges": judges,
            "workers": value["workers"], "device": value["device"], "placement": value["placement"],
            "checkpoint": result.checkpoint.path}
