"""A sweep's MLflow runs across a killed driver and its resume (``tracking.SweepRecorder``, embedded SQLite store):
a trial restarted from a checkpoint older than its last report logs each epoch once (the first value stays), and
trial runs the killed driver left RUNNING, of trials the resumed sweep does not hold, end KILLED at the end."""

from __future__ import annotations

import pickle

from cmmd_dist.tracking.recorder import SweepRecorder


def test_a_restarted_trial_logs_each_epoch_once_and_lost_trials_end_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    first = SweepRecorder("resume", None, {}, sweep_id="resume-1", uri=uri)
    for trial in ("kept", "lost"):
        first.trial_started(trial, {"lam": 0.5})
    for epoch in (1, 2, 3):
        first.trial_result("kept", {"epoch": epoch, "cv_metric": 1.0 / epoch})
    first.trial_result("lost", {"epoch": 1, "cv_metric": 0.9})
    kept, lost = first.runs["kept"], first.runs["lost"]
    # the driver is killed: nothing ends its runs. The resumed sweep's recorder (as Tune unpickles its callback)
    # restarts "kept" from its checkpoint of epoch 2; "lost" started after Tune last saved its state: never again
    again = pickle.loads(pickle.dumps(SweepRecorder("resume", None, {}, sweep_id="resume-1", uri=uri)))
    again.trial_started("kept", {"lam": 0.5})
    for epoch in (3, 4):
        again.trial_result("kept", {"epoch": epoch, "cv_metric": 2.0})
    again.end_lost_trials()
    client = again.tracker.client
    assert client.get_run(kept).info.status == "RUNNING"  # held open by this recorder: its trial is running
    assert client.get_run(lost).info.status == "KILLED"
    again.trial_finished("kept")
    again.end_lost_trials()
    assert client.get_run(kept).info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(kept, "cv_metric"))
    assert history == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 2.0)]
