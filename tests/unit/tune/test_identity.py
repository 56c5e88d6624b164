"""A sweep's or run's identity is fixed (issue 23): ``--resume`` refuses another dataset, data, space, scenario,
preset or tracking store (naming both) before anything starts; names are plain names that stay inside their
storage; credentials in a URL are never stored or shown (MLflow's move to the environment, S3's are refused).

No Ray is started: a sweep that "exists" is a planned sweep's folder with its ``sweep.json`` and a stand-in
``tuner.pkl`` (all ``Tuner.can_restore`` looks for)."""

from __future__ import annotations

import http.server
import os
import pickle
import threading
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cmmd_dist.config import DistributedConfig, SweepConfig
from cmmd_dist.errors import UserError

BAD_NAMES = ["../escape", "../../escape", "/abs", "a/b", "..", ".hidden", "", "x" * 65, "sp ace"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_sweep_name_is_a_plain_name(name):
    with pytest.raises(ValidationError, match="name"):
        SweepConfig(name=name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_is_a_plain_name(name):
    with pytest.raises(ValidationError, match="name"):
        DistributedConfig(name=name)


def test_plain_names_pass():
    assert SweepConfig(name="sweep-digits2v-20250101-120000").name == "sweep-digits2v-20250101-120000"
    assert DistributedConfig(name="retrain-a1b2c3d4_00001-e4-mx_o").name == "retrain-a1b2c3d4_00001-e4-mx_o"


def test_the_tune_command_line_refuses_a_name_that_climbs_out():
    from cmmd_dist.cli.tune import build_parser, settings_from_args

    args = build_parser().parse_args(["--name", "../../escape"])
    with pytest.raises(ValidationError, match="name"):
        settings_from_args(args)


# -- credentials in URLs ------------------------------------------------------------------------------------
SECRET = "s3cr3t-pw"


def test_userinfo_is_split_off_and_unquoted():
    from cmmd_dist.storage.url_credentials import split_userinfo, strip_userinfo

    assert split_userinfo("http://me:p%40ss@host:5000/x?y=1") == ("http://host:5000/x?y=1", "me", "p@ss")
    assert split_userinfo("http://host:5000") == ("http://host:5000", None, None)
    assert split_userinfo("sqlite:////tmp/a@b/mlruns.db") == ("sqlite:////tmp/a@b/mlruns.db", None, None)
    assert strip_userinfo(None) is None
    assert strip_userinfo(f"https://u:{SECRET}@h") == "https://h"


def test_a_database_store_keeps_its_role_and_loses_only_its_password(monkeypatch):
    """``postgresql://mlflow@host/db``: the user is the database role, not a credential to move (stripping it
    made MLflow connect as the OS user); a password goes to libpq's PGPASSWORD and is never shown."""
    from cmmd_dist.tracking.store import take_credentials
    from cmmd_dist.storage.url_credentials import tracking_uri_shown

    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert take_credentials("postgresql://mlflow@127.0.0.1:5432/db") == "postgresql://mlflow@127.0.0.1:5432/db"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "PGPASSWORD" not in os.environ
    assert take_credentials("postgresql://mlflow:s%40cret@127.0.0.1/db") == "postgresql://mlflow@127.0.0.1/db"
    assert os.environ["PGPASSWORD"] == "s@cret"
    assert tracking_uri_shown("postgresql://mlflow:s3cret@h/db") == "postgresql://mlflow@h/db"
    with pytest.raises(UserError, match="mysql://h/db") as err:
        take_credentials("mysql://me:s3cret@h/db")
    assert "s3cret" not in str(err.value)


def test_ui_command_shows_no_password(monkeypatch):
    from cmmd_dist.tracking.store import ui_command

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "placeholder")  # restored after the test
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "placeholder")
    line = ui_command(f"http://me:{SECRET}@127.0.0.1:5000")
    assert SECRET not in line and "http://127.0.0.1:5000" in line


