"""Everything MLflow: where tracking lives, sweep / trial / retrain runs, artifacts, the model registry.

    tracker = Tracker()                      # --mlflow URI > MLFLOW_TRACKING_URI > sqlite:///<cwd>/mlruns.db
    parent = tracker.start_sweep("digits2v", None, search_space, tags={"ray_job_id": ...}, sweep_id=exp_path)
    run = tracker.trial_run(parent, "trial-0003", flat_config)   # a restarted trial gets its own run back
    tracker.log_epoch(run, epoch, {"cv_mean": ..., "fold0/val_metric": ...})
    tracker.end_run(run, pruned=stopped_early)
    final = tracker.retrain_run(parent, best_config)
    tracker.log_final(final, test_metrics, {"learning_curves.png": fig, "summary.json": summary})
    uri = tracker.register_best(final, core, spec, test_metrics, "digits2v", None, example_rows)
    core, spec = pull("cmmd-digits2v")       # torch model (eval mode) + DatasetSpec

``SweepRecorder`` wraps the sweep part for a driver that sees trial events (a Tune Callback).
The embedded default keeps runs in ``<cwd>/mlruns.db`` and artifacts in ``<cwd>/mlartifacts``; a
shared ``mlflow server`` (SQL backend, ``--artifacts-destination s3://...``) is selected by URI.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cmmd_dist.errors import UserError

__all__ = ["TrackingError", "Tracker", "SweepRecorder", "resolve_tracking_uri", "check_tracking_uri", "take_credentials",
           "registered_name", "ui_command", "pull", "CHAMPION"]

CHAMPION = "champion"
# MLflow 3's UI opens an experiment in its GenAI / traces view unless this tag says it is model training
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# the runs table starts with no metric columns: a shared view (opened with ?viewStateShareKey=sweep-figures)
# shows the figures every sweep's parent run logs, so that sweeps compare side by side
SWEEP_VIEW = "sweep-figures"
# (the table orders metric columns by name and draws only what fits a screen: the six most telling)
SWEEP_COLUMNS = ("best_cv_mean", "best_cv_std", "test_error", "test_map", "trials_finished", "trials_pruned")
_EXPERIMENT_TAGS = {
    EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
    f"mlflow.sharedViewState.{SWEEP_VIEW}": json.dumps({"selectedColumns": [f"metrics.`{k}`" for k in SWEEP_COLUMNS]}),
}
_PARAM_MAX = 6000


class TrackingError(UserError, RuntimeError):
    """A tracking problem a user can act on (unreachable server, unknown model or alias)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` (``--mlflow``), else MLFLOW_TRACKING_URI, else the embedded ``sqlite:///<cwd>/mlruns.db``; a
    user and password in it are moved to this process's environment (:func:`take_credentials`), so the URI
    returned, which is stored and shown, carries none."""
    return take_credentials(uri or os.environ.get("MLFLOW_TRACKING_URI")
                            or f"sqlite:///{Path.cwd().resolve() / 'mlruns.db'}")


def take_credentials(uri: str | None) -> str | None:
    """``uri`` without user-info; for a server (http/https) its user and password become
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` of this process (where MLflow's client reads
    them at each request, as it does ``~/.mlflow/credentials``). A database store (``postgresql://role@host/db``)
    keeps its user, the database role, and loses only a password (``url_credentials.strip_password``). Never
    handed to Ray: only the driver talks to MLflow."""
    from cmmd_dist.storage.url_credentials import split_userinfo, strip_password

    if uri is None:
        return None
    if not uri.startswith(("http://", "https://")):  # a database store: its user names the role
        return strip_password(uri)
    stripped, user, password = split_userinfo(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return stripped


def ui_command(uri: str | None = None, port: int = 5000) -> str:
    """How a person looks at the runs: the server's address, or the ``mlflow ui`` line for a SQLite store."""
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (runs table with the sweeps' figures: ?viewStateShareKey={SWEEP_VIEW})"
    return f"mlflow ui --backend-store-uri {uri} --port {port}   # then open http://127.0.0.1:{port}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite store (``mlartifacts``); a server decides for itself (None)."""
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if uri.startswith("sqlite:///") else None


def _check_reachable(uri: str, timeout: float = 5.0) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}: {err}). Start it "
            "(mlflow server --backend-store-uri ... --artifacts-destination ... --serve-artifacts) or drop "
            "--mlflow / unset MLFLOW_TRACKING_URI to use the embedded store ./mlruns.db"
        ) from err


# the store kinds MLflow's tracking client opens (a typo such as gopher:// would fail in every trial instead)
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


