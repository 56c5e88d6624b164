"""The CMMD objective: KL, MMD, lambda's role, gradient flow."""

import pytest
import torch

from cmmd_dist.model import CMMD, CMMDConfig, LossWeights, ModalityDef, cmmd_loss, gaussian_kl, mmd


def tiny(**kw) -> CMMD:
    cfg = CMMDConfig(
        observed=(ModalityDef("a", (6,)),), missing=(ModalityDef("b", (5,)),), num_classes=3, zdim=4,
        encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,), dropout=0.0, **kw,
    )
    return CMMD(cfg)


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": {"a": torch.rand(n, 6, generator=g)}, "mis": {"b": torch.rand(n, 5, generator=g)},
            "y": torch.randint(0, 3, (n,), generator=g)}


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = torch.randn(4, 1, 3) * 0.7
    closed = gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum()
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * lv_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p))
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    assert abs(float(closed) - float(mc)) < 0.02 * max(1.0, float(closed))
    # and torch's own closed form agrees
    assert torch.allclose(closed, torch.distributions.kl_divergence(q, p).sum(), atol=1e-5)


def test_mmd_zero_for_identical_sets_and_grows_with_mean_shift():
    torch.manual_seed(0)
    z = torch.randn(300, 4)
    assert float(mmd(z, z)) == pytest.approx(0.0, abs=1e-6)
    vals = [float(mmd(z, torch.randn(300, 4) + shift)) for shift in (0.0, 1.0, 3.0)]
    assert vals[0] < vals[1] < vals[2]
    assert vals[0] < 0.05 * vals[2]


def test_mmd_gather_hook_sees_global_batch():
    torch.manual_seed(0)
    zq, zp = torch.randn(10, 3), torch.randn(10, 3)
    other_q, other_p = torch.randn(10, 3), torch.randn(10, 3)
    # a fake 2-rank gather: this rank's rows, then the other rank's rows (sent in the same layout)
    gathered = mmd(zq, zp, gather=lambda t: torch.cat([t, torch.cat([other_q, other_p])]))
    assert torch.allclose(gathered, mmd(torch.cat([zq, other_q]), torch.cat([zp, other_p])))


def _terms_and_total(lam):
    torch.manual_seed(1)
    model = tiny()
    b = batch()
    torch.manual_seed(2)
    out = model(b)
    total, t = cmmd_loss(model, out, b, LossWeights(lam=lam, mmd_weight=1000.0, cls_weight=10.0))
    return total, t


def test_lambda_one_is_rec_plus_kl_plus_ce():
    total, t = _terms_and_total(1.0)
    assert float(t["mmd"]) == 0  # weighted by (1 - lambda) = 0: not computed at all (the plain ELBO's cost)
    assert float(_terms_and_total(0.9)[1]["mmd"]) > 0
    assert torch.equal(total.detach(), t["rec"] + 1.0 * t["kl"] + 10.0 * t["ce"])


def test_lambda_zero_drops_kl():
    total, t = _terms_and_total(0.0)
    assert float(t["kl"]) > 0
    assert torch.allclose(total.detach(), t["rec"] + 1000.0 * t["mmd"] + 10.0 * t["ce"])


def test_gradients_reach_every_network():
    torch.manual_seed(0)
    model = tiny()
    b = batch()
    total, _ = cmmd_loss(model, model(b), b, LossWeights())
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_ce_reduction_and_world_size_scaling():
    torch.manual_seed(0)
    model = tiny()
    b = batch(32)
    out = model(b)
    _, s = cmmd_loss(model, out, b, LossWeights(ce_reduction="sum"))
    _, m = cmmd_loss(model, out, b, LossWeights(ce_reduction="mean"))
    _, s2 = cmmd_loss(model, out, b, LossWeights(ce_reduction="sum"), world_size=2)
    assert torch.allclose(s["ce"], m["ce"] * 32, rtol=1e-5)
    assert torch.allclose(s2["ce"], 2 * s["ce"])


def test_s_posterior_samples():
    model = tiny()
    out = model(batch(8), n_samples=3)
    assert out.z_q.shape == (3, 8, 4) and out.dec_params["b"].shape == (3, 8, 10)


def test_pretraining_withholds_label_and_classifier():
    torch.manual_seed(0)
    model = tiny()
    b = batch()
    out = model(b, use_label=False)
    total, t = cmmd_loss(model, out, b, LossWeights(), with_classifier=False)
    assert float(t["ce"]) == 0.0
    total.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.classifier.parameters())