@pytest.fixture
def health_server():
    """A loopback HTTP server that answers MLflow's /health (all a Tracker asks of a server when it is built)."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_tracker_pickles_no_password_and_takes_it_from_the_environment(health_server, monkeypatch):
    from cmmd_dist.tracking.store import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "placeholder")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "placeholder")
    tracker = Tracker(f"http://me:{SECRET}@{health_server}")
    assert tracker.uri == f"http://{health_server}"
    assert SECRET.encode() not in pickle.dumps(tracker)  # what Tune stores in tuner.pkl with the callback
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "me" and os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET


def test_the_resume_command_shows_no_password(tmp_path, monkeypatch):
    from cmmd_dist.tune.plan import plan_sweep
    from cmmd_dist.tune.sweep import resume_command

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "placeholder")
    plan = plan_sweep(SweepConfig(dataset="digits2v", preset="smoke", name="s", storage=str(tmp_path / "sw"),
                                  output_dir=str(tmp_path), mlflow=f"sqlite:///{tmp_path / 'mlruns.db'}"))
    plan = plan.__class__(**{**plan.__dict__, "settings": plan.settings.model_copy(
        update={"mlflow": f"http://me:{SECRET}@127.0.0.1:5000"})})
    assert SECRET not in resume_command(plan) and "--mlflow http://127.0.0.1:5000" in resume_command(plan)


@pytest.mark.parametrize("option", ["storage", "data"])
def test_s3_credentials_in_a_uri_are_refused_without_showing_them(option, tmp_path):
    from cmmd_dist.tune.plan import plan_sweep

    settings = SweepConfig(dataset="digits2v", preset="smoke", output_dir=str(tmp_path),
                           mlflow=f"sqlite:///{tmp_path / 'mlruns.db'}",
                           **{option: f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix"})
    with pytest.raises(UserError) as err:
        plan_sweep(settings)
    assert SECRET not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)
    assert f"--{option}" in str(err.value) and "credentials" in str(err.value)


# -- a resume keeps its sweep's identity ---------------------------------------------------------------------
@pytest.fixture
def started_sweep(tmp_path):
    """A planned smoke sweep of digits2v whose identity is recorded, as a sweep's start leaves it."""
    from cmmd_dist.tune.identity import record_identity
    from cmmd_dist.tune.plan import plan_sweep

    settings = SweepConfig(dataset="digits2v", preset="smoke", name="ident", storage=str(tmp_path / "sweeps"),
                           output_dir=str(tmp_path), mlflow=f"sqlite:///{tmp_path / 'mlruns.db'}")
    plan = plan_sweep(settings)
    record_identity(plan)
    (Path(plan.exp_path) / "tuner.pkl").write_bytes(b"stand-in")
    return settings


def _resume(settings: SweepConfig, **changes) -> SweepConfig:
    keep = {k: getattr(settings, k) for k in ("name", "storage", "output_dir")}
    return SweepConfig(resume=True, **keep, **changes)


@pytest.mark.parametrize("flag,value,saved", [
    ("dataset", "mnist2v", "digits2v"),
    ("preset", "paper", "smoke"),
    ("scenario", "rotated", "no --scenario"),
])
def test_a_resume_refuses_another_identity_naming_both(started_sweep, flag, value, saved):
    from cmmd_dist.tune.plan import plan_sweep

    with pytest.raises(UserError) as err:
        plan_sweep(_resume(started_sweep, **{flag: value}))
    text = str(err.value)
    assert f"--{flag}" in text and value in text and saved in text and "\n" not in text


def test_a_resume_refuses_another_tracking_store(started_sweep, tmp_path):
    from cmmd_dist.tune.plan import plan_sweep

    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(UserError, match=r"--mlflow.*mlruns\.db.*other\.db"):
        plan_sweep(_resume(started_sweep, mlflow=other))


