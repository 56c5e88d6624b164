"""Sentinels of the Ray bugs and gaps that ``cmmd_dist.tune.workarounds`` works around (ray#54305, ray#28276, ...): each fails when the Ray code the
work-around exists for changes, which is the moment to check whether the work-around can go."""

import inspect
import json
import os
import queue
import subprocess
import sys


def test_train_reports_still_reach_tune_through_one_slot_queues():
    """``drain_reports``: a multi-worker trial's Train reports pass through a one-slot queue actor that the
    trial's main thread forwards (``report``) into the session's one-slot result queue, the queue that the
    function's end-of-trial marker also fills: the deadlock ``drain_reports`` avoids. When this fails, Ray
    changed the hand-over: run tests/integration/test_flickr_sweep.py (2-worker trials) without the drain, on a
    loaded machine, and remove ``drain_reports`` if it no longer hangs."""
    from ray.train._internal.session import _TrainSession
    from ray.tune.integration.ray_train import TuneReportCallback

    init = inspect.getsource(_TrainSession.reset)  # (re)builds the queues of a trial session
    assert "self.result_queue = queue.Queue(1)" in init
    assert "ray_queue.Queue(1" in inspect.getsource(_TrainSession._get_or_create_inter_actor_queue)
    forward = inspect.getsource(_TrainSession._get_result_from_queues)
    assert "self._inter_actor_queue.get(" in forward and "self.report(inter_actor_item)" in forward
    assert "_get_or_create_inter_actor_queue" in inspect.getsource(TuneReportCallback.__init__)
    # the forwarding report blocks on the full result queue: nothing else drains it while the main thread waits
    assert "self.result_queue.put(training_result, block=True)" in inspect.getsource(
        _TrainSession._report_training_result)
    assert queue.Queue(1).maxsize == 1


def test_the_placement_group_cleaner_still_needs_the_state_api():
    """``CooperativeASHA`` (ray#54305): a killed Train controller's worker placement group is removed only by
    Ray's PlacementGroupCleaner, which asks the state API whether the controller lives; the integration test
    tests/integration/test_tune_placement_groups.py shows the leak where that API does not answer."""
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    assert "is_actor_alive" in inspect.getsource(placement_group_cleaner)


def test_the_pre_ray_workers_check_still_finds_rays_address_and_cpu_count():
    """``workarounds.local_ray_cpus`` (``preflight._check_workers_fit``) asks Ray's private helpers, before Ray starts, whether ``ray.init()`` would
    connect to a cluster (then it does not check) and how many CPUs a local Ray would get (cgroup limits
    included). When this fails, Ray moved them: the check would fall back to letting Ray wait for the bundle."""
    from ray._private.services import get_ray_address_from_environment
    from ray._private.utils import get_num_cpus

    assert "RAY_ADDRESS" in inspect.getsource(get_ray_address_from_environment)
    assert isinstance(get_num_cpus(), (int, float)) and get_num_cpus() >= 1


# -- keep_credentials_out_of_runtime_env (ray#28276) ---------------------------------------------------------
# Each check runs in a fresh interpreter: the workaround changes Ray's module state for the whole process,
# and a sweep test in the same pytest session may already have applied it.

CHECK = """
import json
from ray.tune.execution.class_cache import _ActorClassCache

def env_vars(name):
    # what Tune passes to ray.remote for a trainable: the runtime env that Ray then logs in clear text
    return _ActorClassCache().get(type(name, (), {}))._default_options["runtime_env"]["env_vars"]

before = env_vars("Before")
from cmmd_dist.tune.workarounds import keep_credentials_out_of_runtime_env, tune_copies_credentials
keep_credentials_out_of_runtime_env()
keep_credentials_out_of_runtime_env()  # idempotent
print(json.dumps({"before": before, "after": env_vars("After"), "left": sorted(tune_copies_credentials())}))
"""

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "unit-test-access", "AWS_SECRET_ACCESS_KEY": "unit-test-secret",
               "AWS_SESSION_TOKEN": "unit-test-token"}


def run_check() -> dict:
    env = {**os.environ, **CREDENTIALS}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ray_tune_still_copies_aws_credentials_into_trial_runtime_envs():
    before = run_check()["before"]
    copied = {k for k in CREDENTIALS if before.get(k) == CREDENTIALS[k]}
    assert copied == set(CREDENTIALS), (
        f"Ray Tune no longer copies {sorted(set(CREDENTIALS) - copied)} into trial runtime envs: "
        "remove keep_credentials_out_of_runtime_env from cmmd_dist/tune/workarounds.py, its call in cmmd_dist/tune/sweep.py run_sweep and this test"
    )


def test_the_workaround_keeps_credentials_out_and_the_rest_in():
    result = run_check()
    assert not set(CREDENTIALS) & set(result["after"]), result["after"]
    assert not any(v in CREDENTIALS.values() for v in result["after"].values())
    assert result["left"] == []
    # Tune's other variables still travel
    assert result["after"] == {k: v for k, v in result["before"].items() if k not in CREDENTIALS}
    assert result["after"], "expected Tune's own variables (e.g. PL_DISABLE_FORK) to remain"


def test_the_pre_ray_workers_check_warns_where_rays_helpers_are_gone(monkeypatch):
    import warnings

    import ray._private.utils as ray_utils

    from cmmd_dist.tune.workarounds import local_ray_cpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delattr(ray_utils, "get_num_cpus")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert local_ray_cpus() is None
    assert any("not checked" in str(w.message) for w in seen)


def test_a_tuner_still_keeps_its_run_config_in_its_local_tuner(tmp_path):
    """``tuner_run_config`` reads Tune's private ``Tuner._local_tuner``: fails when Tune moves it."""
    from ray import tune

    from cmmd_dist.tune.workarounds import tuner_run_config

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="x", storage_path=str(tmp_path)))
    assert tuner_run_config(tuner).name == "x"


def test_optuna_search_still_keeps_its_study_and_trials():
    """``optuna_study_of`` reads Tune's private ``OptunaSearch._ot_study`` / ``_ot_trials``."""
    from ray.tune.search.optuna import OptunaSearch

    from cmmd_dist.tune.workarounds import optuna_study_of

    searcher = OptunaSearch(space={"x": __import__("ray").tune.uniform(0, 1)}, metric="m", mode="max")
    study, trials = optuna_study_of(searcher)
    assert hasattr(study, "tell") and isinstance(trials, dict)
    from cmmd_dist.tune.workarounds import optuna_completed_trials

    assert isinstance(optuna_completed_trials(searcher), set)
