"""Bad input, table-driven: every case is a real subprocess of ``cmmd-dist ...`` / ``python -m cmmd_dist.*``
(or, for the pyfunc, a user's script around ``mlflow.pyfunc.load_model``) that must end with exit 2 and ONE
line on stderr naming the culprit, and leave nothing half-written: its own folder holds what its setup
put there and nothing more, and the shared throwaway MLflow store gains no model version and keeps no
RUNNING run, and no Ray started (each case's RAY_TMPDIR is its own ``{tmp}/ray``: a sweep refused before Ray
leaves no ``session_*`` there). Expected lines may name ``{tmp}``.

To add a case, append a ``Case`` to ``CASES``: in ``argv``, ``{tmp}`` is the case's own folder (also its
working directory), ``{mlflow}`` the store's URI, ``{model}`` the registered model's folder and ``{py}``
this interpreter; ``setup(tmp, shared)`` makes
the bad input inside ``tmp``. All cases run at once in a thread pool (each is mostly its own
``import torch``); each test item then checks one case's result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiny import TINY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLI = [str(BIN / "cmmd-dist")]
TUNE = [sys.executable, "-m", "cmmd_dist.tune"]
TRAIN = [sys.executable, "-m", "cmmd_dist.train"]
MODEL = "cmmd-digits2v"


@dataclass(frozen=True)
class Shared:
    """What the cases share: a good prepared digits2v (64 rows a split) and a tracking store with MODEL."""

    prepared: Path
    mlflow: str
    model_dir: Path


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expect: str  # a substring of the one stderr line
    setup: Callable[[Path, Shared], None] | None = None
    env: dict = field(default_factory=dict)


# -- setups: each writes the case's bad input into its own folder ------------------------------------------------
def write_text(name: str, text: str):
    def setup(tmp: Path, shared: Shared) -> None:
        (tmp / name).write_text(text)

    return setup


def _entry(root: Path, rel: str) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    return next(f for f in manifest["files"] if f["path"] == rel)


def _rewrite(root: Path, rel: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite one shard and re-sign it in the manifest: the damage is in the values, not the checksum."""
    import hashlib

    pq.write_table(change(pq.read_table(root / rel)), root / rel)
    manifest = json.loads((root / "manifest.json").read_text())
    data = (root / rel).read_bytes()
    for f in manifest["files"]:
        if f["path"] == rel:
            f.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(manifest))


def bad_shard(damage: str):
    """A copy of the prepared dataset at {tmp}/data with one damaged train shard."""

    def setup(tmp: Path, shared: Shared) -> None:
        root = tmp / "data"
        shutil.copytree(shared.prepared, root)
        rel = "train/part-00000.parquet"
        shard = root / rel
        if damage == "checksum":
            raw = bytearray(shard.read_bytes())
            raw[100:102] = b"XX"
            shard.write_bytes(bytes(raw))
        elif damage == "truncated":
            shard.write_bytes(shard.read_bytes()[: _entry(root, rel)["bytes"] // 2])
        elif damage == "missing-column":
            _rewrite(root, rel, lambda t: t.drop_columns(["view1"]))
        elif damage == "nan":
            def nan_row_5(t: pa.Table) -> pa.Table:
                values = np.stack(t.column("view1").to_pylist()).astype(np.float32)
                values[5, 3] = np.nan
                col = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
                return t.set_column(t.schema.get_field_index("view1"), pa.field("view1", col.type, False), col)

            _rewrite(root, rel, nan_row_5)
        elif damage == "no-manifest":
            (root / "manifest.json").unlink()

    return setup


def bad_manifest(damage: str):
    """A copy of the prepared dataset at {tmp}/data whose manifest or shards disagree with what training needs."""

    def setup(tmp: Path, shared: Shared) -> None:
        root = tmp / "data"
        shutil.copytree(shared.prepared, root)
        path = root / "manifest.json"
        if damage == "empty-val":
            _rewrite(root, "val/part-00000.parquet", lambda t: t.slice(0, 0))
        elif damage.startswith("single-class"):  # "-dev": val too (a sweep's trials train on both)
            for split in ("train", "val") if damage.endswith("-dev") else ("train",):
                _rewrite(root, f"{split}/part-00000.parquet",
                         lambda t: t.set_column(t.schema.get_field_index("label"), "label", pa.array([3] * len(t), pa.int64())))
        elif damage == "duplicate-row-ids":
            _rewrite(root, "train/part-00000.parquet",
                     lambda t: t.set_column(t.schema.get_field_index("row"), "row", pa.array([0] * len(t), pa.int64())))
        manifest = json.loads(path.read_text())
        if damage == "poisson":
            manifest["spec"]["modalities"][1]["likelihood"] = "poisson"
        elif damage == "file-twice":
            manifest["files"].append(dict(manifest["files"][0]))
            manifest["rows"]["train"] *= 2
        elif damage == "rows-disagree":
            manifest["rows"]["train"] = 100
        elif damage == "empty-val":
            manifest["rows"]["val"] = 0
            next(f for f in manifest["files"] if f["split"] == "val")["rows"] = 0
        path.write_text(json.dumps(manifest))

    return setup


def each(*setups):
    def setup(tmp: Path, shared: Shared) -> None:
        for s in setups:
            s(tmp, shared)

    return setup


def folder(name: str):
    def setup(tmp: Path, shared: Shared) -> None:
        (tmp / name).mkdir()

    return setup


def rows_parquet(width: int = 64, bad: float | None = None, column: str = "view1"):
    """{tmp}/rows.parquet for ``models predict``: 5 rows, one ``column`` of ``width`` floats, ``bad`` in row 3."""

    def setup(tmp: Path, shared: Shared) -> None:
        x = np.random.default_rng(0).random((5, width)).astype(np.float32)
        if bad is not None:
            x[3, 7] = bad
        pq.write_table(pa.table({column: pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), width)}),
                       tmp / "rows.parquet")

    return setup


