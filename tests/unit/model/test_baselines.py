"""The baselines' objectives (VCCA, MVAE, MMVAE ELBO / IWAE, M-x_o) against hand computations on a tiny batch,
their gradients, test-time outputs and collapse parameters, and the model package's purity."""

import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from cmmd_dist.model import (
    MMVAE, MVAE, VCCA, BaselineConfig, CMMDConfig, LossWeights, ModalityDef, MxO, make_model,
)
from cmmd_dist.model.baselines import product_of_experts
from cmmd_dist.model.mmvae import mixture_moments

NO_CE = LossWeights(cls_weight=0.0)


def cfg(**kw) -> CMMDConfig:
    # fixed unit variance: the hand computation is a plain Normal(decoder mean, 1)
    base = dict(observed=(ModalityDef("a", (6,)),), missing=(ModalityDef("b", (5,)),), num_classes=3, zdim=4,
                encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,), classifier_hidden=(8,),
                dropout=0.0, learned_variance=False)
    return CMMDConfig(**{**base, **kw})


def batch(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": {"a": torch.rand(n, 6, generator=g)}, "mis": {"b": torch.rand(n, 5, generator=g)},
            "y": torch.randint(0, 3, (n,), generator=g)}


def loglik(model, name, z, x):
    """log N(x; decoder mean, 1) summed over the modality, by torch.distributions."""
    mean = model.decoders[name](z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], -1)
    return Normal(mean, 1.0).log_prob(x).sum(-1)


def kl_to_standard(mu, logvar):
    return kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)


def test_vcca_objective_by_hand():
    torch.manual_seed(0)
    model = VCCA(cfg(), BaselineConfig("vcca", beta=0.7))
    b = batch()
    torch.manual_seed(5)
    loss, t = model(b, LossWeights(cls_weight=0.0, n_samples=3))
    torch.manual_seed(5)
    mu, logvar = model.encoder(b["obs"])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(3, *mu.shape)
    rec = -(loglik(model, "a", z, b["obs"]["a"]) + loglik(model, "b", z, b["mis"]["b"])).mean()
    kl = kl_to_standard(mu, logvar).mean()
    assert torch.allclose(t["rec"], rec, atol=1e-5) and torch.allclose(t["kl"], kl, atol=1e-6)
    assert torch.allclose(loss, rec + 0.7 * kl, atol=1e-5)
    assert float(t["mmd"]) == 0.0
    # the classifier's term as CMMD's: cls_weight times the batch SUM of the cross-entropy
    ce = F.cross_entropy(model.classifier(mu), b["y"], reduction="sum")
    torch.manual_seed(5)
    loss10, t10 = model(b, LossWeights(cls_weight=10.0, n_samples=3))
    assert torch.allclose(t10["ce"], ce) and torch.allclose(loss10, rec + 0.7 * kl + 10.0 * ce, atol=1e-4)


def test_product_of_experts_closed_form():
    mu1, lv1 = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(4.0)]])
    mu, lv = product_of_experts([mu1], [lv1])
    # N(1, 1) x N(0, 1): N(0.5, 0.5); N(-2, 4) x N(0, 1): precision 1.25, mean -2 * 0.25 / 1.25
    assert torch.allclose(mu, torch.tensor([[0.5, -0.4]])) and torch.allclose(torch.exp(lv), torch.tensor([[0.5, 0.8]]))


def test_mvae_objective_by_hand():
    torch.manual_seed(0)
    model = MVAE(cfg(), BaselineConfig("mvae", beta=0.5))
    b = batch()
    torch.manual_seed(3)
    loss, t = model(b, NO_CE)
    torch.manual_seed(3)
    x = {"a": b["obs"]["a"], "b": b["mis"]["b"]}
    experts = {n: model.experts[n](x) for n in ("a", "b")}
    total = torch.zeros(())
    for names in (["a", "b"], ["a"], ["b"]):  # joint, then every unimodal sub-ELBO
        precision = 1.0 + sum(torch.exp(-experts[n][1]) for n in names)
        var = 1.0 / precision
        mu = var * sum(experts[n][0] * torch.exp(-experts[n][1]) for n in names)
        z = mu + var.sqrt() * torch.randn(1, *mu.shape)
        rec = -sum(loglik(model, n, z, x[n]) for n in names).mean()
        total = total + rec + 0.5 * kl_divergence(Normal(mu, var.sqrt()), Normal(0.0, 1.0)).sum(-1).mean()
    assert torch.allclose(loss, total, atol=1e-5)


