"""The global-batch MMD under DDP equals one process on the concatenated batch, gradients included.

Two gloo ranks (torch.multiprocessing spawn, CPU, float64, dropout off, fixed noise) run the same
``train_step`` with the same ``gather`` hook as the Ray Train worker loop; one process runs the
concatenated batch. Per-shard MMD (``mmd_scope='local'``) must differ, so the test can fail.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmmd_dist.model import CMMD, CMMDConfig, LossWeights, ModalityDef
from cmmd_dist.train.gather import gather_for
from cmmd_dist.train.loop import train_step

WORLD, ROWS = 2, 8  # rows per rank
CFG = CMMDConfig(
    observed=(ModalityDef("xo", (6,)),), missing=(ModalityDef("xm", (5,)),), num_classes=3, zdim=4,
    encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,), dropout=0.0,
)
W = LossWeights()  # reference weights: MMD x1000, CE summed x10


def global_batch():
    g = torch.Generator().manual_seed(1)
    n = WORLD * ROWS
    batch = {"obs": {"xo": torch.randn(n, 6, generator=g, dtype=torch.float64)},
             "mis": {"xm": torch.randn(n, 5, generator=g, dtype=torch.float64)},
             "y": torch.randint(0, 3, (n,), generator=g)}
    noise = torch.randn(2, 1, n, CFG.zdim, generator=g, dtype=torch.float64)  # eps_q, eps_p
    return batch, noise


def rows(batch, noise, rank):
    sl = slice(rank * ROWS, (rank + 1) * ROWS)
    b = {"obs": {"xo": batch["obs"]["xo"][sl]}, "mis": {"xm": batch["mis"]["xm"][sl]}, "y": batch["y"][sl]}
    return b, noise[:, :, sl]


def fixed_noise(noise):
    """Make CMMD's reparameterisation noise deterministic: torch.randn -> eps_q, randn_like -> eps_p."""
    torch.randn = lambda *a, **k: noise[0].clone()
    torch.randn_like = lambda *a, **k: noise[1].clone()


def one_step(model, core, batch, gather, world):
    opt = torch.optim.SGD(core.parameters(), lr=0.0)  # lr 0: the step leaves the gradients to read
    terms = train_step(model, core, batch, opt, W, gather=gather, world_size=world)
    return {"mmd": terms["mmd"], "loss": terms["loss"]}, {n: p.grad.clone() for n, p in core.named_parameters()}


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    batch, noise = global_batch()
    b, eps = rows(batch, noise, rank)
    fixed_noise(eps)
    results = {}
    hooks = {"global": gather_for("global"), "replicated": gather_for("global", mode="replicated"),
             "general": gather_for("global", mode="all_reduce"), "local": gather_for("local")}
    for scope, gather in hooks.items():
        torch.manual_seed(0)
        core = CMMD(CFG).double()
        ddp = torch.nn.parallel.DistributedDataParallel(core)
        results[scope] = one_step(ddp, core, b, gather, WORLD)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gather"))
    mp.spawn(_rank, args=(_port(), out), nprocs=WORLD, join=True)
    dist_results = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(WORLD)]
    batch, noise = global_batch()
    saved = torch.randn, torch.randn_like
    try:
        fixed_noise(noise)
        torch.manual_seed(0)
        core = CMMD(CFG).double()
        single = one_step(core, core, batch, None, 1)
    finally:
        torch.randn, torch.randn_like = saved
    return dist_results, single


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def test_gathered_mmd_equals_single_process_mmd(runs):
    dist_results, (single_terms, _) = runs
    for r in dist_results:
        for scope in ("replicated", "general"):  # every rank computes the whole global MMD
            torch.testing.assert_close(r[scope][0]["mmd"], single_terms["mmd"], rtol=1e-12, atol=0)
    # row shares (the default): each rank holds its share; their mean over ranks (what the epoch
    # metrics report) is the global MMD, and no single share is
    shares = [r["global"][0]["mmd"] for r in dist_results]
    torch.testing.assert_close(sum(shares) / WORLD, single_terms["mmd"], rtol=1e-12, atol=0)
    assert all(abs(float(s - single_terms["mmd"])) > 1e-6 for s in shares)
    assert float(single_terms["mmd"]) > 0


# row shares (the default), the replicated whole MMD, and the all-reduce form
@pytest.mark.parametrize("scope", ["global", "replicated", "general"])
def test_gathered_gradients_equal_single_process_gradients(runs, scope):
    dist_results, (_, single_grads) = runs
    for r in dist_results:
        grads = r[scope][1]
        assert grads.keys() == single_grads.keys()
        for name, g in single_grads.items():
            assert _rel(grads[name], g) < 1e-5, name
            torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-9 * float(g.abs().max()))


def test_per_shard_mmd_differs(runs):
    dist_results, (single_terms, single_grads) = runs
    local_terms, local_grads = dist_results[0]["local"]
    assert abs(float(local_terms["mmd"] - single_terms["mmd"])) > 1e-4
    worst = max(_rel(local_grads[n], g) for n, g in single_grads.items())
    assert worst > 1e-3
    # only the MMD differs: the decoders, which it does not reach, still get the global-batch gradient
    decoder = [n for n in single_grads if n.startswith("decoders.")]
    assert decoder and all(_rel(local_grads[n], single_grads[n]) < 1e-5 for n in decoder)
