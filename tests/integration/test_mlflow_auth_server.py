"""``cluster/mlflow-server.sh`` runs from the project's own install (``mlflow[auth]``) and guards the server:
no credentials 401, the admin's 200, a wrong password 401, a foreign Host header 403 (DNS rebinding),
and neither the admin password nor the CSRF key in its log or settings file.

The script is started as the README says, with its secrets from the environment: a SQLite backend, a
local artifact root and a free loopback port; it is stopped through its own process group.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from waiting import TimedOut, answers, wait_for

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "mlflow-server.sh"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This interpreter's environment without any MLflow setting, its ``mlflow`` first on PATH, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "HOME": str(tmp_path), **settings}


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's own process group (uvicorn and the job runners go with it), SIGKILL what lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    def group_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)  # children of the group may outlive the leader briefly
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for(group_gone, grace, what="the server's process group to exit")
        return
    except TimedOut:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    port, password, key = free_port(), secrets.token_urlsafe(16), secrets.token_hex(16)
    env = script_env(tmp, MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp / 'mlflow.db'}",
                     MLFLOW_ARTIFACTS_DESTINATION=str(tmp / "artifacts"), MLFLOW_FLASK_SERVER_SECRET_KEY=key,
                     MLFLOW_AUTH_ADMIN_PASSWORD=password, MLFLOW_STATE_DIR=str(tmp / "state"),
                     MLFLOW_PORT=str(port), MLFLOW_WORKERS="1")
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(answers(f"{uri}/health", proc, "mlflow-server.sh", log_path), 120, interval=0.3,  # /health: no credentials
                 what=lambda: f"mlflow-server.sh to answer /health:\n{log_path.read_text()[-3000:]}")
        yield {"uri": uri, "password": password, "key": key, "log": log_path, "state": tmp / "state"}
    finally:
        stop_group(proc)


def test_basic_auth_refuses_strangers_and_admits_the_admin(auth_server):
    url = auth_server["uri"] + SEARCH
    assert requests.get(url, timeout=60).status_code == 401
    assert requests.get(url, auth=("admin", "not-" + auth_server["password"]), timeout=60).status_code == 401
    ok = requests.get(url, auth=("admin", auth_server["password"]), timeout=60)
    assert ok.status_code == 200 and "experiments" in ok.json()


def test_a_foreign_host_header_is_refused(auth_server):
    url = auth_server["uri"] + SEARCH
    foreign = requests.get(url, auth=("admin", auth_server["password"]), headers={"Host": "attacker.example.com"},
                           timeout=60)
    assert foreign.status_code == 403


def test_no_secret_in_the_log_or_the_auth_settings(auth_server):
    written = auth_server["log"].read_text() + (auth_server["state"] / "basic_auth.ini").read_text()
    assert "admin_username = admin" in written
    assert auth_server["password"] not in written and auth_server["key"] not in written


def test_missing_secrets_are_named_and_exit_2(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT)], env=script_env(tmp_path, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "MLFLOW_BACKEND_STORE_URI MLFLOW_FLASK_SERVER_SECRET_KEY" in out.stderr
