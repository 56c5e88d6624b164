"""A single-process run stopped after its checks is marked in its folder: Ctrl-C on a real ``python -m
cmmd_dist.train`` leaves ``status.json`` saying ``interrupted`` and exits 130 (no Ray: the run trains in its own
process). A run refused by its checks leaves no folder at all: tests/integration/test_bad_input.py. The
distributed run folder (interrupted, then resumed to the end: no stale status) is in
tests/integration/test_train_interrupt.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cmmd_dist.train.run_folder import STATUS_FILE
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]
# tiny, and no early stop: 50 epochs cannot end before the signal
CONFIG = """\
model: {zdim: 4, encoder_hidden: [32], prior_hidden: [32], decoder_hidden: [32], classifier_hidden: [16]}
train: {batch_size: 32, patience: 100}
"""


def first_history_row(out: Path) -> Path | None:
    """The run folder under ``out`` once its history.jsonl holds a whole row, else None."""
    for history in out.glob("*/history.jsonl"):
        if history.read_text().endswith("\n"):
            return history.parent
    return None


def test_ctrl_c_marks_the_run_folder_interrupted(tmp_path):
    (tmp_path / "run.yaml").write_text(CONFIG)
    out = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "CMMD_DEBUG"}
    run = subprocess.Popen([sys.executable, "-m", "cmmd_dist.train", "--config", str(tmp_path / "run.yaml"),
                            "--dataset", "digits2v", "--limit", "256", "--epochs", "50", "--no-baseline",
                            "--no-progress", "--out", str(out)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        folder = wait_for(lambda: first_history_row(out) or run.poll() is not None, timeout=120, interval=0.1,
                          what="the first epoch's history row")
        assert run.poll() is None, f"ended before Ctrl-C: {run.communicate()[1][-2000:]}"
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("cmmd-dist: interrupted"), err[-3000:]
    assert [p.name for p in out.iterdir()] == [folder.name]
    status = json.loads((folder / STATUS_FILE).read_text())
    assert status["status"] == "interrupted", status
    assert not (folder / "metrics.json").exists() and not (folder / "model.pt").exists()
