"""Epoch checkpoints without Ray: a run stopped after epoch 1 and resumed from its checkpoint into fresh
objects ends bit-identical to the run that never stopped (weights, optimiser, RNG, shuffle order)."""

from __future__ import annotations

import torch

from cmmd_dist.model import CMMD, CMMDConfig, LossWeights, ModalityDef
from cmmd_dist.datasets.tensors import SplitTensors, iterate_batches
from cmmd_dist.train.checkpoint import ResumeState, load_checkpoint, save_checkpoint
from cmmd_dist.train.loop import train_epoch

CFG = CMMDConfig(observed=(ModalityDef("xo", (6,)),), missing=(ModalityDef("xm", (5,)),), num_classes=3, zdim=4,
                 encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,), dropout=0.2)


def data() -> SplitTensors:
    g = torch.Generator().manual_seed(3)
    return SplitTensors(obs={"xo": torch.randn(40, 6, generator=g)}, mis={"xm": torch.randn(40, 5, generator=g)},
                        y=torch.randint(0, 3, (40,), generator=g))


def fresh(seed: int = 0):
    torch.manual_seed(seed)
    core = CMMD(CFG)
    return core, torch.optim.Adam(core.parameters(), lr=1e-2), torch.Generator().manual_seed(seed + 1)


def epoch(core, opt, gen) -> dict:
    return train_epoch(core, core, iterate_batches(data(), 8, gen), opt, LossWeights())


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    core, opt, gen = fresh()
    for _ in range(2):
        straight = epoch(core, opt, gen)
    reference = {k: v.clone() for k, v in core.state_dict().items()}

    core, opt, gen = fresh()
    epoch(core, opt, gen)
    best = {k: v.clone() for k, v in core.state_dict().items()}
    save_checkpoint(tmp_path, 0, core, opt, gen,
                    ResumeState(epoch=1, history=[{"epoch": 1}], best_metric=0.5, best_epoch=1, best_state=best))
    torch.manual_seed(12345)  # a restarted process starts from other RNG states
    core, opt, gen = fresh(seed=99)
    resume = load_checkpoint(tmp_path, 0, core, opt, gen)
    assert (resume.epoch, resume.batch, resume.history, resume.best_epoch) == (1, 0, [{"epoch": 1}], 1)
    assert resume.rng_restored and all(torch.equal(resume.best_state[k], v) for k, v in best.items())
    resumed = epoch(core, opt, gen)
    assert resumed["loss"] == straight["loss"]
    for k, v in core.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_a_rank_without_its_part_restores_the_model_but_not_the_rng(tmp_path):
    core, opt, gen = fresh()
    epoch(core, opt, gen)
    save_checkpoint(tmp_path, 0, core, opt, gen, ResumeState(epoch=1))
    other, other_opt, other_gen = fresh(seed=5)
    resume = load_checkpoint(tmp_path, 1, other, other_opt, other_gen)  # rank 1 saved nothing here
    assert not resume.rng_restored and resume.epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(core.state_dict().values(), other.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "state.pt"]
