"""Single-process training: seeded, early-stopped on validation, evaluated on test, with the M-x_o baseline.

Writes ``<output_dir>/<dataset>-<timestamp>/``: config.yaml, history.jsonl, metrics.json, model.pt. The folder
appears only once every check has passed (dataset, device, data loaded and trainable); a run that fails after
that leaves ``status.json`` saying so (``run_folder.mark_failed``), and a user error found then removes it.

Device: model, optimiser state and rows live on ``train.device``, or on CUDA with ``--use-gpu``
(``distributed.use_gpu`` without workers); ``--bf16`` autocasts the forward pass as under Ray Train.
Stages (Flickr's recipe, as in every training path): ``train.pretrain_epochs`` epochs with no label to the
encoder and no classifier term, on the labelled training rows plus the dataset's ``unlabeled`` rows, then
the ``supervised`` epochs with a fresh optimiser. Each history row carries ``stage`` and ``epoch``, which
counts on across the stages, plus ``pretrain_epoch`` or ``supervised_epoch``; ``best_epoch`` counts
supervised epochs.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from cmmd_dist.evaluation.coherence import coherence_judges
from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec
from cmmd_dist.errors import UserError, one_line
from cmmd_dist.evaluation.metrics import evaluate_model
from cmmd_dist.model import CMMD, BaselineConfig, make_model
from cmmd_dist.datasets.tensors import RowView, SplitTensors, iterate_batches
from cmmd_dist.train.build import build_model, loss_weights, model_config
from cmmd_dist.train.early_stop import EarlyStop
from cmmd_dist.train.loop import evaluate_loss, placement, train_epoch
from cmmd_dist.train.optim import make_optimizer
from cmmd_dist.train.sources import stage_batches

__all__ = ["check_data", "fit", "run_training", "seed_everything", "split_tensors", "train_device", "stage_rows"]


def check_data(run: RunConfig) -> DatasetSpec:
    """The spec of the run's dataset, read before anything is loaded, started or written.

    Cheap (a prepared dataset's manifest only, no shard): an unknown dataset, a bad manifest, a
    manifest of another dataset or an unknown scenario is a one-line UserError naming it. Shards are
    checked (checksums, columns, values) as they load."""
    from cmmd_dist.datasets.registry import LOADERS, SPECS, checked_manifest, prepared_uri

    data = run.data
    if prepared_uri(data) is not None:
        spec = checked_manifest(data)[1]
    elif data.dataset in LOADERS and data.dataset in SPECS:
        spec = SPECS[data.dataset]
    else:
        raise UserError(f"unknown dataset {data.dataset!r}; known: {sorted(LOADERS)} "
                        f"(or a prepared dataset's folder / s3:// URI)")
    try:
        spec.split_modalities(data.scenario)
    except (KeyError, ValueError) as err:
        raise UserError(f"data.scenario: {one_line(err)}") from err
    return spec


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)


def train_device(run: RunConfig) -> torch.device:
    """Where a single-process run trains: ``train.device``, or CUDA when ``distributed.use_gpu`` (``--use-gpu``)
    asks for a GPU and the device is left at cpu. CUDA asked for where there is none is a UserError."""
    name = "cuda" if run.distributed.use_gpu and run.train.device == "cpu" else run.train.device
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"train.device {name!r}: {one_line(err)}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        flag = "--use-gpu" if run.distributed.use_gpu else f"train.device {name!r}"
        raise UserError(f"{flag}: no CUDA device here (torch {torch.__version__}); drop it to train on the CPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"train.device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"train.device {name!r}: no MPS device here; drop it to train on the CPU")
    return device


def _on_device(run: RunConfig) -> RunConfig:
    return run.model_copy(update={"train": run.train.model_copy(update={"device": str(train_device(run))})})


def _autocast(run: RunConfig, device: torch.device):
    """bf16 autocast of the forward pass (``distributed.bf16``, ``--bf16``), as the Ray Train paths do."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if run.distributed.bf16 else None


def split_tensors(bundle: DatasetBundle, run: RunConfig) -> dict[str, SplitTensors]:
    """Every split on ``train.device``; the extra ones (Flickr's unlabeled rows) only when pretraining uses them."""
    obs, mis = bundle.spec.scenario_names(run.data.scenario)
    splits = bundle.splits() if run.train.pretrain_epochs else {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    return {name: SplitTensors.from_split(s, obs, mis, run.train.device) for name, s in splits.items()}


def stage_rows(labelled: SplitTensors, unlabeled: SplitTensors | None) -> tuple[RowView, RowView]:
    """(supervised rows, pretraining rows) over ONE copy of the rows: the labelled rows, and the labelled
    rows followed by the unlabeled ones with every label hidden (the encoder gets zeros, no classifier)."""
    pool = labelled
    if unlabeled is not None and len(unlabeled):
        y = torch.zeros((len(unlabeled), *labelled.y.shape[1:]), dtype=labelled.y.dtype, device=labelled.y.device)
        pool = SplitTensors.concat([labelled, SplitTensors(obs=unlabeled.obs, mis=unlabeled.mis, y=y)])
    return (RowView(pool, torch.arange(len(labelled))),
            RowView(pool, torch.arange(len(pool)), hide_labels=True))


def _pretrain(core: CMMD, run: RunConfig, rows: RowView, gen: torch.Generator, history: list[dict], on_epoch,
              autocast=None) -> None:
    """The pretraining stage, its own optimiser; appends its rows to ``history``."""
    if not run.train.pretrain_epochs:
        return
    opt = make_optimizer(core.parameters(), run.train)
    w = loss_weights(run)
    for k in range(1, run.train.pretrain_epochs + 1):
        m = train_epoch(core, core, stage_batches(rows, run.train.batch_size, gen, 0, steps=run.train.steps_per_epoch), opt, w, pretrain=True,
                        autocast=autocast)
        history.append({"stage": "pretrain", "epoch": len(history) + 1, "pretrain_epoch": k,
                        **{f"train_{t}": v for t, v in m.items()}})
        on_epoch(history[-1])


def _supervised(core: CMMD, run: RunConfig, data: dict[str, SplitTensors], rows: RowView, gen: torch.Generator,
                history: list[dict], on_epoch, log, desc: str, autocast=None) -> tuple[EarlyStop, torch.optim.Optimizer]:
    """The supervised stage: its own optimiser (fresh Adam moments), validated every epoch, early-stopped on the
    validation metric (``EarlyStop``); appends its rows to ``history`` and loads the best epoch's weights back."""
    opt = make_optimizer(core.parameters(), run.train)
    w = loss_weights(run)
    stop = EarlyStop(run.train.patience)
    bar = tqdm(range(1, run.train.epochs + 1), desc=desc, disable=not run.train.progress)
    for epoch in bar:
        m = train_epoch(core, core, stage_batches(rows, run.train.batch_size, gen, 0, steps=run.train.steps_per_epoch),
                        opt, w, autocast=autocast)
        val = evaluate_model(core, data["val"], with_collapse=False)
        val_loss = evaluate_loss(core, iterate_batches(data["val"], 1024, shuffle=False), w)["loss"]
        row = {"stage": "supervised", "epoch": len(history) + 1, "supervised_epoch": epoch,
               **{f"train_{k}": v for k, v in m.items()},
               "val_metric": val["metric"], "val_loss": val_loss, "val_rmse": val["rmse"]}
        history.append(row)
        on_epoch(row)
        bar.set_postfix(loss=f"{m['loss']:.1f}", val_metric=f"{val['metric']:.4f}")
        stop.update(val["metric"], epoch, lambda: copy.deepcopy(core.state_dict()))
        if stop.should_stop(epoch):
            log(f"early stop at epoch {epoch}: no validation improvement for {stop.waited(epoch)} epochs")
            break
    core.load_state_dict(stop.state)
    return stop, opt


def _baseline_test(run: RunConfig, cfg, data: dict[str, SplitTensors], device: torch.device,
                   gen: torch.Generator) -> dict:
    """The M-x_o baseline (``train.baseline``): the ``model.kind: mx_o`` model (``MxO``) through the same
    ``train_epoch`` and ``evaluate_model``, on the training rows (no pretraining), early-stopped like CMMD,
    tested once; its classification figures."""
    seed_everything(run.train.seed)
    base = make_model(cfg, BaselineConfig("mx_o")).to(device)
    bopt = make_optimizer(base.parameters(), run.train)
    w = loss_weights(run)
    bstop = EarlyStop(run.train.patience)
    for epoch in tqdm(range(1, run.train.epochs + 1), desc="M-x_o baseline", disable=not run.train.progress):
        train_epoch(base, base, iterate_batches(data["train"], run.train.batch_size, gen), bopt, w)
        val = evaluate_model(base, data["val"], with_collapse=False)
        bstop.update(val["metric"], epoch, lambda: copy.deepcopy(base.state_dict()))
        if bstop.should_stop(epoch):
            break
    base.load_state_dict(bstop.state)
    test = evaluate_model(base, data["test"], with_collapse=False)
    return {k: v for k, v in test.items() if k not in ("rmse", "rmse_by_modality")}  # M-x_o generates nothing


def fit(run: RunConfig, bundle: DatasetBundle, log=print, on_epoch=None) -> dict:
    """Train CMMD (and the baseline); returns results with history, val/test metrics and the model.

    ``on_epoch(row)`` is called with each history row as soon as its epoch ends."""
    on_epoch = on_epoch or (lambda row: None)
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    run = _on_device(run)
    device = torch.device(run.train.device)
    autocast = _autocast(run, device)
    gen = seed_everything(run.train.seed)
    cfg = model_config(run, bundle.spec)
    data = split_tensors(bundle, run)
    supervised, pre = stage_rows(data["train"], data.get("unlabeled"))
    core = build_model(run, bundle.spec).to(device)
    history: list[dict] = []
    _pretrain(core, run, pre, gen, history, on_epoch, autocast)
    stop, opt = _supervised(core, run, data, supervised, gen, history, on_epoch, log, f"cmmd {bundle.spec.name}",
                            autocast)
    test = evaluate_model(core, data["test"], latent_train=data["train"], latent_seed=run.train.seed,
                          coherence=coherence_judges(bundle.spec, data["train"], run.output_dir))
    results = {"dataset": bundle.spec.name, "best_epoch": stop.epoch, "epochs_run": history[-1]["epoch"],
               "val_metric": stop.value, "test": test, "history": history, "model": core, "model_config": cfg,
               "device": str(device), "placement": placement(core, opt, supervised)}
    if run.train.baseline:
        results["baseline_test"] = _baseline_test(run, cfg, data, device, gen)
    return results


def _json_ready(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("model", "model_config")}


def run_training(run: RunConfig, log=print) -> tuple[dict, Path]:
    """Check, load data, fit, write the run folder; returns (results, run folder).

    The folder is made once the checks pass; a failure after that marks it (``status.json``), a user error
    then removes it."""
    from cmmd_dist.train.run_folder import check_folder_path, mark_failed

    check_data(run)
    train_device(run)
    check_folder_path(run.output_dir, "--out")
    bundle = load_bundle(run.data)
    try:
        bundle.check_trainable(run.data.prepared or run.data.dataset)
    except ValueError as err:
        raise UserError(one_line(err)) from err
    out = Path(run.output_dir) / f"{run.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}-{run.train.seed}"
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = _fit_into(run, bundle, out, log)
    except BaseException as err:
        if isinstance(err, UserError) and fresh:
            shutil.rmtree(out, ignore_errors=True)
        else:
            mark_failed(str(out), err)
        raise
    return results, out


def _fit_into(run: RunConfig, bundle: DatasetBundle, out: Path, log) -> dict:
    """``fit`` writing config.yaml and history.jsonl (row by row) into ``out``, then metrics.json and model.pt."""
    (out / "config.yaml").write_text(yaml.safe_dump(run.model_dump(), sort_keys=False))
    t0 = time.time()
    with open(out / "history.jsonl", "w") as hist:
        def write_row(row: dict) -> None:
            hist.write(json.dumps(row) + "\n")
            hist.flush()

        results = fit(run, bundle, log=log, on_epoch=write_row)
    results["seconds"] = time.time() - t0
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in _json_ready(results).items() if k != "history"}, indent=2))
    weights = {k: v.detach().cpu() for k, v in results["model"].state_dict().items()}  # loadable without the GPU
    torch.save({"state_dict": weights, "model_config": results["model_config"].to_dict()}, out / "model.pt")
    return results
