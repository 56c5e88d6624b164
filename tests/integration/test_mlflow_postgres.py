"""Tracking on a real PostgreSQL: several sweeps' drivers writing at once lose nothing.

A throwaway PostgreSQL cluster (Debian's ``postgresql``: initdb + pg_ctl on a free loopback port, run as
the ``postgres`` user when the tests run as root, which PostgreSQL refuses) holds the MLflow store.
Three sweep drivers, each its own process with a ``SweepRecorder``, track trials at the same time, two of
them on the same dataset so that they race for one registered model and its ``champion`` alias; then
every run, its nesting, every metric point, each model version and ``pull`` are checked.
Skips, saying why, when PostgreSQL or its driver (psycopg2-binary, in the ``test`` extra) is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from waiting import TimedOut, wait_for

pytestmark = pytest.mark.integration

SWEEPS = (("pga", 0), ("pga", 1), ("pgb", 2))  # (dataset, seed of its champion)
TRIALS, EPOCHS = 4, 6


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


class Postgres:
    """A PostgreSQL cluster in a folder of its own, on a free loopback port; ``stop`` signals its own pid."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        # root may not run postgres: the cluster belongs to the postgres user, in a folder that user can reach
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="cmmd-pg-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"
        self.pid: int | None = None

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=180, cwd=self.root)

    def start(self) -> "Postgres":
        if self.user:
            ids = pwd.getpwnam(self.user)
            os.chown(self.root, ids.pw_uid, ids.pw_gid)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "postgres.log"), "-w", "-t", "120", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="mlflow", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        return self

    def stop(self, grace: float = 30.0) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                wait_for(lambda: not _alive(self.pid), grace, what="PostgreSQL to shut down")
            except TimedOut:
                os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def postgres():
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL not installed (apt-get install -y postgresql): no initdb/pg_ctl")
    pytest.importorskip("psycopg2", reason="MLflow's PostgreSQL driver psycopg2 missing: pip install -e '.[test]'")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _no_user("postgres")):
        pytest.skip("running as root and no 'postgres' user (or runuser) to run PostgreSQL as")
    server = Postgres(bindir)
    try:
        server.start()
    except subprocess.CalledProcessError as err:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {err.stderr.decode()[-2000:]}")
    yield server
    server.stop()


def _no_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False


SWEEP_DRIVER = """
import sys, numpy as np, torch
from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.tracking.recorder import SweepRecorder
uri, dataset, seed, trials, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rec = SweepRecorder(dataset, None, {"lam": {"dist": "uniform", "low": 0, "high": 1}}, sweep_id=f"pg/sweep-{seed}", uri=uri,
                    retry_s=0.5)
for e in range(1, epochs + 1):  # trials interleaved as Tune reports them
    for t in range(trials):
        trial = f"trial-{seed}-{t}"
        if e == 1:
            rec.trial_started(trial, {"loss.lam": t / trials, "seed": seed})
        if t == 0 and e > 2:
            continue  # pruned by ASHA after two epochs
        rec.trial_result(trial, {"epoch": e, "cv_metric": seed + t + e / 100, "fold0/val_metric": e * 1.0})
for t in range(trials):
    rec.trial_finished(f"trial-{seed}-{t}", pruned=(t == 0))
torch.manual_seed(seed)
core = CMMD(CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                       num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                       classifier_hidden=(8,))).eval()
print(rec.finish(core, DIGITS2V_SPEC, {"error": seed / 10}, {"loss.lam": 0.5}, {"view1": np.zeros((2, 8, 8), np.float32)},
                 sweep_figures={"best_cv_mean": float(seed)}))
assert rec.lost == 0, rec.lost
"""


def test_concurrent_sweeps_on_postgres_lose_nothing(postgres, tmp_path, monkeypatch):
    from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
    from cmmd_dist.tracking.store import Tracker, pull

    monkeypatch.chdir(tmp_path)  # a SQL store without a server keeps artifacts in ./mlruns
    tracker = Tracker(postgres.uri)
    tracker.client.search_experiments()  # creates the schema once, as a shared server (or `mlflow db upgrade`) would
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP_DRIVER, postgres.uri, ds, str(seed), str(TRIALS), str(EPOCHS)],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ds, seed in SWEEPS]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert [o.strip().splitlines()[-1] for o, _ in outs] == [f"models:/cmmd-{ds}@champion" for ds, _ in SWEEPS]

    c = tracker.client
    for ds, seed in SWEEPS:
        exp = c.get_experiment_by_name(f"cmmd-{ds}")
        parents = c.search_runs([exp.experiment_id], f"tags.sweep_id = 'pg/sweep-{seed}' and tags.kind = 'sweep'")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].info.run_name == f"sweep-{seed}" and parents[0].data.metrics == {"best_cv_mean": seed}
        children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
        assert sorted(r.info.run_name for r in children) == ["retrain"] + [f"trial-{seed}-{t}" for t in range(TRIALS)]
        for r in children:
            assert r.info.status == "FINISHED"
            if r.info.run_name == "retrain":
                continue
            t = int(r.info.run_name.rsplit("-", 1)[1])
            epochs = range(1, 3) if t == 0 else range(1, EPOCHS + 1)
            hist = sorted((m.step, m.value) for m in c.get_metric_history(r.info.run_id, "cv_metric"))
            assert hist == [(e, seed + t + e / 100) for e in epochs]
            assert len(c.get_metric_history(r.info.run_id, "fold0/val_metric")) == len(epochs)
            assert r.data.tags.get("pruned") == ("true" if t == 0 else None)
            assert r.data.params["seed"] == str(seed)

    # two sweeps raced for cmmd-pga: both versions kept, the alias on one of them, pull gives its weights
    versions = {v.tags["sweep_id"]: v for v in c.search_model_versions("name = 'cmmd-pga'")}
    assert sorted(versions) == ["pg/sweep-0", "pg/sweep-1"]
    assert sorted(int(v.version) for v in versions.values()) == [1, 2]
    for ds in ("pga", "pgb"):
        mv = tracker.model_version(f"cmmd-{ds}")
        seed = int(mv.tags["sweep_id"].rsplit("-", 1)[1])
        assert (ds, seed) in SWEEPS and mv.tags["metric.error"] == str(seed / 10)
        core, spec = pull(f"cmmd-{ds}", uri=postgres.uri)
        torch.manual_seed(seed)
        ref = CMMD(CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                              num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                              classifier_hidden=(8,)))
        assert spec.name == "digits2v"
        for a, b in zip(core.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)
