"""The optimiser factory: the fused/foreach Adam it picks takes the reference Adam's steps; it keeps its kind on resume."""

import copy

import torch

from cmmd_dist.config import TrainConfig
from cmmd_dist.train.optim import adam_implementation, load_optimizer_state, make_optimizer

TRAIN = TrainConfig(lr=1e-2)  # large enough that a few steps move every weight visibly


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Softplus(), torch.nn.Linear(16, 3))


def _steps(net: torch.nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
        opt.zero_grad(set_to_none=True)
        ((net(x) - y) ** 2).mean().backward()
        opt.step()


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_cpu_gets_the_fused_kernel_at_the_configured_lr():
    assert adam_implementation("cpu") == "fused"  # torch >= 2.4 has a CPU fused Adam
    opt = make_optimizer(_net().parameters(), TRAIN)
    group = opt.param_groups[0]
    assert group["fused"] is True and not group["foreach"] and group["lr"] == TRAIN.lr


def test_factory_adam_takes_the_reference_adams_steps():
    ref, net = _net(), _net()
    start = copy.deepcopy(list(net.parameters()))
    _steps(ref, torch.optim.Adam(ref.parameters(), lr=TRAIN.lr, foreach=False), 5)
    _steps(net, make_optimizer(net.parameters(), TRAIN), 5)
    _assert_same_params(ref, net)
    assert all((p - p0).abs().max() > 1e-3 for p, p0 in zip(net.parameters(), start))


def test_device_without_fused_kernel_falls_back_to_foreach():
    # the meta device has foreach kernels but no fused Adam: the probe must see that and step cleanly
    assert adam_implementation("meta") == "foreach"
    p = torch.nn.Parameter(torch.zeros(4, device="meta"))
    opt = make_optimizer([p], TRAIN)
    assert opt.param_groups[0]["foreach"] is True and not opt.param_groups[0]["fused"]
    p.grad = torch.zeros_like(p)
    opt.step()


def test_resume_from_a_single_tensor_checkpoint_stays_fused_and_continues_the_same_run():
    ref, net = _net(), _net()
    old = torch.optim.Adam(ref.parameters(), lr=TRAIN.lr, foreach=False)  # a checkpoint from before the factory
    _steps(ref, old, 3)
    net.load_state_dict(ref.state_dict())
    opt = make_optimizer(net.parameters(), TRAIN)
    load_optimizer_state(opt, copy.deepcopy(old.state_dict()))
    assert opt.param_groups[0]["fused"] is True
    _steps(ref, old, 3, seed=2)
    _steps(net, opt, 3, seed=2)
    _assert_same_params(ref, net)
