"""Sentinels of the Ray bugs that ``cmmd_dist.tune.workarounds`` works around: each fails when the Ray code the
work-around exists for changes, which is the moment to check whether the work-around can go."""

import inspect
import queue


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
    """``sweep._check_workers_fit`` asks Ray's private helpers, before Ray starts, whether ``ray.init()`` would
    connect to a cluster (then it does not check) and how many CPUs a local Ray would get (cgroup limits
    included). When this fails, Ray moved them: the check would fall back to letting Ray wait for the bundle."""
    from ray._private.services import get_ray_address_from_environment
    from ray._private.utils import get_num_cpus

    assert "RAY_ADDRESS" in inspect.getsource(get_ray_address_from_environment)
    assert isinstance(get_num_cpus(), (int, float)) and get_num_cpus() >= 1
