"""``cmmd-dist models``: the registered models (CMMD, and baselines registered as ``<kind>-<dataset>``) of a tracking store.

    cmmd-dist models list
    cmmd-dist models pull cmmd-digits2v [--alias champion] [--out DIR]
    cmmd-dist models predict cmmd-digits2v --input rows.parquet --output preds.parquet [--task classify]

``--mlflow URI`` (or MLFLOW_TRACKING_URI) selects a shared server; the default is ``./mlruns.db``.
The predict input has one flattened ``list<float32>`` column per OBSERVED modality, finite values
only (a NaN/inf cell is an error naming its column and row); the output is written only when every
row was predicted (to a temporary name, then renamed). ``pull`` fills its folder the same way. Bad
input is one line ``cmmd-dist: error: ...`` and exit 2, through ``errors.run_cli``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cmmd_dist.errors import UserError, one_line

__all__ = ["add_models_subcommand", "cmd_list", "cmd_pull", "cmd_predict"]


def cmd_list(args: argparse.Namespace) -> int:
    from cmmd_dist.tracking.models import registered_model_rows
    from cmmd_dist.tracking.store import Tracker

    tracker = Tracker(args.mlflow)
    rows = registered_model_rows(tracker)
    if not rows:
        print(f"no registered models in {tracker.uri}")
        return 0
    print(f"{'name':<32} {'alias':<12} {'version':>7}  metrics")
    for name, alias, version, metrics in rows:
        figures = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{name:<32} {alias:<12} {version:>7}  {figures}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from cmmd_dist.tracking import pyfunc as pyfunc_model
    from cmmd_dist.tracking.store import Tracker

    tracker = Tracker(args.mlflow)
    out = Path(args.out or Path("models") / f"{args.name}-{args.alias}")
    tracker.model_version(args.name, args.alias)  # a clear error before anything is written
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:  # downloaded and checked inside --out under a hidden name, then renamed: no half-pulled model folder
        with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp:
            got = tracker.download(args.name, args.alias, tmp)
            pyfunc_model.load_files(got / "artifacts")
            folder = out / got.name
            old = Path(tmp) / "replaced"
            if folder.exists():  # a re-pull replaces the earlier copy only once the new one is complete
                os.replace(folder, old)
            os.replace(got, folder)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    core, spec, metrics = pyfunc_model.load_files(folder / "artifacts")
    print(f"{args.name}@{args.alias}: {pyfunc_model.model_kind(core)} on dataset {spec.name}, observed {[m.name for m in core.cfg.observed]}, "
          f"missing {[m.name for m in core.cfg.missing]}, zdim {core.cfg.zdim}")
    print(f"model folder: {folder}  (mlflow.pyfunc.load_model({str(folder)!r}) or "
          f"cmmd_dist.tracking.pyfunc.load_files({str(folder / 'artifacts')!r}))")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cmmd_dist.datasets.table_io import read_parquet_file, write_parquet_frame
    from cmmd_dist.tracking.models import load_registered_pyfunc
    from cmmd_dist.tracking.store import Tracker

    out = Path(args.output)
    if out.is_dir() or out.name in ("", ".", ".."):
        raise UserError(f"--output {args.output}: is a folder, expected the Parquet file to write")
    from cmmd_dist.train.run_folder import check_folder_path

    check_folder_path(str(out.parent), "--output")
    tracker = Tracker(args.mlflow)
    # an unknown name or alias is a clear error before anything is read or written
    mv, model, names = load_registered_pyfunc(tracker, args.name, args.alias)
    table = read_parquet_file(args.input, "--input")
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise UserError(f"{args.input}: no column {missing[0]!r} (observed modalities of {args.name}: {names}; "
                         f"columns: {table.column_names})")
    try:
        preds = model.predict(table.select(names).to_pandas(), params={"task": args.task})
    except ValueError as err:  # the pyfunc's refusal (non-finite or wrong-width cells) names column and row
        raise UserError(f"--input {args.input}: {one_line(err)}") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_frame(preds, out)
    print(f"{len(preds)} predictions ({args.task}) of {args.name}@{args.alias} (version {mv.version}) -> {out}")
    return 0


def _run(func):
    """``func`` with MLflow's own errors (unreachable store, refused request) as one-line UserErrors."""

    def wrapped(args: argparse.Namespace) -> int:
        from cmmd_dist.tracking.models import mlflow_errors, quiet
        from cmmd_dist.tracking.store import check_tracking_uri

        quiet()
        check_tracking_uri(args.mlflow, must_exist=True)  # these commands read a store: never create one
        with mlflow_errors(args.mlflow):
            return func(args)

    return wrapped


def add_models_subcommand(sub) -> None:
    """``models list | pull | predict`` under the ``cmmd-dist`` parser's subcommands ``sub``."""
    models = sub.add_parser("models", help="registered models: list, pull, predict")
    msub = models.add_subparsers(dest="models_command", required=True)

    def common(p: argparse.ArgumentParser, named: bool = True) -> None:
        p.add_argument("--mlflow", help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///./mlruns.db)")
        if named:
            p.add_argument("name", help="registered model name, e.g. cmmd-digits2v")
            p.add_argument("--alias", default="champion", help="model alias (default: champion)")

    p = msub.add_parser("list", help="registered models, their aliases and test figures")
    common(p, named=False)
    p.set_defaults(func=_run(cmd_list))
    p = msub.add_parser("pull", help="download a registered model folder")
    common(p)
    p.add_argument("--out", help="destination folder (default: models/<name>-<alias>)")
    p.set_defaults(func=_run(cmd_pull))
    p = msub.add_parser("predict", help="predict from a Parquet file of observed modalities")
    common(p)
    p.add_argument("--input", required=True, help="Parquet: one flattened list<float32> column per observed modality")
    p.add_argument("--output", required=True, help="Parquet file to write")
    p.add_argument("--task", default="classify", choices=["classify", "generate", "embed"])
    p.set_defaults(func=_run(cmd_predict))
