"""A real ``mlflow server`` for tests: SQLite backend file, artifacts on an S3 server, served to clients.

    server = MlflowServer(workdir, s3_env, "s3://bucket/mlflow").start()   # ready in about 5-20 s
    server.uri                                                              # http://127.0.0.1:PORT
    server.stop()                                                           # SIGTERM its own pid

``--serve-artifacts`` makes the server proxy artifact traffic, so clients need no S3 credentials;
the server process gets them (AWS_* and MLFLOW_S3_ENDPOINT_URL) in its environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from waiting import TimedOut, answers, wait_for

__all__ = ["MlflowServer", "server_command"]


def server_command(backend: str, artifacts: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The shared-tracking command line (the README's, with a free loopback port)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port", str(port),
            "--workers", "1"]


class MlflowServer:
    def __init__(self, workdir: str | Path, env: dict[str, str], artifacts: str):
        self.workdir = Path(workdir)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{self.workdir / 'mlflow.db'}"
        self.env = {**os.environ, **env}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.artifacts = artifacts
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.workdir / "mlflow-server.log", "wb")
        self.proc = subprocess.Popen(server_command(self.backend, self.artifacts, self.port), env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        log = self.workdir / "mlflow-server.log"
        try:
            wait_for(answers(f"{self.uri}/health", self.proc, "mlflow server", log), timeout, interval=0.5,
                     what=f"the mlflow server to answer /health; see {log}")
        except TimedOut:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # its own session: the uvicorn worker it forks goes with it
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