def check_tracking_uri(uri: str | None = None, must_exist: bool = False) -> str:
    """The resolved tracking URI (:func:`resolve_tracking_uri`) once its form is one MLflow opens, a server
    answers, and a SQLite store's folder exists (``must_exist``: the store itself, for commands that only read);
    else a one-line TrackingError naming it. Nothing is created."""
    uri = resolve_tracking_uri(uri)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) else ""
    if scheme not in TRACKING_SCHEMES:
        raise TrackingError(f"--mlflow {uri}: not a tracking URI MLflow opens (use http(s)://host:port, "
                            f"sqlite:///ABSOLUTE/PATH.db or another of {', '.join(TRACKING_SCHEMES)})")
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise TrackingError(f"--mlflow {uri}: a SQLite store needs a file, e.g. sqlite:////abs/path/mlruns.db")
        db = Path(path).absolute()
        if db.is_dir() or (db.parent.exists() and not db.parent.is_dir()):
            raise TrackingError(f"--mlflow {uri}: {db if db.is_dir() else db.parent} is not a SQLite file's folder")
        if must_exist and not db.is_file():
            raise TrackingError(f"--mlflow {uri}: no MLflow store there ({db} does not exist)")
        if not db.parent.is_dir():
            raise TrackingError(f"--mlflow {uri}: folder {db.parent} does not exist")
    _check_reachable(uri)
    return uri


def registered_name(dataset: str, scenario: str | None = None, default_scenario: str | None = None,
                    kind: str = "cmmd") -> str:
    """``cmmd-<dataset>``, or ``cmmd-<dataset>-<scenario>`` for a non-default scenario (safe characters); a
    baseline of the paper is registered under its own kind, ``<kind>-<dataset>[-<scenario>]`` (``vcca-mnist2v``),
    so that its champion never replaces CMMD's."""
    name = f"{kind}-{dataset}"
    if scenario and scenario != default_scenario:
        name += f"-{scenario}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _default_scenario(dataset: str) -> str | None:
    from cmmd_dist.datasets.registry import SPECS

    return SPECS[dataset].default_scenario if dataset in SPECS else None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _numeric(metrics: dict) -> dict[str, float]:
    """Finite scalars only (lists such as collapse curves go to artifacts, NaN is not a figure)."""
    return {k: float(v) for k, v in _flatten(metrics).items()
            if isinstance(v, (bool, int, float, np.integer, np.floating)) and math.isfinite(float(v))}