PYFUNC_SCRIPT = """
import sys, numpy as np, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
x[3, 7] = float(sys.argv[2])
try:
    model.predict(pd.DataFrame({"view1": list(x)}), params={"task": sys.argv[3]})
except Exception as err:  # what a user's script would report
    print(f"{type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(2)
print("predicted", file=sys.stderr)
"""

PREDICT = [*CLI, "models", "predict", MODEL, "--mlflow", "{mlflow}", "--input", "{tmp}/rows.parquet",
           "--output", "{tmp}/out/preds.parquet"]
TRAIN_OUT = ["--out", "{tmp}/runs", "--no-progress", "--no-baseline", "--epochs", "1"]
TRAIN_YAML = [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT]
TRAIN_DATA = [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT]
TUNE_OUT = [*TUNE, "--out", "{tmp}/runs", "--num-trials", "1"]
SPACE = "dataset: digits2v\nparams:\n  {}\n"  # a search space of one param

CASES: list[Case] = [
    # train: config, options, dataset
    Case("train-yaml-syntax", [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT],
         "run.yaml: not valid YAML at line 3", write_text("run.yaml", "train:\n  epochs: [1\n")),
    Case("train-config-missing", [*CLI, "train", "--config", "{tmp}/nope.yaml", *TRAIN_OUT],
         "nope.yaml: config file not found"),
    Case("train-config-typo", [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT],
         "train.epoch: Extra inputs are not permitted", write_text("run.yaml", "train:\n  epoch: 3\n")),
    Case("train-config-not-mapping", [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT],
         "run.yaml: a run config must be a mapping", write_text("run.yaml", "- 1\n")),
    Case("train-epochs-0", [*TRAIN, "--epochs", "0", "--out", "{tmp}/runs"],
         "train.epochs: Input should be greater than or equal to 1, got 0 (command line)"),
    Case("train-workers-not-int", [*TRAIN, "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    Case("train-unknown-dataset", [*CLI, "train", "--dataset", "digits3v", *TRAIN_OUT], "unknown dataset 'digits3v'"),
    Case("train-unknown-scenario", [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT],
         "has no scenario 'view9'", write_text("run.yaml", "data:\n  scenario: view9\n")),
    Case("train-pretrain-negative", [*CLI, "train", "--config", "{tmp}/run.yaml", *TRAIN_OUT],
         "train.pretrain_epochs: Input should be greater than or equal to 0", write_text("run.yaml", "train:\n  pretrain_epochs: -1\n")),
    Case("train-resume-nothing", [*CLI, "train", "--resume", "{tmp}/runs/ray/none"], "no run to resume there"),
    # train: prepared datasets with a damaged shard (found while loading, before training)
    Case("train-shard-checksum", [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT],
         "train/part-00000.parquet: checksum mismatch", bad_shard("checksum")),
    Case("train-shard-truncated", [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT],
         "train/part-00000.parquet: truncated or altered shard", bad_shard("truncated")),
    Case("train-shard-missing-column", [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT],
         "train/part-00000.parquet: column 'view1' is missing", bad_shard("missing-column")),
    Case("train-shard-nan", [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT],
         "column 'view1' has NaN/inf values (first at row 5)", bad_shard("nan")),
    Case("train-no-manifest", [*CLI, "train", "--data", "{tmp}/data", *TRAIN_OUT], "manifest", bad_shard("no-manifest")),
    # tune: argument and search-space validation (before Ray starts)
    Case("tune-unknown-dataset", [*TUNE, "--dataset", "digits3v", "--out", "{tmp}/runs"], "unknown dataset 'digits3v'"),
    Case("tune-unknown-preset", [*CLI, "tune", "--preset", "huge", "--out", "{tmp}/runs"], "no preset 'huge'"),
    Case("tune-num-trials-0", [*TUNE, "--num-trials", "0", "--out", "{tmp}/runs"], "num_trials"),
    # issue 23.5: every float finite, seeds in range, a device that exists, a folder that can be one
    Case("train-seed-negative", [*CLI, "train", "--seed", "-1", *TRAIN_OUT],
         "train.seed: Input should be greater than or equal to 0, got -1 (command line)"),
    Case("train-seed-2**70", [*CLI, "train", "--seed", str(2**70), *TRAIN_OUT],
         "train.seed: Input should be less than or equal to 4294967295"),
    Case("train-lr-inf", [*CLI, "train", "--lr", "inf", *TRAIN_OUT], "train.lr: Input should be a finite number"),
    Case("train-mmd-weight-inf", TRAIN_YAML, "loss.mmd_weight: Input should be a finite number, got inf ({tmp}/run.yaml)",
         write_text("run.yaml", "loss:\n  mmd_weight: .inf\n")),
    Case("train-dropout-nan", TRAIN_YAML, "model.dropout: Input should be a finite number",
         write_text("run.yaml", "model:\n  dropout: .nan\n")),
    Case("train-data-seed-negative", TRAIN_YAML, "data.seed: Input should be greater than or equal to 0",
         write_text("run.yaml", "data:\n  seed: -5\n")),
    Case("train-device-meta", TRAIN_YAML, "train.device: String should match pattern",
         write_text("run.yaml", "train:\n  device: meta\n")),
    Case("train-out-is-file", [*CLI, "train", *TRAIN_OUT, "--out", "{tmp}/afile/runs"],
         "--out {tmp}/afile/runs: {tmp}/afile is a file, not a folder", write_text("afile", "x")),
    Case("train-out-empty", [*CLI, "train", *TRAIN_OUT, "--out", ""], "output_dir: String should have at least 1 character"),
    # issue 23.5: data that cannot train, refused from the manifest or as the rows load, before the run folder
    Case("train-manifest-poisson", TRAIN_DATA, "modality 'view2' has likelihood 'poisson'", bad_manifest("poisson")),
    Case("train-manifest-file-twice", TRAIN_DATA, "file train/part-00000.parquet is listed twice",
         bad_manifest("file-twice")),
    Case("train-manifest-rows-disagree", TRAIN_DATA, "'rows' says split 'train' has 100 rows, its files have 64",
         bad_manifest("rows-disagree")),
    Case("train-empty-val", TRAIN_DATA, "split 'val' has no rows", bad_manifest("empty-val")),
    Case("train-single-class", TRAIN_DATA, "the training rows hold a single class ([3])", bad_manifest("single-class")),
    Case("train-single-class-limit-1", [*CLI, "train", "--limit", "1", *TRAIN_OUT], "hold a single class"),
    Case("train-duplicate-row-ids", TRAIN_DATA, "split 'train': row id 0 is used by 64 rows",
         bad_manifest("duplicate-row-ids")),
    # issue 23.5: a sweep's every check before Ray starts (the harness also asserts no Ray session appeared)
    Case("tune-space-zdim-0", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "params.model.zdim: value 0 is refused",
         write_text("s.yaml", SPACE.format("model.zdim: {dist: choice, values: [4, 0]}"))),
    Case("tune-space-batch-size-string", [*TUNE_OUT, "--space", "{tmp}/s.yaml"],
         "params.train.batch_size: value 'big' is refused",
         write_text("s.yaml", SPACE.format("train.batch_size: {dist: choice, values: [32, big]}"))),
    Case("tune-space-dropout-nan", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "params.model.dropout.high: Input should be a finite",
         write_text("s.yaml", SPACE.format("model.dropout: {dist: uniform, low: 0.1, high: .nan}"))),
    Case("tune-space-lr-range-out", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "params.train.lr: value 0.0 is refused",
         write_text("s.yaml", SPACE.format("train.lr: {dist: uniform, low: 0, high: 0.1}"))),
    Case("tune-space-depth-0", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "params.model.encoder_depth: value 0 is refused",
         write_text("s.yaml", SPACE.format("model.encoder_depth: {dist: int, low: 0, high: 2}"))),
    Case("tune-space-unknown-dataset", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "unknown dataset 'digits3v'",
         write_text("s.yaml", "dataset: digits3v\n")),
    Case("tune-space-folder", [*TUNE_OUT, "--space", "{tmp}/spaces"], "is a folder, expected a YAML search space file",
         folder("spaces")),
    Case("tune-space-not-utf8", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "s.yaml: not a YAML search space: not UTF-8",
         lambda tmp, shared: (tmp / "s.yaml").write_bytes(b"dataset: d\xff\n")),
    Case("tune-space-yaml-syntax", [*TUNE_OUT, "--space", "{tmp}/s.yaml"], "s.yaml: not valid YAML at line 3",
         write_text("s.yaml", "dataset: digits2v\nparams: [\n")),
    Case("tune-scenario-view9", [*TUNE_OUT, "--scenario", "view9"], "has no scenario 'view9'"),
    Case("tune-seed-negative", [*TUNE_OUT, "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
    Case("tune-storage-relative", [*TUNE_OUT, "--storage", "sweeps"], "--storage sweeps: a local storage must be an absolute path"),
    Case("tune-storage-file", [*TUNE_OUT, "--storage", "{tmp}/afile"], "--storage {tmp}/afile: {tmp}/afile is a file",
         write_text("afile", "x")),
    Case("tune-storage-gs", [*TUNE_OUT, "--storage", "gs://bucket/sweeps"], "use an absolute local folder or s3://"),
    Case("tune-out-is-file", [*TUNE, "--out", "{tmp}/afile"], "--out {tmp}/afile: {tmp}/afile is a file", write_text("afile", "x")),
    Case("tune-mlflow-gopher", [*TUNE_OUT, "--mlflow", "gopher://x"], "--mlflow gopher://x: not a tracking URI MLflow opens"),
    Case("tune-mlflow-unreachable", [*TUNE_OUT, "--mlflow", "http://127.0.0.1:1"],
         "MLflow tracking server http://127.0.0.1:1 is unreachable"),
    Case("tune-mlflow-sqlite-no-folder", [*TUNE_OUT, "--mlflow", "sqlite:///{tmp}/nope/x.db"],
         "folder {tmp}/nope does not exist"),
    Case("tune-workers-per-trial-99", [*TUNE_OUT, "--workers-per-trial", "99"],
         "--workers-per-trial 99 needs 99 CPUs (1 per worker), but the Ray this sweep starts here has"),
    Case("tune-manifest-file-twice", [*TUNE_OUT, "--data", "{tmp}/data"], "file train/part-00000.parquet is listed twice",
         bad_manifest("file-twice")),
    Case("tune-single-class", [*TUNE_OUT, "--data", "{tmp}/data"],
         "{tmp}/data: the training rows (train + val) hold a single class ([3])", bad_manifest("single-class-dev")),
    # data prepare
    Case("prepare-missing-source", [*CLI, "data", "prepare", "--dataset", "mnist2v", "--source", "{tmp}/nope",
                                    "--out", "{tmp}/prepared"], "nope"),
    Case("prepare-rows-per-file-0", [*CLI, "data", "prepare", "--dataset", "digits2v", "--rows-per-file", "0",
                                     "--out", "{tmp}/prepared"], "--rows-per-file"),
    # models predict / pull
    Case("predict-nan-row", PREDICT, "column 'view1': row 3 has NaN/inf values", rows_parquet(bad=np.nan)),
    Case("predict-inf-row", PREDICT, "column 'view1': row 3 has NaN/inf values", rows_parquet(bad=-np.inf)),
    Case("predict-no-column", PREDICT, "no column 'view1'", rows_parquet(column="view2")),
    Case("predict-wrong-width", PREDICT, "column 'view1' has 60 floats per row, expected 64", rows_parquet(width=60)),
    Case("predict-input-missing", PREDICT, "rows.parquet: no such file"),
    Case("predict-input-not-parquet", PREDICT, "rows.parquet: not a readable Parquet file",
         write_text("rows.parquet", "view1\n1,2,3\n")),
    Case("predict-unknown-model", [*CLI, "models", "predict", "cmmd-nope", "--mlflow", "{mlflow}", "--input",
                                   "{tmp}/rows.parquet", "--output", "{tmp}/out.parquet"],
         "no registered model 'cmmd-nope'", rows_parquet()),
    Case("pull-unknown-alias", [*CLI, "models", "pull", MODEL, "--alias", "old", "--mlflow", "{mlflow}",
                                "--out", "{tmp}/models"], "has no alias 'old'"),
    Case("pull-unreachable-server", [*CLI, "models", "pull", MODEL, "--mlflow", "http://127.0.0.1:9",
                                     "--out", "{tmp}/models"], "127.0.0.1:9"),
    Case("predict-output-folder", [*PREDICT[:-1], "{tmp}/out"], "--output {tmp}/out: is a folder",
         each(rows_parquet(), folder("out"))),
    Case("models-list-store-missing", [*CLI, "models", "list", "--mlflow", "sqlite:///{tmp}/nope/x.db"],
         "no MLflow store there ({tmp}/nope/x.db does not exist)"),
    # the pyfunc, as a user's script sees it
    Case("pyfunc-nan-row", [sys.executable, "-c", PYFUNC_SCRIPT, "{model}", "nan", "classify"],
         "ValueError: column 'view1': row 3 has NaN/inf values"),
    Case("pyfunc-inf-row-embed", [sys.executable, "-c", PYFUNC_SCRIPT, "{model}", "inf", "embed"],
         "ValueError: column 'view1': row 3 has NaN/inf values"),
]


def _fill(arg: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        arg = arg.replace(key, value)
    return arg


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _mlflow_state(uri: str) -> tuple[int, list[str]]:
    """(model versions, ids of RUNNING runs) of the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, uri)
    versions = len(client.search_model_versions())
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = [r.info.run_id for r in client.search_runs(experiments, "attributes.status = 'RUNNING'")] if experiments else []
    return versions, running


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
    from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
    from cmmd_dist.tracking.store import Tracker

    base = tmp_path_factory.mktemp("shared")
    subprocess.run([*CLI, "data", "prepare", "--dataset", "digits2v", "--limit", "64", "--out", str(base / "d2v")],
                   check=True, capture_output=True, cwd=base, timeout=120)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    tracker = Tracker(uri)
    import torch

    torch.manual_seed(0)
    core = CMMD(CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                           num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                           classifier_hidden=(8,))).eval()
    parent = tracker.start_sweep("digits2v", None, {})
    run = tracker.retrain_run(parent, {"seed": 0})
    tracker.register_best(run, core, DIGITS2V_SPEC, {"error": 0.5}, "digits2v", None,
                          {"view1": np.zeros((2, 8, 8), np.float32)})
    tracker.end_run(run)
    tracker.end_run(parent)
    model_dir = tracker.download(MODEL, dst=base / "pulled")
    return Shared(prepared=base / "d2v", mlflow=uri, model_dir=model_dir)


@pytest.fixture(scope="module")
def results(shared, tmp_path_factory) -> dict:
    """Every case run once, three at a time: id -> (exit code, stderr, listing before, listing after)."""
    before_store = _mlflow_state(shared.mlflow)
    env = {k: v for k, v in os.environ.items() if k not in ("CMMD_DEBUG", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PYTHONUNBUFFERED="1", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")

    def run(case: Case):
        tmp = tmp_path_factory.mktemp(case.id)
        if case.setup is not None:
            case.setup(tmp, shared)
        before = _listing(tmp)
        names = {"{tmp}": str(tmp), "{mlflow}": shared.mlflow, "{model}": str(shared.model_dir), "{py}": sys.executable}
        argv = [_fill(a, names) for a in case.argv]
        # Ray's sessions go under the case's own folder: a Ray started by a case shows there (and connects to
        # no other Ray running on this machine)
        case_env = {**env, "RAY_TMPDIR": str(tmp / "ray"), **{k: _fill(v, names) for k, v in case.env.items()}}
        proc = subprocess.run(argv, cwd=tmp, env=case_env, capture_output=True, text=True, timeout=180)
        return case.id, (proc.returncode, proc.stderr, before, _listing(tmp), tmp)

    with ThreadPoolExecutor(max_workers=3) as pool:
        out = dict(pool.map(run, CASES))
    out["_store"] = (before_store, _mlflow_state(shared.mlflow))
    return out


def test_the_table_is_big_enough():
    assert len({c.id for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(results, case):
    code, err, before, after, tmp = results[case.id]
    lines = err.splitlines()
    assert code == 2, f"exit {code}; stderr:\n{err[-3000:]}"
    assert len(lines) == 1, f"{len(lines)} stderr lines:\n{err[-3000:]}"
    assert _fill(case.expect, {"{tmp}": str(tmp)}) in lines[0], lines[0]
    assert "Traceback" not in err
    assert not list(tmp.glob("ray/session_*")), "Ray was started"
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


def test_no_model_version_and_no_running_run_was_left(results):
    (versions_before, running_before), (versions_after, running_after) = results["_store"]
    assert versions_after == versions_before and running_after == running_before == []


# -- the same contract inside Ray Train (in-process on the session Ray: starting Ray per case costs too much) ---
def ray_run(tmp_path: Path, data: dict, workers: int = 2, **distributed):
    from cmmd_dist.storage.yaml_files import load_run_config

    return load_run_config(None, {
        "data": data, "model": TINY,
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "baseline": False},
        "distributed": {"workers": workers, "max_failures": 2, "storage": str(tmp_path / "ray"), "name": "bad",
                        **distributed},
        "output_dir": str(tmp_path / "runs"),
    })


def test_bad_shard_on_ray_train_workers_is_a_user_error_not_retried(ray_session, shared, tmp_path):
    """Without the marker, Ray Train restarts the group max_failures times on the same file and raises its
    own WorkerGroupError with every attempt's traceback."""
    from cmmd_dist.errors import UserError
    from cmmd_dist.train.distributed import run_distributed

    bad_shard("checksum")(tmp_path, shared)
    run = ray_run(tmp_path, {"dataset": "digits2v", "prepared": str(tmp_path / "data")})
    with pytest.raises(UserError, match=r"train/part-00000\.parquet: checksum mismatch") as e:
        run_distributed(run)
    assert type(e.value) is UserError and "\n" not in str(e.value)
    assert not (tmp_path / "ray" / "bad").exists() and not (tmp_path / "runs").exists()  # nothing half-written


def test_more_workers_than_cpus_fails_before_the_trainer_starts(ray_session, tmp_path):
    import time

    from cmmd_dist.errors import UserError
    from cmmd_dist.train.distributed import run_distributed

    cpus = int(ray_session.cluster_resources()["CPU"])
    t0 = time.monotonic()
    with pytest.raises(UserError, match=rf"--workers {cpus + 1} needs {cpus + 1} CPUs .*has {cpus}: use --workers {cpus}"):
        run_distributed(ray_run(tmp_path, {"dataset": "digits2v", "limit": 64}, workers=cpus + 1))
    assert time.monotonic() - t0 < 30  # Ray Train would wait 60 s for the resources, then retry forever
    assert not (tmp_path / "ray").exists()
    if not ray_session.cluster_resources().get("GPU"):
        with pytest.raises(UserError, match=r"--workers 1 needs 1 GPUs \(1 per worker\), but this machine's Ray has 0: "
                                            r"drop --use-gpu"):
            run_distributed(ray_run(tmp_path, {"dataset": "digits2v", "limit": 64}, workers=1, use_gpu=True))