def test_mvae_random_subsets_only_with_three_modalities():
    three = cfg(missing=(ModalityDef("b", (5,)), ModalityDef("c", (2,))))
    model = MVAE(three, BaselineConfig("mvae", mvae_subsets=4))
    subsets = model.subsets()
    assert subsets[:4] == [["a", "b", "c"], ["a"], ["b"], ["c"]] and len(subsets) == 8
    assert all(len(s) == 2 for s in subsets[4:])
    assert len(MVAE(cfg(), BaselineConfig("mvae", mvae_subsets=4)).subsets()) == 3  # two modalities: none to draw


def _mmvae_bound_by_hand(model, b, k, objective):
    x = {"a": b["obs"]["a"], "b": b["mis"]["b"]}
    experts = [model.experts[n](x) for n in ("a", "b")]
    dists = [Normal(mu, torch.exp(0.5 * lv)) for mu, lv in experts]
    per_expert = []
    for mu, lv in experts:  # samples drawn expert by expert, K each
        z = mu + torch.exp(0.5 * lv) * torch.randn(k, *mu.shape, dtype=mu.dtype)
        log_q = torch.log(0.5 * sum(torch.exp(d.log_prob(z).sum(-1)) for d in dists))
        log_w = loglik(model, "a", z, x["a"]) + loglik(model, "b", z, x["b"]) + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q
        if objective == "iwae":
            per_expert.append(torch.log(torch.exp(log_w).mean(0)))
        else:
            per_expert.append(log_w.mean(0))
    return torch.stack(per_expert).mean(0).mean()  # (1/M) sum over experts, mean over rows


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_mmvae_objective_by_hand(objective):
    torch.manual_seed(0)
    model = MMVAE(cfg(), BaselineConfig("mmvae", mmvae_objective=objective, mmvae_k=4)).double()
    b = {k: ({n: x.double() for n, x in v.items()} if isinstance(v, dict) else v) for k, v in batch().items()}
    torch.manual_seed(9)
    loss, _ = model(b, NO_CE)
    torch.manual_seed(9)
    assert torch.allclose(-loss, _mmvae_bound_by_hand(model, b, 4, objective), rtol=1e-9)


def test_mmvae_iwae_bound_is_tighter_on_the_same_samples_and_equals_elbo_at_k1():
    torch.manual_seed(0)
    b = batch(32)
    losses = {}
    for objective, k in (("elbo", 8), ("iwae", 8), ("elbo", 1), ("iwae", 1)):
        torch.manual_seed(0)
        model = MMVAE(cfg(), BaselineConfig("mmvae", mmvae_objective=objective, mmvae_k=k))
        torch.manual_seed(1)
        losses[objective, k] = float(model(b, NO_CE)[0].detach())
    assert losses["iwae", 8] < losses["elbo", 8]
    assert losses["iwae", 1] == pytest.approx(losses["elbo", 1], abs=1e-5)


def test_mixture_moments():
    mu, lv = mixture_moments([torch.tensor([0.0]), torch.tensor([2.0])], [torch.tensor([0.0]), torch.tensor([0.0])])
    assert torch.allclose(mu, torch.tensor([1.0])) and torch.allclose(torch.exp(lv), torch.tensor([2.0]))


def test_mx_o_is_cross_entropy_of_the_prior_classifier():
    torch.manual_seed(0)
    model = MxO(cfg())
    b = batch()
    loss, t = model(b, LossWeights())
    assert torch.allclose(loss, F.cross_entropy(model.classifier(model.prior(b["obs"])[0]), b["y"]))
    assert model.collapse_params(b) is None and model.predict(b["obs"])["generated"] == {}


