"""Checkpoints load without unpickling code: a planted pickle in state.pt or rank<r>.pt is refused with
one line naming the file, and its payload never runs; an honest checkpoint is all tensors and plain
values (``weights_only=True`` reads it) and still restores every RNG exactly."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from cmmd_dist.errors import UserError, one_line
from cmmd_dist.train.checkpoint import STATE_FILE, ResumeState, load_checkpoint, rng_state, save_checkpoint


class Payload:
    """Unpickling it creates ``marker``: proof that a load ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def fresh(seed: int = 0):
    torch.manual_seed(seed)
    core = torch.nn.Linear(3, 2)
    return core, torch.optim.Adam(core.parameters(), lr=1e-2), torch.Generator().manual_seed(seed + 1)


def honest_checkpoint(folder):
    core, opt, gen = fresh()
    core(torch.randn(4, 3)).sum().backward()
    opt.step()  # the optimiser state holds tensors and step counts
    save_checkpoint(folder, 0, core, opt, gen, ResumeState(epoch=1, history=[{"epoch": 1, "loss": np.float64(0.5)}]))
    return folder


@pytest.mark.parametrize("planted", [STATE_FILE, "rank0.pt"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_planted_pickle_is_refused_naming_the_file_and_never_runs(tmp_path, planted, writer):
    folder = honest_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    target = folder / planted
    if writer == "torch.save":
        torch.save({"rng": Payload(marker), "model": Payload(marker)}, target)
    else:
        target.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(UserError) as caught:
        load_checkpoint(folder, 0, *fresh(seed=7))
    message = str(caught.value)
    assert str(target) in message and "\n" not in message and one_line(caught.value) == message
    assert not marker.exists()


def test_a_checkpoint_is_tensors_and_plain_values_and_restores_every_rng(tmp_path):
    folder = honest_checkpoint(tmp_path)
    for name in (STATE_FILE, "rank0.pt"):  # what any reader with weights_only=True can open
        torch.load(folder / name, weights_only=True)
    assert torch.load(folder / STATE_FILE, weights_only=True)["history"] == [{"epoch": 1, "loss": 0.5}]

    random.random(), np.random.standard_normal()  # numpy now caches a gaussian: has_gauss=1 is kept too
    core, opt, gen = fresh(seed=3)
    save_checkpoint(tmp_path / "again", 0, core, opt, gen, ResumeState(epoch=2))
    expected = (torch.rand(3), np.random.standard_normal(3), [random.random() for _ in range(3)],
                torch.rand(3, generator=gen))
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # a restarted process starts elsewhere
    core, opt, gen = fresh(seed=5)
    resume = load_checkpoint(tmp_path / "again", 0, core, opt, gen)
    assert resume.rng_restored and resume.epoch == 2
    got = (torch.rand(3), np.random.standard_normal(3), [random.random() for _ in range(3)],
           torch.rand(3, generator=gen))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])
    assert set(rng_state(gen)) >= {"torch", "numpy", "python", "shuffle"}
