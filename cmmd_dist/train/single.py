"""Single-process training: seeded, early-stopped on validation, evaluated on test, with the M-x_o baseline.

Writes ``<output_dir>/<dataset>-<timestamp>/``: config.yaml, history.jsonl, metrics.json, model.pt.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec
from cmmd_dist.errors import UserError, one_line
from cmmd_dist.evaluate import evaluate_baseline, evaluate_model
from cmmd_dist.model import CMMD, PriorClassifier
from cmmd_dist.train.batches import SplitTensors, iterate_batches
from cmmd_dist.train.build import loss_weights, model_config
from cmmd_dist.train.loop import baseline_epoch, evaluate_loss, train_epoch

__all__ = ["check_data", "fit", "run_training", "retrain_and_test", "retrain_baseline_and_test", "seed_everything", "split_tensors"]


def check_data(run: RunConfig) -> DatasetSpec:
    """The spec of the run's dataset, read before anything is loaded, started or written.

    Cheap (a prepared dataset's manifest only, no shard): an unknown dataset, a bad manifest, a
    manifest of another dataset or an unknown scenario is a one-line UserError naming it. Shards are
    checked (checksums, columns, values) as they load."""
    from cmmd_dist.datasets.registry import LOADERS, SPECS, looks_like_uri, prepared_uri
    from cmmd_dist.datasets.shards import manifest_spec
    from cmmd_dist.storage import read_manifest

    data = run.data
    uri = prepared_uri(data)
    if uri is not None:
        spec = manifest_spec(read_manifest(uri))
        if not looks_like_uri(data.dataset) and data.dataset != spec.name:
            raise UserError(f"{uri} holds dataset {spec.name!r}, but --dataset / data.dataset is {data.dataset!r}")
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


def split_tensors(bundle: DatasetBundle, run: RunConfig) -> dict[str, SplitTensors]:
    observed, missing = bundle.spec.split_modalities(run.data.scenario)
    obs, mis = [m.name for m in observed], [m.name for m in missing]
    return {name: SplitTensors.from_split(s, obs, mis, run.train.device) for name, s in bundle.splits().items()}


def _pretrain_data(data: dict[str, SplitTensors]) -> SplitTensors:
    """Labeled train rows plus unlabeled rows (labels unused: the encoder gets zeros, no classifier)."""
    parts = [data["train"]] + ([data["unlabeled"]] if "unlabeled" in data else [])
    return SplitTensors(
        obs={k: torch.cat([p.obs[k] for p in parts]) for k in parts[0].obs},
        mis={k: torch.cat([p.mis[k] for p in parts]) for k in parts[0].mis},
        y=torch.cat([torch.zeros_like(parts[0].y[:1]).expand(len(p), *parts[0].y.shape[1:]) for p in parts]),
    )


def fit(run: RunConfig, bundle: DatasetBundle, log=print, on_epoch=None) -> dict:
    """Train CMMD (and the baseline); returns results with history, val/test metrics and the model.

    ``on_epoch(row)`` is called with each history row as soon as its epoch ends."""
    on_epoch = on_epoch or (lambda row: None)
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    gen = seed_everything(run.train.seed)
    cfg = model_config(run, bundle.spec)
    w = loss_weights(run)
    data = split_tensors(bundle, run)
    core = CMMD(cfg).to(run.train.device)
    bs = run.train.batch_size
    history: list[dict] = []

    if run.train.pretrain_epochs:
        pre = _pretrain_data(data)
        opt = torch.optim.Adam(core.parameters(), lr=run.train.lr)
        for ep in range(run.train.pretrain_epochs):
            m = train_epoch(core, core, iterate_batches(pre, bs, gen), opt, w, pretrain=True)
            history.append({"stage": "pretrain", "epoch": ep + 1, **{f"train_{k}": v for k, v in m.items()}})
            on_epoch(history[-1])

    opt = torch.optim.Adam(core.parameters(), lr=run.train.lr)
    best, best_state, best_epoch, waited = float("inf"), None, 0, 0
    bar = tqdm(range(1, run.train.epochs + 1), desc=f"cmmd {bundle.spec.name}", disable=not run.train.progress)
    for epoch in bar:
        m = train_epoch(core, core, iterate_batches(data["train"], bs, gen), opt, w)
        val = evaluate_model(core, data["val"], with_collapse=False)
        val_loss = evaluate_loss(core, iterate_batches(data["val"], 1024, shuffle=False), w)["loss"]
        row = {"stage": "train", "epoch": epoch, **{f"train_{k}": v for k, v in m.items()},
               "val_metric": val["metric"], "val_loss": val_loss, "val_rmse": val["rmse"]}
        history.append(row)
        on_epoch(row)
        bar.set_postfix(loss=f"{m['loss']:.1f}", val_metric=f"{val['metric']:.4f}")
        if val["metric"] < best:
            best, best_state, best_epoch, waited = val["metric"], copy.deepcopy(core.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= run.train.patience:
                log(f"early stop at epoch {epoch}: no validation improvement for {waited} epochs")
                break
    core.load_state_dict(best_state)
    test = evaluate_model(core, data["test"])
    results = {"dataset": bundle.spec.name, "best_epoch": best_epoch, "epochs_run": history[-1]["epoch"],
               "val_metric": best, "test": test, "history": history, "model": core, "model_config": cfg}

    if run.train.baseline:
        seed_everything(run.train.seed)
        base = PriorClassifier(cfg).to(run.train.device)
        bopt = torch.optim.Adam(base.parameters(), lr=run.train.lr)
        bbest, bstate, bwait = float("inf"), None, 0
        for epoch in tqdm(range(1, run.train.epochs + 1), desc="M-x_o baseline", disable=not run.train.progress):
            baseline_epoch(base, iterate_batches(data["train"], bs, gen), bopt)
            v = evaluate_baseline(base, data["val"])["metric"]
            if v < bbest:
                bbest, bstate, bwait = v, copy.deepcopy(base.state_dict()), 0
            else:
                bwait += 1
                if bwait >= run.train.patience:
                    break
        base.load_state_dict(bstate)
        results["baseline_test"] = evaluate_baseline(base, data["test"])
    return results


def _json_ready(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("model", "model_config")}


def run_training(run: RunConfig, log=print) -> tuple[dict, Path]:
    """Load data, fit, write the run folder; returns (results, run folder)."""
    check_data(run)
    bundle = load_bundle(run.data)
    out = Path(run.output_dir) / f"{run.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}-{run.train.seed}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(run.model_dump(), sort_keys=False))
    t0 = time.time()
    with open(out / "history.jsonl", "w") as hist:
        def write_row(row: dict) -> None:
            hist.write(json.dumps(row) + "\n")
            hist.flush()

        results = fit(run, bundle, log=log, on_epoch=write_row)
    results["seconds"] = time.time() - t0
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in _json_ready(results).items() if k != "history"}, indent=2))
    torch.save({"state_dict": results["model"].state_dict(), "model_config": results["model_config"].to_dict()}, out / "model.pt")
    return results, out


def _dev_and_test(run: RunConfig, bundle: DatasetBundle) -> tuple[SplitTensors, SplitTensors]:
    from cmmd_dist.folds import development_split

    observed, missing = bundle.spec.split_modalities(run.data.scenario)
    obs, mis = [m.name for m in observed], [m.name for m in missing]
    return (SplitTensors.from_split(development_split(bundle), obs, mis, run.train.device),
            SplitTensors.from_split(bundle.test, obs, mis, run.train.device))


def retrain_and_test(run: RunConfig, bundle: DatasetBundle, epochs: int, log=print) -> dict:
    """Train on train+val for a fixed number of epochs (chosen by cross-validation), then test ONCE."""
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    gen = seed_everything(run.train.seed)
    cfg = model_config(run, bundle.spec)
    w = loss_weights(run)
    dev, test = _dev_and_test(run, bundle)
    core = CMMD(cfg).to(run.train.device)
    opt = torch.optim.Adam(core.parameters(), lr=run.train.lr)
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc="retrain on train+val", disable=not run.train.progress):
        m = train_epoch(core, core, iterate_batches(dev, run.train.batch_size, gen), opt, w)
        history.append({"stage": "retrain", "epoch": epoch, **{f"train_{k}": v for k, v in m.items()}})
    return {"model": core, "model_config": cfg, "history": history, "epochs": epochs, "test": evaluate_model(core, test)}


def retrain_baseline_and_test(run: RunConfig, bundle: DatasetBundle, epochs: int) -> dict:
    """The M-x_o baseline (CMMD's prior network + classifier, trained on x_o alone) under the same budget as
    ``retrain_and_test``: train+val, ``epochs`` epochs, the run's batch size and learning rate; tested ONCE."""
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    gen = seed_everything(run.train.seed)
    dev, test = _dev_and_test(run, bundle)
    model = PriorClassifier(model_config(run, bundle.spec)).to(run.train.device)
    opt = torch.optim.Adam(model.parameters(), lr=run.train.lr)
    losses = [baseline_epoch(model, iterate_batches(dev, run.train.batch_size, gen), opt) for _ in range(epochs)]
    return {"model": model, "train_loss": losses, "epochs": epochs, "test": evaluate_baseline(model, test)}
