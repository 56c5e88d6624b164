"""Train V2 takes a worker's report only when its controller polls: we poll every 0.2 s, not every 2 s."""

import os

from cmmd_dist.train.ray_setup import REPORT_POLL_ENV, quick_report_polling


def test_sets_a_fast_poll_unless_the_user_chose_one(monkeypatch):
    monkeypatch.delenv(REPORT_POLL_ENV, raising=False)
    quick_report_polling()
    assert float(os.environ[REPORT_POLL_ENV]) == 0.2
    monkeypatch.setenv(REPORT_POLL_ENV, "5")
    quick_report_polling()
    assert os.environ[REPORT_POLL_ENV] == "5"


def test_ray_still_reads_and_propagates_the_setting():
    """The variable must reach the controller actor from the process that calls fit (a Ray upgrade could drop it)."""
    from ray.train.v2._internal import constants

    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR == REPORT_POLL_ENV
    assert REPORT_POLL_ENV in constants.ENV_VARS_TO_PROPAGATE
