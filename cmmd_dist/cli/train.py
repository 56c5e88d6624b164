"""``cmmd-dist train``: its options, generated from ``RunConfig``'s fields, and the command.

Each option in :data:`GENERAL` / :data:`DISTRIBUTED` is one ``RunConfig`` field, named by its dotted path:
the flag is ``--<field-name-with-dashes>`` (``--no-<name>`` for a bool that defaults to true) unless the
entry names another, its type, choices and help come from the field (:func:`cli.options.field_option`),
and its parsed value lands at that path of the overrides (:func:`train_overrides`); an option not given
is left out, so the config file's value (or the field's default) stays. ``--dataset``, ``--config`` and
``--resume`` are not fields: they choose the config itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from cmmd_dist.cli.options import field_option
from cmmd_dist.config import RunConfig
from cmmd_dist.errors import UserError, describe_validation
from cmmd_dist.storage.url_credentials import refuse_userinfo

__all__ = ["Opt", "GENERAL", "DISTRIBUTED", "run_field", "add_train_arguments", "train_overrides", "cmd_train",
           "default_config_path"]


class Opt(NamedTuple):
    """One train option: the RunConfig field at ``path``; ``flag`` and ``help`` where the derived ones do not fit."""

    path: str
    flag: str | None = None
    help: str | None = None


# in --help order
GENERAL = (Opt("data.source"), Opt("train.epochs"), Opt("train.batch_size"), Opt("train.lr"), Opt("loss.lam"),
           Opt("train.seed"), Opt("data.limit"), Opt("output_dir", "--out"),
           Opt("train.baseline", help="skip the M-x_o baseline"),  # the fields say what --no- turns off
           Opt("train.progress", help="no progress bar"))
DISTRIBUTED = (Opt("distributed.workers"), Opt("distributed.use_gpu"), Opt("distributed.bf16"),
               Opt("data.prepared", "--data"), Opt("data.stream"), Opt("data.shuffle_buffer"), Opt("data.prefetch"),
               Opt("distributed.storage"))


def default_config_path(dataset: str) -> Path | None:
    """The packaged config for a dataset name, if one ships."""
    from importlib import resources

    p = resources.files("cmmd_dist") / "configs" / f"{dataset}.yaml"
    return Path(str(p)) if p.is_file() else None


def run_field(path: str):
    """The pydantic field of ``RunConfig`` at a dotted ``path`` (``train.epochs``); KeyError naming it if none."""
    model, *parents, name = (RunConfig, *path.split("."))
    for part in parents:
        model = model.model_fields[part].annotation
    if name not in model.model_fields:
        raise KeyError(f"RunConfig has no field {path!r}")
    return model.model_fields[name]


def _add_options(p, options: tuple[Opt, ...]) -> None:
    for opt in options:
        flags, kw = field_option(opt.path.rpartition(".")[2], run_field(opt.path), opt.flag, opt.path, opt.help)
        if "type" in kw:  # argparse would show the dotted dest
            kw["metavar"] = flags[0].removeprefix("--").replace("-", "_").upper()
        p.add_argument(*flags, **kw)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the config's, else digits2v)")
    p.add_argument("--config", help="run config YAML (default: the packaged config of the dataset)")
    _add_options(p, GENERAL)
    d = p.add_argument_group("distributed (Ray Train; local Ray unless RAY_ADDRESS or a running cluster)")
    _add_options(d, DISTRIBUTED)
    d.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted distributed run from its latest checkpoint: the folder "
                        "<storage>/<run name> (printed on Ctrl-C); its config is reused, options given here override it")


def train_overrides(args: argparse.Namespace) -> dict:
    """The nested RunConfig overrides of the options given (``{'train': {'epochs': 3}}``)."""
    o: dict = {}
    for opt in (*GENERAL, *DISTRIBUTED):
        value = getattr(args, opt.path, None)
        if value is not None:  # --out "" is refused (RunConfig), not taken for the default
            *parents, name = opt.path.split(".")
            node = o
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = value
    if args.dataset:
        o.setdefault("data", {})["dataset"] = args.dataset
    prepared = o.get("data", {}).pop("prepared", None)
    if prepared:  # a prepared dataset, never a source: no manifest there is an error
        from cmmd_dist.storage import is_s3_uri

        refuse_userinfo(prepared, "--data")
        # absolute on the driver: Ray Train workers on a cluster would read a relative one from the raylet's folder
        o["data"]["prepared"] = prepared if is_s3_uri(prepared) else str(Path(prepared).resolve())
        if not args.dataset:  # named by its manifest (the packaged config would say digits2v); no manifest: an error
            from cmmd_dist.config import DataConfig
            from cmmd_dist.datasets.registry import dataset_name

            o["data"]["dataset"] = dataset_name(DataConfig(prepared=prepared))
    refuse_userinfo(o.get("distributed", {}).get("storage"), "--storage")  # each Ray node brings its own S3 keys
    return o


def _load(args: argparse.Namespace) -> RunConfig:
    """The run's config: the YAML (the --resume run's own, --config, or the dataset's packaged one) with the options."""
    from pydantic import ValidationError

    from cmmd_dist.storage.yaml_files import load_run_config

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
    return run


def _summary(results: dict) -> str:
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
    return f"{line}; rmse {test['rmse']:.4f}; best epoch {results['best_epoch']}"


def cmd_train(args: argparse.Namespace) -> int:
    run = _load(args)
    distributed = bool(getattr(args, "distributed.workers", None) or getattr(args, "resume", None))
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
        from cmmd_dist.train.single import run_training

        results, out = run_training(run)
    print(_summary(results))
    print(f"results: {out}")
    return 0
