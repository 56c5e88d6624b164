"""A local autoscaling Ray cluster on Ray's fake multi-node provider, which this machine's other Ray instances survive.

    cluster = FakeAutoscalingCluster(tmp, head_cpus=0, worker_types={"cpu2": {"resources": {"CPU": 2}, ...}}).start()
    cluster.address            # 127.0.0.1:PORT for RAY_ADDRESS / ray.init(address=...)
    cluster.shutdown()

``ray.cluster_utils.AutoscalingCluster`` would do, but (Ray 2.60) it loads a base config its wheel lacks
(``fake_multi_node/example.yaml``) and runs ``ray stop --force`` on start and shutdown, which kills every
Ray process on the machine (the test session's own instance included). This one writes the base config
itself, takes a free GCS port and its own temp dir, and stops only its own processes: the ones whose
command line names its GCS address or temp dir (the fake worker nodes are started by its autoscaler).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

__all__ = ["FakeAutoscalingCluster", "base_config"]


def base_config(head_cpus: int, worker_types: dict, gcs_address: str, idle_timeout_minutes: float) -> dict:
    """The fake-multinode cluster config (what the wheel's missing example.yaml held), for our node types."""
    return {
        "cluster_name": "cmmd-fake-autoscaling",
        "max_workers": sum(t.get("max_workers", 0) for t in worker_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, "min_workers": 0, **spec} for name, spec in worker_types.items()},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeAutoscalingCluster:
    def __init__(self, workdir: str | Path, head_cpus: int, worker_types: dict, idle_timeout_minutes: float = 0.1):
        self.workdir = Path(workdir)
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # a short temp dir: Ray's socket paths must stay under the 107-character AF_UNIX limit
        self.temp_dir = Path(f"/tmp/rfa{self.port}")
        self.config = base_config(head_cpus, worker_types, self.address, idle_timeout_minutes)
        self.head_cpus = head_cpus
        self.token = secrets.token_hex(32)  # token authentication on, with this cluster's own token

    def client_env(self) -> dict[str, str]:
        """Environment for a process that talks to this cluster (a driver, ``ray status``)."""
        return {**os.environ, "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def env(self) -> dict[str, str]:
        """Environment of the head (and so of its autoscaler and the fake worker nodes it starts)."""
        return {**self.client_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}

    def start(self) -> "FakeAutoscalingCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "fake-autoscaling.json"
        cfg.write_text(json.dumps(self.config))
        ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray, "start", "--head", f"--autoscaling-config={cfg}", f"--port={self.port}",
                        f"--num-cpus={self.head_cpus}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                        f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
                       env=self.env(), check=True, capture_output=True, timeout=180)
        return self

    def _own_processes(self) -> list[psutil.Process]:
        marks = (self.address, str(self.temp_dir))
        own = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(m in line for m in marks) and p.pid != os.getpid():
                own.append(p)
        return own

    def shutdown(self, timeout: float = 20.0) -> None:
        procs = self._own_processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