def _param_text(v) -> str:
    return (v if isinstance(v, str) else json.dumps(v, default=str))[:_PARAM_MAX]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Tracker:
    """One tracking store: sweep (parent) runs, trial and retrain (child) runs, metrics, artifacts, registry."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        _check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # picklable by URI (a Tune callback holding a recorder is pickled with the Tuner's state)
    def __getstate__(self) -> dict:
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    # -- runs ------------------------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when absent (safe when several processes race)."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            for key, value in _EXPERIMENT_TAGS.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        root = _artifact_root(self.uri)
        try:
            return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None,
                                                 tags=dict(_EXPERIMENT_TAGS))
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, experiment_id: str, filters: str):
        runs = self.client.search_runs([experiment_id], filter_string=filters, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    def start_sweep(self, dataset: str, scenario: str | None, search_space: dict, tags: dict | None = None,
                    sweep_id: str | None = None, experiment: str | None = None) -> str:
        """The parent run of a sweep; with ``sweep_id`` an interrupted sweep gets its parent run back."""
        exp = self.experiment(experiment or registered_name(dataset, scenario, _default_scenario(dataset)))
        if sweep_id:
            found = self._find(exp, f"tags.kind = 'sweep' and tags.sweep_id = '{sweep_id}'")
            if found is not None:
                self.client.update_run(found.info.run_id, status="RUNNING")
                return found.info.run_id
        all_tags = {"kind": "sweep", "dataset": dataset, "scenario": scenario or "default", **(tags or {})}
        if sweep_id:
            all_tags["sweep_id"] = sweep_id
        commit = _git_commit()
        if commit:
            all_tags.setdefault("git_commit", commit)
            all_tags.setdefault("mlflow.source.git.commit", commit)
        # named by the sweep's folder (sweep-<dataset>-<time> or --name); its full path is the sweep_id tag
        run_name = Path(sweep_id).name if sweep_id else f"sweep-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = self.client.create_run(exp, tags={k: str(v) for k, v in all_tags.items()}, run_name=run_name)
        run_id = run.info.run_id
        self.log_params(run_id, {f"space.{k}": v for k, v in _flatten(search_space).items()})
        self.client.log_dict(run_id, search_space, "search_space.json")
        return run_id

    def trial_run(self, parent_run_id: str, trial_id: str, params: dict, kind: str = "trial") -> str:
        """The child run of trial ``trial_id`` under the sweep; an existing one is reused (restarted trial)."""
        parent = self.client.get_run(parent_run_id)
        exp = parent.info.experiment_id
        found = self._find(exp, f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.trial_id = '{trial_id}'")
        if found is not None:
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"mlflow.parentRunId": parent_run_id, "trial_id": trial_id, "kind": kind,
                    **{k: v for k, v in parent.data.tags.items() if k in ("dataset", "scenario", "sweep_id", "git_commit")}}
            run_id = self.client.create_run(exp, tags=tags, run_name=trial_id).info.run_id
        self.log_params(run_id, _flatten(params))
        return run_id

    def last_step(self, run_id: str) -> int:
        """The highest step of any metric the run holds (0 for none)."""
        metrics = self.client.get_run(run_id).data.metrics
        return max((m.step for key in metrics for m in self.client.get_metric_history(run_id, key)), default=0)

    def open_runs(self, parent_run_id: str, kind: str = "trial") -> list:
        """The child runs of ``kind`` under the parent that are still RUNNING."""
        exp = self.client.get_run(parent_run_id).info.experiment_id
        return self.client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                       f"tags.kind = '{kind}' and attributes.status = 'RUNNING'", max_results=10000)

    def retrain_run(self, parent_run_id: str, params: dict) -> str:
        """The child run of the final retrain on train+val (reused on resume like a trial)."""
        return self.trial_run(parent_run_id, "retrain", params, kind="retrain")

    def log_params(self, run_id: str, params: dict) -> None:
        """Params not yet on the run (MLflow params are write-once; a resumed run keeps its first values)."""
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, _param_text(v)) for k, v in _flatten(params).items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])

    def log_epoch(self, run_id: str, epoch: int, metrics: dict) -> None:
        """One epoch's figures at step ``epoch`` (nested dicts flattened with '.'; non-finite values and lists skipped)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, int(epoch)) for k, v in _numeric(metrics).items() if k != "epoch"]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def log_final(self, run_id: str, metrics: dict, artifacts: dict | None = None) -> None:
        """Final figures (step 0) and artifacts: name -> file path, matplotlib Figure (PNG), dict (JSON/YAML), or text."""
        self.log_epoch(run_id, 0, metrics)
        for name, value in (artifacts or {}).items():
            self.log_artifact(run_id, name, value)

    def log_artifact(self, run_id: str, name: str, value) -> None:
        """A file is logged under its own file name, in the folder part of ``name`` (``coherence/x.pt``: ``coherence/``)."""
        if isinstance(value, Path) or (isinstance(value, str) and "\n" not in value and _is_file(value)):
            folder = str(Path(name).parent)
            self.client.log_artifact(run_id, str(value), None if folder == "." else folder)
        elif hasattr(value, "savefig"):
            self.client.log_figure(run_id, value, name)
        elif isinstance(value, (dict, list)):
            self.client.log_dict(run_id, value, name)
        else:
            self.client.log_text(run_id, str(value), name)

    def end_run(self, run_id: str, status: str = "FINISHED", pruned: bool = False) -> None:
        """Close a run (FINISHED / FAILED / KILLED); ``pruned`` marks a trial the scheduler stopped early."""
        if pruned:
            self.client.set_tag(run_id, "pruned", "true")
        self.client.set_terminated(run_id, status=status)

    # -- registry --------------------------------------------------------------------------------
    def register_best(self, run_id: str, core, spec, metrics: dict, dataset: str, scenario: str | None,
                      input_example_rows: dict, tags: dict | None = None, description: str | None = None) -> str:
        """Log ``core`` as a pyfunc model into ``run_id``, register it, point alias ``champion`` at it.

        ``input_example_rows``: a few rows of each OBSERVED modality, name -> array (n, *shape).
        Returns ``models:/<name>@champion``."""
        from mlflow.exceptions import MlflowException

        from cmmd_dist.tracking import pyfunc as pyfunc_model

        kind = pyfunc_model.model_kind(core)
        name = registered_name(dataset, scenario, spec.default_scenario, kind)
        observed = [m.name for m in core.cfg.observed]
        with tempfile.TemporaryDirectory() as tmp:
            pyfunc_model.save(Path(tmp) / "model", core, spec, scenario, metrics, input_example_rows)
            self.client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
        try:
            label = "CMMD" if kind == "cmmd" else {"mx_o": "M-x_o"}.get(kind, kind.upper())
            self.client.create_registered_model(name, description=f"{label} on {dataset}: observed {observed}")
        except MlflowException:  # it exists already: a new version of it
            self.client.get_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        version = str(self.client.create_model_version(name, source, run_id=run_id, description=description).version)
        for key, value in {"dataset": dataset, "scenario": scenario or spec.default_scenario, "run_id": run_id,
                           "model_kind": kind,
                           **{f"metric.{k}": v for k, v in _numeric(metrics).items()}, **(tags or {})}.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        self.client.set_registered_model_alias(name, CHAMPION, version)
        return f"models:/{name}@{CHAMPION}"

    def model_version(self, name: str, alias: str = CHAMPION):
        """The registered version behind ``name@alias``; a clear error for an unknown name or alias."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as err:
            known = sorted(m.name for m in self.client.search_registered_models())
            raise TrackingError(f"no registered model {name!r} in {self.uri}; known: {known}") from err
        if alias not in model.aliases:
            raise TrackingError(f"registered model {name!r} has no alias {alias!r}; aliases: {sorted(model.aliases)}")
        return self.client.get_model_version_by_alias(name, alias)

    def download(self, name: str, alias: str = CHAMPION, dst: str | Path | None = None) -> Path:
        """The pyfunc model folder of ``name@alias`` (MLmodel, artifacts/model.pt, spec.json, metrics.json)."""
        import mlflow.artifacts

        mv = self.model_version(name, alias)
        dst = Path(dst or tempfile.mkdtemp(prefix="cmmd-model-"))
        dst.mkdir(parents=True, exist_ok=True)
        # the version's own artifact URI: a models:/ URI would resolve against the global registry URI
        source = self.client.get_model_version_download_uri(name, mv.version)
        got = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=self.uri)
        return Path(got)


def pull(name: str, alias: str = CHAMPION, uri: str | None = None):
    """``(model in eval mode, DatasetSpec)`` of registered model ``name@alias``: CMMD, or the baseline it was
    registered as (``pyfunc_model.model_kind`` tells which)."""
    from cmmd_dist.tracking import pyfunc as pyfunc_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Tracker(uri).download(name, alias, tmp)
        core, spec, _ = pyfunc_model.load_files(folder / "artifacts")
    return core, spec


def _is_file(text: str) -> bool:
    """Whether a string names an existing file (a long text is not a path)."""
    try:
        return Path(text).is_file()
    except OSError:
        return False


# Tune's own bookkeeping in a trial result: not figures worth a metric history
_RESULT_SKIP = frozenset({"config", "timestamp", "pid", "done", "training_iteration", "iterations_since_restore",
                          "time_this_iter_s", "time_total_s", "time_since_restore", "should_checkpoint"})


class SweepRecorder:
    """A sweep's runs, driven by the sweep DRIVER's trial events (plain data; a Tune Callback is a thin shim).

    Only the driver writes: a trial spanning many workers logs once, and the embedded store works on
    a cluster because only the head node touches it. Restarted or resumed trials get their run back.

    A tracking outage never kills the sweep: each event becomes a write queued in order; a write that
    fails (after the MLflow client's own retries) stays queued with everything after it, and the queue
    is retried at the next event once ``retry_s`` has passed, and at the end (:meth:`drain`). What the
    server never took is counted in :attr:`lost`."""

    def __init__(self, dataset: str, scenario: str | None, search_space: dict, tags: dict | None = None,
                 sweep_id: str | None = None, uri: str | None = None, retry_s: float = 10.0):
        self.tracker = Tracker(uri)
        self.dataset, self.scenario = dataset, scenario
        self.parent = self.tracker.start_sweep(dataset, scenario, search_space, tags, sweep_id)
        self.runs: dict[str, str] = {}
        self.steps: dict[str, int] = {}  # run id -> the last epoch it holds
        self.retry_s = retry_s
        self.lost = 0
        self._pending: deque[Callable[[], None]] = deque()
        self._retry_at = 0.0

    # picklable by URI and parent run (Tune pickles its callbacks with the experiment state)
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pending": deque(), "_retry_at": 0.0}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"steps": {}, **state})  # a recorder pickled before ``steps`` existed

    def trial_started(self, trial_id: str, config: dict) -> None:
        self._queue(lambda: self._start(trial_id, config))

    def trial_result(self, trial_id: str, result: dict, config: dict | None = None) -> None:
        """One report: step = ``result["epoch"]`` (else Tune's ``training_iteration``). An epoch the trial's run
        holds already is not logged again (a trial restarted from a checkpoint older than its last report)."""
        epoch = result.get("epoch", result.get("training_iteration", 0))
        metrics = {k: v for k, v in result.items() if k not in _RESULT_SKIP}
        config = config or result.get("config") or {}

        def write() -> None:
            run = self.runs.get(trial_id) or self._start(trial_id, config)
            if epoch <= self.steps.get(run, 0):
                return
            self.tracker.log_epoch(run, epoch, metrics)
            self.steps[run] = int(epoch)

        self._queue(write)

    def trial_finished(self, trial_id: str, status: str = "FINISHED", pruned: bool = False) -> None:
        def write() -> None:
            if trial_id in self.runs:
                self.tracker.end_run(self.runs[trial_id], status, pruned)
                self.runs.pop(trial_id)

        self._queue(write)

    def end_lost_trials(self, status: str = "KILLED") -> None:
        """End the sweep's trial runs left RUNNING that this recorder does not hold open: trials of a driver that
        was killed before Tune saved them (a resumed sweep runs their configurations again as new trials)."""
        def write() -> None:
            for run in self.tracker.open_runs(self.parent, kind="trial"):
                if run.info.run_id not in self.runs.values():
                    self.tracker.end_run(run.info.run_id, status)

        self._queue(write)

    def _start(self, trial_id: str, config: dict) -> str:
        self.runs[trial_id] = run = self.tracker.trial_run(self.parent, trial_id, config)
        self.steps[run] = self.tracker.last_step(run)
        return run

    # -- the write queue ---------------------------------------------------------------------------
    def _queue(self, write: Callable[[], None]) -> None:
        self._pending.append(write)
        if time.monotonic() >= self._retry_at:
            self.flush()

    def flush(self) -> int:
        """Write what is queued, in order, until a write fails; returns how many writes are still queued."""
        while self._pending:
            try:
                self._pending[0]()
            except Exception as err:
                if not isinstance(err, _tracking_down()):
                    raise
                if not self._retry_at:
                    _log.warning("MLflow %s is not taking writes (%s); the sweep goes on, %d writes queued",
                                 self.tracker.uri, type(err).__name__, len(self._pending))
                self._retry_at = time.monotonic() + self.retry_s
                return len(self._pending)
            self._pending.popleft()
        if self._retry_at:
            _log.warning("MLflow %s is back: every queued write is in", self.tracker.uri)
        self._retry_at = 0.0
        return 0

    def drain(self, timeout_s: float = 120.0) -> int:
        """Retry the queue until it is written or ``timeout_s`` has passed; what is left counts as lost."""
        deadline = time.monotonic() + timeout_s
        while self.flush() and time.monotonic() < deadline:
            time.sleep(min(self.retry_s, max(0.0, deadline - time.monotonic())))
        self.lost += len(self._pending)
        self._pending.clear()
        return self.lost

    def finish(self, core, spec, test_metrics: dict, best_params: dict, example_rows: dict,
               artifacts: dict | None = None, sweep_figures: dict | None = None) -> str:
        """The retrain run (test figures, artifacts, registered model); the sweep's figures on its parent run and
        on the model version (tags and description); closes the sweep. Returns the model URI."""
        self.drain()
        final = self.tracker.retrain_run(self.parent, best_params)
        self.tracker.log_final(final, test_metrics, artifacts)
        figures = dict(sweep_figures or {})
        self.tracker.log_epoch(self.parent, 0, figures)
        sweep_id = self.tracker.client.get_run(self.parent).data.tags.get("sweep_id", self.parent)
        described = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        uri = self.tracker.register_best(
            final, core, spec, test_metrics, self.dataset, self.scenario, example_rows,
            tags={"sweep_id": sweep_id, "sweep_run_id": self.parent, **{f"sweep.{k}": v for k, v in figures.items()}},
            description=f"Champion of sweep {Path(sweep_id).name} ({sweep_id}): {described}" if figures else None)
        self.tracker.end_run(final)
        self.tracker.end_run(self.parent)
        return uri

    def abort(self, status: str, drain_s: float = 30.0) -> None:
        """End the sweep as FAILED or KILLED: its open trial runs and its parent run (best effort: the
        server may be the reason)."""
        self.drain(drain_s)
        for run in list(self.runs.values()) + [self.parent]:
            try:
                self.tracker.end_run(run, status)
            except Exception as err:
                if not isinstance(err, _tracking_down()):
                    raise
                _log.warning("could not mark run %s %s: %s", run, status, err)
        self.runs.clear()


_log = logging.getLogger(__name__)


def _tracking_down() -> tuple[type[BaseException], ...]:
    """What a write raises when the tracking server is away (after the MLflow client's own retries);
    imported when first needed, so that importing this module does not import mlflow."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)
