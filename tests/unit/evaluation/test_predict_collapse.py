"""``predict``'s collapse inputs come from each model's own ``collapse_params`` (no ``isinstance`` on the
model): for CMMD the posterior on the full rows and the conditional prior are exactly those of its forward
pass in eval mode; M-x_o has none."""

from __future__ import annotations

import numpy as np
import torch

from cmmd_dist.evaluation.metrics import predict
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.model.baselines import MxO

CFG = CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),), num_classes=10,
                 zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,))


class Rows:
    """The two members of ``SplitTensors`` that ``predict`` reads."""

    def __init__(self, n: int = 7):
        g = torch.Generator().manual_seed(0)
        self.batch = {"obs": {"view1": torch.rand(n, 8, 8, generator=g)},
                      "mis": {"view2": torch.rand(n, 8, 8, generator=g)}, "y": torch.arange(n) % 10}

    def __len__(self) -> int:
        return int(self.batch["y"].shape[0])

    def rows(self, sl: slice) -> dict:
        return {"obs": {k: v[sl] for k, v in self.batch["obs"].items()},
                "mis": {k: v[sl] for k, v in self.batch["mis"].items()}, "y": self.batch["y"][sl]}


def test_cmmd_collapse_inputs_are_its_posterior_and_prior():
    torch.manual_seed(0)
    core, data = CMMD(CFG), Rows()
    got = predict(core, data, batch_size=3)  # three chunks
    with torch.no_grad():
        out = core.eval()(data.batch)
    for key in ("mu_q", "logvar_q", "mu_p", "logvar_p"):
        np.testing.assert_allclose(got[key], getattr(out, key).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["z"], got["mu_p"])


def test_mx_o_has_no_collapse_inputs():
    got = predict(MxO(CFG), Rows(), batch_size=4)
    assert "mu_q" not in got and got["probs"].shape == (7, 10)
