"""The ``cmmd-dist`` console script: one entry, subcommands."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

__all__ = ["main", "build_parser", "default_config_path", "train_overrides"]


def default_config_path(dataset: str) -> Path | None:
    """The packaged config for a dataset name, if one ships."""
    p = resources.files("cmmd_dist") / "configs" / f"{dataset}.yaml"
    return Path(str(p)) if p.is_file() else None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the config's, else digits2v)")
    p.add_argument("--config", help="run config YAML (default: the packaged config of the dataset)")
    p.add_argument("--source", help="dataset source file/folder or URI")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lam", type=float, help="lambda in [0,1]")
    p.add_argument("--seed", type=int)
    p.add_argument("--limit", type=int, help="keep only the first rows of each split")
    p.add_argument("--out", help="output folder (default: runs)")
    p.add_argument("--no-baseline", action="store_true", help="skip the M-x_o baseline")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = p.add_argument_group("distributed (Ray Train; local Ray unless RAY_ADDRESS or a running cluster)")
    d.add_argument("--workers", type=int, help="train on N Ray Train workers (DDP, global-batch MMD)")
    d.add_argument("--use-gpu", action="store_true", help="one GPU per worker, nccl")
    d.add_argument("--bf16", action="store_true", help="bf16 autocast")
    d.add_argument("--data", help="prepared dataset: local folder or s3:// URI")
    d.add_argument("--storage", help="checkpoint storage: local folder or s3://bucket/prefix")


def train_overrides(args: argparse.Namespace) -> dict:
    o: dict = {"data": {}, "train": {}, "loss": {}}
    if args.dataset:
        o["data"]["dataset"] = args.dataset
    for key, section, field in (("source", "data", "source"), ("limit", "data", "limit"), ("epochs", "train", "epochs"),
                                ("batch_size", "train", "batch_size"), ("lr", "train", "lr"), ("seed", "train", "seed"),
                                ("lam", "loss", "lam")):
        if getattr(args, key) is not None:
            o[section][field] = getattr(args, key)
    if args.no_baseline:
        o["train"]["baseline"] = False
    if args.no_progress:
        o["train"]["progress"] = False
    if args.out:
        o["output_dir"] = args.out
    if getattr(args, "data", None):
        o["data"]["source" if args.dataset else "dataset"] = args.data
    dist = {k: getattr(args, k, None) for k in ("workers", "storage")}
    dist.update({k: True for k in ("use_gpu", "bf16") if getattr(args, k, False)})
    if any(v is not None for v in dist.values()):
        o["distributed"] = {k: v for k, v in dist.items() if v is not None}
    return o


def cmd_train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cmmd_dist.config import load_run_config
    from cmmd_dist.train.single import run_training

    path = args.config or default_config_path(args.dataset or "digits2v")
    try:
        run = load_run_config(path, train_overrides(args))
    except ValidationError as e:
        print(f"invalid settings ({path or 'defaults'}):\n{e}", file=sys.stderr)
        return 2
    if getattr(args, "workers", None):
        from cmmd_dist.train.distributed import run_distributed

        results, out = run_distributed(run)
    else:
        results, out = run_training(run)
    test = results["test"]
    if "error" in test:
        line = f"test error {100 * test['error']:.2f}%"
        if "baseline_test" in results:
            line += f" (M-x_o baseline {100 * results['baseline_test']['error']:.2f}%)"
    else:
        line = f"test mAP {test['map']:.4f}"
        if "baseline_test" in results:
            line += f" (M-x_o baseline {results['baseline_test']['map']:.4f})"
    print(f"{line}; rmse {test['rmse']:.4f}; best epoch {results['best_epoch']}")
    print(f"results: {out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from cmmd_dist.tune import run_sweep, settings_from_args

    run_sweep(settings_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmmd-dist", description="Train CMMD and search its hyperparameters.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train CMMD on one dataset")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)
    from cmmd_dist.datasets.prepare import add_data_subcommand
    from cmmd_dist.models_cli import add_models_subcommand

    add_data_subcommand(sub)
    add_models_subcommand(sub)
    s = sub.add_parser("tune", help="hyperparameter sweep (Ray Tune + Optuna + ASHA, k-fold CV)")
    from cmmd_dist.tune import build_parser as tune_parser

    tune_parser(s)
    s.set_defaults(func=cmd_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