KINDS = ["vcca", "mvae", "mmvae", "mx_o"]


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    model = make_model(cfg(learned_variance=True), BaselineConfig(kind, mmvae_k=2))
    loss, _ = model(batch(16), LossWeights())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if kind == "mx_o" and name.startswith("prior.gauss.logvar"):
            assert float(p.grad.abs().sum()) == 0, name  # in the graph for DDP, unused by the classifier
        else:
            assert float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("kind", ["vcca", "mvae", "mmvae"])
def test_classifier_reads_a_detached_latent(kind):
    """The two-step protocol: the classifier's loss moves the classifier, never the representation."""
    grads = {}
    for cls_weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = make_model(cfg(), BaselineConfig(kind))
        torch.manual_seed(1)
        model(batch(16), LossWeights(cls_weight=cls_weight))[0].backward()
        grads[cls_weight] = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("classifier")}
    assert all(torch.equal(grads[0.0][n], grads[10.0][n]) for n in grads[0.0])


@pytest.mark.parametrize("kind", ["vcca", "mvae", "mmvae"])
def test_pretraining_keeps_the_classifier_in_the_graph_with_zero_gradient(kind):
    torch.manual_seed(0)
    model = make_model(cfg(), BaselineConfig(kind))
    loss, t = model(batch(), LossWeights(), with_classifier=False)
    loss.backward()
    assert float(t["ce"]) == 0.0
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0 for p in model.classifier.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_predict_and_collapse_params(kind):
    torch.manual_seed(0)
    model = make_model(cfg(missing=(ModalityDef("b", (5,)), ModalityDef("t", (4, 3), "categorical"))),
                       BaselineConfig(kind)).eval()
    b = batch(9)
    b["mis"]["t"] = F.one_hot(torch.randint(0, 3, (9, 4)), 3).float()
    pred = model.predict(b["obs"])
    assert pred["z"].shape == (9, 4) and torch.allclose(pred["probs"].sum(-1), torch.ones(9))
    if kind == "mx_o":
        return
    assert pred["generated"]["b"].shape == (9, 5) and pred["generated"]["t"].shape == (9, 4, 3)
    mu_q, lv_q, mu_p, lv_p = model.collapse_params(b)
    assert mu_q.shape == lv_q.shape == (9, 4) and float(mu_p.abs().sum() + lv_p.abs().sum()) == 0  # N(0, I)


def test_make_model_kinds():
    assert type(make_model(cfg())).__name__ == "CMMD"
    assert [type(make_model(cfg(), BaselineConfig(k))).__name__ for k in KINDS] == ["VCCA", "MVAE", "MMVAE", "MxO"]
    with pytest.raises(ValueError, match="unknown model kind"):
        make_model(cfg(), BaselineConfig("dcca"))  # type: ignore[arg-type]


def test_a_multimodal_vae_must_define_the_three_abstract_methods():
    from cmmd_dist.model.baselines import MultimodalVAE

    class Partial(MultimodalVAE):  # inference and objective, but no joint posterior
        infer_observed, elbo_terms = VCCA.infer_observed, VCCA.elbo_terms

    with pytest.raises(TypeError, match="joint_posterior"):
        Partial(cfg(), BaselineConfig("vcca"))
    with pytest.raises(TypeError, match="abstract"):
        MultimodalVAE(cfg(), BaselineConfig("vcca"))
    assert isinstance(make_model(cfg(), BaselineConfig("vcca")), torch.nn.Module)  # the concrete ones still build


def test_baseline_modules_import_no_framework():
    code = (
        "import sys\n"
        "import cmmd_dist.model.baselines, cmmd_dist.model.vcca, cmmd_dist.model.mvae, cmmd_dist.model.mmvae\n"
        "bad = [m for m in ('ray', 'mlflow', 'boto3', 'pyarrow', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
