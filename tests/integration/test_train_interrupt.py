"""Ctrl-C during ``cmmd-dist train --workers 2`` says where the latest checkpoint is and which command resumes
it; that command, run as printed, continues from the checkpointed epoch and finishes. The run folder's
``status.json`` says ``interrupted`` in between, and is gone once the resumed run has finished.

A real subprocess in its own process group receives SIGINT as a terminal's Ctrl-C would send it (to the
whole group, Ray's processes included) once its first epoch checkpoint is registered.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
EPOCHS = 16
CONFIG = """\
model: {zdim: 4, encoder_hidden: [32], prior_hidden: [32], decoder_hidden: [32], classifier_hidden: [16]}
train: {batch_size: 8, lr: 0.001, patience: 100}
distributed: {keep_checkpoints: 2}
"""


def latest_registered_epoch(storage: Path) -> int:
    """The newest epoch in Ray Train's checkpoint snapshot of the (only) run under ``storage``, 0 if none."""
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
        except ValueError:  # being rewritten
            return 0
        name = latest.get("checkpoint_dir_name") or ""
        return int(name.rsplit("_", 1)[1]) if name.startswith("checkpoint_epoch_") else 0
    return 0


def test_ctrl_c_prints_a_resume_command_that_finishes_the_run(tmp_path):
    (tmp_path / "run.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("CMMD_DEBUG", "RAY_ADDRESS")}
    cmd = [str(BIN / "cmmd-dist"), "train", "--config", str(tmp_path / "run.yaml"), "--dataset", "digits2v",
           "--limit", "256", "--epochs", str(EPOCHS), "--workers", "2", "--no-baseline", "--no-progress",
           "--out", str(tmp_path / "runs")]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        wait_for(lambda: latest_registered_epoch(tmp_path / "runs" / "ray") >= 1 or first.poll() is not None, 150,
                 what="the first registered checkpoint")
        assert first.poll() is None, f"finished before Ctrl-C: {first.communicate()[1][-2000:]}"
        os.killpg(first.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, err[-3000:]
    line = next((ln for ln in err.splitlines() if ln.startswith("cmmd-dist: interrupted")), None)
    assert line is not None, err[-3000:]
    m = re.fullmatch(r"cmmd-dist: interrupted: checkpoint of epoch (\d+) at (\S+); resume with: (cmmd-dist train .+)", line)
    assert m, line
    epoch, checkpoint, resume = int(m[1]), Path(m[2]), m[3]
    assert 1 <= epoch < EPOCHS and (checkpoint / "state.pt").exists()
    driver = [ln for ln in err.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\w+ pid=", ln)]  # not Ray's actor logs
    assert not any("Traceback" in ln for ln in driver), err[-3000:]

    argv = shlex.split(resume)
    run_dir = Path(argv[argv.index("--resume") + 1])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    again = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    results = Path(re.search(r"^results: (.+)$", again.stdout, re.M)[1])
    history = [json.loads(row) for row in (results / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))  # nothing lost, nothing twice
    assert [row["resumed_from"] for row in history[epoch:]] == [epoch] * (EPOCHS - epoch)
    assert json.loads((results / "metrics.json").read_text())["epochs_run"] == EPOCHS
    assert not (run_dir / "status.json").exists()  # finished: the interruption is no longer its state
