"""The ``cmmd-dist`` console script: one entry, subcommands.

Every command runs through ``errors.run_cli``: a user error is one line ``cmmd-dist: error: ...`` and
exit 2; ``--debug`` (anywhere on the line) or ``CMMD_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from cmmd_dist.cli.parser import OneLineArgumentParser
from cmmd_dist.errors import UserError, describe_validation, run_cli, strip_debug
from cmmd_dist.storage.url_credentials import refuse_userinfo

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
    d.add_argument("--stream", choices=("auto", "always", "never"),
                   help="stream the prepared dataset's shards instead of loading them (auto: above data.stream_above_mb)")
    d.add_argument("--shuffle-buffer", type=int, help="streamed: rows mixed across files before batching")
    d.add_argument("--prefetch", type=int, help="streamed: files read ahead")
    d.add_argument("--storage", help="checkpoint storage: local folder or s3://bucket/prefix")
    d.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted distributed run from its latest checkpoint: the folder "
                        "<storage>/<run name> (printed on Ctrl-C); its config is reused, options given here override it")


def train_overrides(args: argparse.Namespace) -> dict:
    o: dict = {"data": {}, "train": {}, "loss": {}}
    if args.dataset:
        o["data"]["dataset"] = args.dataset
    for key, section, field in (("source", "data", "source"), ("limit", "data", "limit"), ("stream", "data", "stream"),
                                ("shuffle_buffer", "data", "shuffle_buffer"), ("prefetch", "data", "prefetch"),
                                ("epochs", "train", "epochs"),
                                ("batch_size", "train", "batch_size"), ("lr", "train", "lr"), ("seed", "train", "seed"),
                                ("lam", "loss", "lam")):
        if getattr(args, key, None) is not None:
            o[section][field] = getattr(args, key)
    if args.no_baseline:
        o["train"]["baseline"] = False
    if args.no_progress:
        o["train"]["progress"] = False
    if args.out is not None:  # --out "" is refused (RunConfig), not taken for the default
        o["output_dir"] = args.out
    if getattr(args, "data", None):  # a prepared dataset, never a source: no manifest there is an error
        from cmmd_dist.storage import is_s3_uri

        refuse_userinfo(args.data, "--data")
        # absolute on the driver: Ray Train workers on a cluster would read a relative one from the raylet's folder
        o["data"]["prepared"] = args.data if is_s3_uri(args.data) else str(Path(args.data).resolve())
        if not args.dataset:  # named by its manifest (the packaged config would say digits2v); no manifest: an error
            from cmmd_dist.config import DataConfig
            from cmmd_dist.datasets.registry import dataset_name

            o["data"]["dataset"] = dataset_name(DataConfig(prepared=args.data))
    refuse_userinfo(getattr(args, "storage", None), "--storage")  # each Ray node brings its own S3 keys
    dist = {k: getattr(args, k, None) for k in ("workers", "storage")}
    dist.update({k: True for k in ("use_gpu", "bf16") if getattr(args, k, False)})
    if any(v is not None for v in dist.values()):
        o["distributed"] = {k: v for k, v in dist.items() if v is not None}
    return o


def cmd_train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cmmd_dist.storage.yaml_files import load_run_config
    from cmmd_dist.train.single import run_training

    overrides = train_overrides(args)
    resume = getattr(args, "resume", None)
    if resume:
        from cmmd_dist.train.run_folder import resume_settings

        refuse_userinfo(resume, "--resume")
        if args.config:
            raise UserError("--resume reuses the run's own config: drop --config")
        path, overrides = resume_settings(resume, overrides)
    else:
        path = args.config or default_config_path(args.dataset or "digits2v")
    try:
        run = load_run_config(path, overrides)
    except ValidationError as e:
        raise UserError(f"invalid settings: {describe_validation(e, str(path or 'defaults'), overrides)}") from e
    refuse_userinfo(run.distributed.storage, "distributed.storage")  # from the config file
    distributed = bool(getattr(args, "workers", None) or resume)
    if not distributed:
        from cmmd_dist.train.sources import streams

        if streams(run.data) is not None:  # too big to load whole: one Ray Train worker streams it
            print("the dataset streams (data.stream / stream_above_mb): training on 1 Ray Train worker "
                  "(--workers N for more)", file=sys.stderr)
            run = run.model_copy(update={"distributed": run.distributed.model_copy(update={"workers": 1})})
            distributed = True
    if distributed:
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
    if "latent_accuracy" in test:
        line += f"; latent accuracy {test['latent_accuracy']:.4f}"
    if "coherence" in test:
        line += f"; coherence {test['coherence']:.4f}"
    print(f"{line}; rmse {test['rmse']:.4f}; best epoch {results['best_epoch']}")
    print(f"results: {out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from cmmd_dist.cli.tune import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="cmmd-dist", description="Train CMMD and search its hyperparameters.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also CMMD_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train CMMD on one dataset")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)
    from cmmd_dist.cli.compare import add_compare_subcommand
    from cmmd_dist.cli.models import add_models_subcommand
    from cmmd_dist.cli.prepare import add_data_subcommand

    add_data_subcommand(sub)
    add_models_subcommand(sub)
    s = sub.add_parser("tune", help="hyperparameter sweep (Ray Tune + Optuna + ASHA, k-fold CV)")
    from cmmd_dist.cli.tune import build_parser as tune_parser

    tune_parser(s)
    s.set_defaults(func=cmd_tune)
    add_compare_subcommand(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = "cmmd-dist") -> int:
    """Parse ``argv`` and run its command; user errors are one line and exit 2 (see ``errors.run_cli``)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def run() -> int:
        args = build_parser().parse_args(strip_debug(argv))
        return args.func(args)

    return run_cli(run, prog=prog, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