def test_a_resume_takes_what_it_leaves_out_from_its_sweep(started_sweep, tmp_path, monkeypatch):
    from cmmd_dist.tune.plan import plan_sweep

    monkeypatch.chdir(tmp_path)  # the embedded store of another folder would be another tracking store
    plan = plan_sweep(_resume(started_sweep))
    assert (plan.dataset, plan.settings.preset, plan.settings.mlflow) == ("digits2v", "smoke", started_sweep.mlflow)
    plan = plan_sweep(_resume(started_sweep, dataset="digits2v", preset="smoke", mlflow=started_sweep.mlflow))
    assert plan.name == "ident"


def test_a_resume_refuses_a_search_space_changed_since_the_start(tmp_path):
    from cmmd_dist.tune.identity import record_identity
    from cmmd_dist.tune.plan import plan_sweep

    space = tmp_path / "space.yaml"
    space.write_text((Path(__file__).parents[3] / "cmmd_dist/search_spaces/digits2v.yaml").read_text())
    settings = SweepConfig(space=str(space), preset="smoke", name="sp", storage=str(tmp_path / "sweeps"),
                           output_dir=str(tmp_path), mlflow=f"sqlite:///{tmp_path / 'mlruns.db'}")
    plan = plan_sweep(settings)
    record_identity(plan)
    (Path(plan.exp_path) / "tuner.pkl").write_bytes(b"stand-in")
    space.write_text(space.read_text().replace("num_trials: 4", "num_trials: 5"))
    with pytest.raises(UserError, match="search space .*changed"):
        plan_sweep(_resume(settings))


# -- train --resume keeps its run's data ----------------------------------------------------------------------
def test_train_resume_refuses_another_dataset_before_ray(tmp_path):
    from cmmd_dist.config import RunConfig
    from cmmd_dist.train.run_folder import RUN_CONFIG_FILE, resume_settings

    run_dir = tmp_path / "ray" / "digits2v-20250101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_CONFIG_FILE).write_text(yaml.safe_dump(RunConfig().model_dump(mode="json")))
    with pytest.raises(UserError, match=r"--dataset.*digits2v.*mnist2v"):
        resume_settings(str(run_dir), {"data": {"dataset": "mnist2v"}})
    with pytest.raises(UserError, match=r"started with --data none, not --data .*other"):
        resume_settings(str(run_dir), {"data": {"prepared": str(tmp_path / "other")}})
    _, over = resume_settings(str(run_dir), {"data": {"dataset": "digits2v"}, "train": {"epochs": 3}})
    assert over["train"] == {"epochs": 3} and over["distributed"]["name"] == run_dir.name


def test_train_makes_a_relative_data_absolute_on_the_driver(tmp_path, monkeypatch):
    from cmmd_dist.cli.app import build_parser, train_overrides

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--dataset", "digits2v", "--data", "prepared/digits", "--workers", "2"])
    assert train_overrides(args)["data"]["prepared"] == str(tmp_path / "prepared" / "digits")


@pytest.mark.parametrize("given", ["--storage", "distributed.storage", "--resume"])
def test_train_refuses_s3_credentials_in_its_storage_without_showing_them(given, tmp_path):
    """``train --storage s3://key:secret@bucket/...`` (or the config's ``distributed.storage``, or a ``--resume``
    folder there) is refused like ``--data`` is, before anything reads the storage."""
    from cmmd_dist.cli.app import build_parser, cmd_train

    uri = f"s3://AKIAEXAMPLE:{SECRET}@bucket/runs"
    argv = {"--storage": ["--storage", uri], "--resume": ["--resume", f"{uri}/digits2v-20250101-000000"],
            "distributed.storage": ["--config", str(tmp_path / "run.yaml")]}[given]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"distributed": {"storage": uri}}))
    args = build_parser().parse_args(["train", "--workers", "2", "--out", str(tmp_path / "runs"), *argv])
    with pytest.raises(UserError) as err:
        cmd_train(args)
    assert SECRET not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)
    assert f"{given} s3://bucket/runs" in str(err.value) and "credentials" in str(err.value)
    assert not (tmp_path / "runs").exists()
