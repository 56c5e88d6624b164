"""Sentinels of the Ray private APIs that ``cmmd_dist.train.ray_compat`` wraps: each fails when Ray moves the
API, which is the moment to look for a public one; and each wrapper warns (never silently) where it is gone."""

import inspect
import warnings

import pytest


def test_rays_global_node_still_says_whether_this_process_started_ray():
    import ray._private.worker as worker

    assert hasattr(worker, "_global_node")
    from ray._private.node import Node

    assert "head" in inspect.signature(Node.__init__).parameters


def test_rays_address_lookup_still_reads_ray_address():
    from ray._private.services import get_ray_address_from_environment

    assert "RAY_ADDRESS" in inspect.getsource(get_ray_address_from_environment)


def test_rays_gcs_client_still_takes_an_address():
    from ray._raylet import GcsClient

    assert GcsClient is not None


def test_ray_train_still_registers_its_sigint_handler_on_the_trainer():
    from ray.train.torch import TorchTrainer

    assert callable(getattr(TorchTrainer, "_register_sigint_handler", None))


def test_not_connected_is_not_started_here_and_warns_nothing():
    import ray

    from cmmd_dist.train.ray_compat import ray_started_here

    if ray.is_initialized():
        pytest.skip("Ray is up in this process")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ray_started_here() is False


def test_a_trainer_without_the_private_hook_warns():
    from cmmd_dist.train.ray_compat import wrap_sigint_registration

    with pytest.warns(RuntimeWarning, match="interrupted"):
        assert wrap_sigint_registration(object(), lambda: None) is False


def test_the_wrapped_registration_calls_ray_then_the_note():
    from cmmd_dist.train.ray_compat import wrap_sigint_registration

    calls = []

    class Trainer:
        def _register_sigint_handler(self, controller):
            calls.append(("ray", controller))

    trainer = Trainer()
    assert wrap_sigint_registration(trainer, lambda: calls.append("note"))
    trainer._register_sigint_handler("c")
    assert calls == [("ray", "c"), "note"]
