"""Single-process CMMD vs the M-x_o baseline on digits2v and mnist2v; writes benchmarks/results/train_single.json.

Run: .venv/bin/python benchmarks/train_single.py [--datasets digits2v mnist2v] [--mnist PATH]
digits2v uses the packaged config; mnist2v uses cmmd_dist/configs/mnist2v-cpu.yaml (narrower than the
paper's 3x2500 encoder so that it fits an hour on a 2-core CPU). Test figures are from the model with
the best VALIDATION error (early stopping); nothing here is chosen on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from cmmd_dist.cli.app import default_config_path
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.train.single import run_training

RESULTS = Path(__file__).resolve().parent / "results" / "train_single.json"
CONFIGS = {"digits2v": "digits2v", "mnist2v": "mnist2v-cpu"}


def bench(dataset: str, mnist: str | None) -> dict:
    overrides = {"train": {"progress": False}, "output_dir": "runs/bench"}
    if dataset == "mnist2v" and mnist:
        overrides["data"] = {"source": mnist}
    run = load_run_config(default_config_path(CONFIGS[dataset]), overrides)
    t0 = time.time()
    res, out = run_training(run)
    epochs = [h for h in res["history"] if h["stage"] == "supervised"]
    return {
        "cmmd_error": res["test"]["error"],
        "mx0_error": res["baseline_test"]["error"],
        "rmse": res["test"]["rmse"],
        "sec_per_epoch": sum(h["train_seconds"] for h in epochs) / len(epochs),
        "epochs": len(epochs),
        "best_epoch": res["best_epoch"],
        "val_error": res["val_metric"],
        "hidden_widths": {k: getattr(run.model, k) for k in ("encoder_hidden", "prior_hidden", "decoder_hidden", "classifier_hidden")},
        "zdim": run.model.zdim,
        "lam": run.loss.lam,
        "lr": run.train.lr,
        "batch_size": run.train.batch_size,
        "collapse_at_eps": dict(zip(map(str, res["test"]["collapse_eps"]), res["test"]["collapse"])),
        "wall_seconds": time.time() - t0,
        "run_dir": str(out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits2v", "mnist2v"])
    ap.add_argument("--mnist", default=os.environ.get("CMMD_MNIST_PATH"))
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for ds in args.datasets:
        results[ds] = bench(ds, args.mnist)
        print(ds, {k: results[ds][k] for k in ("cmmd_error", "mx0_error", "rmse", "sec_per_epoch", "epochs")})
    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
