"""The loop scores every model through its ``objective`` (no ``isinstance``): a pretraining step withholds the
label from CMMD's encoder and drops the classifier term; a supervised step shows it the label."""

from __future__ import annotations

import pytest
import torch

from cmmd_dist.model import CMMD, CMMDConfig, LossWeights, ModalityDef, MxO
from cmmd_dist.train.loop import evaluate_loss, train_step

CFG = CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),), num_classes=10,
                 zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,))


def batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"obs": {"view1": torch.rand(n, 8, 8, generator=g)}, "mis": {"view2": torch.rand(n, 8, 8, generator=g)},
            "y": torch.arange(n) % 10}


@pytest.mark.parametrize("pretrain", [True, False])
def test_cmmd_pretraining_withholds_the_label_from_the_encoder(pretrain):
    torch.manual_seed(0)
    core, seen = CMMD(CFG), []
    core.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, -CFG.num_classes:].clone()))
    terms = train_step(core, core, batch(), torch.optim.Adam(core.parameters()), LossWeights(), pretrain=pretrain)
    label_part = seen[0]
    if pretrain:
        assert torch.count_nonzero(label_part) == 0 and float(terms["ce"]) == 0.0
    else:
        assert torch.equal(label_part, torch.nn.functional.one_hot(batch()["y"], 10).float())
        assert float(terms["ce"]) > 0


def test_every_model_scores_a_batch_through_its_objective():
    for core in (CMMD(CFG), MxO(CFG)):
        terms = evaluate_loss(core, [batch()], LossWeights())
        assert set(terms) >= {"rec", "kl", "mmd", "ce", "loss"} and terms["loss"] > 0
