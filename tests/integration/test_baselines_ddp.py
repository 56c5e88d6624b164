"""The baselines (VCCA, MVAE, MMVAE ELBO / IWAE, M-x_o) under 2-worker DDP on Ray Train (gloo, CPU).

(a) One Ray Train run steps every kind once through ``loop.train_step`` with a DDP-wrapped model, each rank
    on its own rows and noise: the gradient each rank applies is the mean of the ranks' own gradients
    (recomputed without DDP), and the weights stay identical across ranks after the step.
(b) ``cmmd-dist train --workers 2`` with ``model.kind: mvae``: the platform's distributed path trains,
    validates, checkpoints and tests a baseline (the model built by ``train.build.build_model``).
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.model import BaselineConfig, CMMDConfig, LossWeights, ModalityDef, make_model
from cmmd_dist.train.distributed import run_distributed
from cmmd_dist.train.loop import train_step
from tiny import TINY_WIDE

pytestmark = pytest.mark.integration

VARIANTS = {"vcca": BaselineConfig("vcca"), "mvae": BaselineConfig("mvae"),
            "mmvae_elbo": BaselineConfig("mmvae", mmvae_k=2),
            "mmvae_iwae": BaselineConfig("mmvae", mmvae_objective="iwae", mmvae_k=3), "mx_o": BaselineConfig("mx_o")}


def _tiny() -> CMMDConfig:
    return CMMDConfig(observed=(ModalityDef("a", (6,)),), missing=(ModalityDef("b", (5,)),), num_classes=3, zdim=4,
                      encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,))


def _rows(rank: int, n: int = 16) -> dict:
    g = torch.Generator().manual_seed(100 + rank)
    return {"obs": {"a": torch.rand(n, 6, generator=g)}, "mis": {"b": torch.rand(n, 5, generator=g)},
            "y": torch.randint(0, 3, (n,), generator=g)}


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def _gather(x: torch.Tensor, world: int) -> list[torch.Tensor]:
    import torch.distributed as dist

    out = [torch.zeros_like(x) for _ in range(world)]
    dist.all_gather(out, x)
    return out


def _step_every_kind(config: dict) -> dict:
    """Ray Train worker: one DDP step of each kind; rank 0 returns the figures."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    w = LossWeights(cls_weight=10.0, ce_reduction="sum")
    rows = _rows(rank)
    out = {}
    for name, params in VARIANTS.items():
        torch.manual_seed(0)  # the same initial weights on every rank
        core = make_model(_tiny(), params)
        before = _flat(core.parameters())
        alone = copy.deepcopy(core)  # this rank's own gradient, no DDP
        torch.manual_seed(10 + rank)
        alone(rows, w, world_size=world)[0].backward()
        own = _flat(p.grad for p in alone.parameters())
        model = ray.train.torch.prepare_model(core, move_to_device=False)
        assert isinstance(model, DistributedDataParallel)
        opt = torch.optim.SGD(core.parameters(), lr=0.05)
        torch.manual_seed(10 + rank)  # the same noise as the gradient above
        terms = train_step(model, core, rows, opt, w, world_size=world)
        applied = _flat(p.grad for p in core.parameters())
        owns = _gather(own, world)
        mean_own = torch.stack(owns).mean(0)
        after = _gather(_flat(core.parameters()), world)
        out[name] = {"grad_err": float((applied - mean_own).abs().max()), "grad_norm": float(mean_own.norm()),
                     "rank_gap": float((after[0] - after[1]).abs().max()), "moved": float((after[0] - before).abs().max()),
                     "own_differ": float((owns[0] - owns[1]).abs().max()),
                     "loss": float(terms["loss"])}
    return out if rank == 0 else None


def test_every_baseline_steps_under_two_worker_ddp(ray_session, tmp_path):
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    result = TorchTrainer(_step_every_kind, scaling_config=ray.train.ScalingConfig(num_workers=2),
                          run_config=ray.train.RunConfig(name="baselines-ddp", storage_path=str(tmp_path))).fit()
    figures = result.return_value
    assert set(figures) == set(VARIANTS)
    for name, f in figures.items():
        assert f["own_differ"] > 0, name  # the ranks' own gradients differ: the average is not trivially equal
        assert f["grad_err"] <= 1e-5 * max(1.0, f["grad_norm"]), (name, f)
        assert f["rank_gap"] == 0.0 and f["moved"] > 0, (name, f)


def test_cli_trains_a_baseline_on_two_workers(ray_session, tmp_path):
    run = load_run_config(None, {
        "data": {"dataset": "digits2v", "limit": 128},
        "model": {"kind": "mvae", **TINY_WIDE},
        "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "progress": False, "baseline": False},
        "distributed": {"workers": 2, "storage": str(tmp_path / "ray"), "name": "mvae-ddp"},
        "output_dir": str(tmp_path / "runs"),
    })
    results, out = run_distributed(run)
    assert [row["epoch"] for row in results["history"]] == [1, 2]
    assert all(row["train_kl"] > 0 and row["train_mmd"] == 0 and 0 <= row["val_metric"] <= 1 for row in results["history"])
    assert 0 <= results["test"]["error"] <= 1 and results["test"]["rmse"] > 0
    assert len(results["test"]["collapse"]) == len(results["test"]["collapse_eps"])
    state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert any(k.startswith("experts.view1.") for k in state) and any(k.startswith("experts.view2.") for k in state)
