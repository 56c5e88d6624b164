"""Likelihood heads, feature nets and decoders for every dataset's modality kinds; model purity."""

import subprocess
import sys

import pytest
import torch

from cmmd_dist.model import CMMD, CMMDConfig, LossWeights, ModalityDef, cmmd_loss, make_likelihood


@pytest.mark.parametrize(
    "name,shape,data",
    [
        ("gaussian", (5,), lambda: torch.randn(7, 5)),
        ("bernoulli", (5,), lambda: torch.randint(0, 2, (7, 5)).float()),
        ("categorical", (8, 71), lambda: torch.nn.functional.one_hot(torch.randint(0, 71, (7, 8)), 71).float().flatten(1)),
    ],
)
def test_every_head_gives_finite_log_likelihood(name, shape, data):
    lik = make_likelihood(name, shape)
    size = lik.size
    params = torch.randn(7, lik.n_params * size) * 3
    lp = lik.log_prob(params, data())
    assert lp.shape == (7,) and torch.isfinite(lp).all()
    assert lik.mean(params).shape == (7, size)


def test_fixed_variance_gaussian_has_one_block_and_matches_normal():
    lik = make_likelihood("gaussian", (3,), learned_variance=False, fixed_variance=0.5)
    assert lik.n_params == 1
    mu, x = torch.randn(4, 3), torch.randn(4, 3)
    ref = torch.distributions.Normal(mu, 0.5**0.5).log_prob(x).sum(-1)
    assert torch.allclose(lik.log_prob(mu, x), ref, atol=1e-5)


def test_categorical_log_prob_is_sum_of_log_softmax_at_the_ones():
    lik = make_likelihood("categorical", (2, 3))
    params = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 5.0]])
    x = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    want = torch.log_softmax(torch.tensor([1.0, 2.0, 3.0]), 0)[2] + torch.log_softmax(torch.tensor([0.0, 0.0, 5.0]), 0)[0]
    assert torch.allclose(lik.log_prob(params, x), want.reshape(1))


def test_unknown_likelihood_is_refused():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        make_likelihood("poisson", (3,))


@pytest.mark.parametrize(
    "observed,missing,feature,decoder",
    [
        # mnist-svhn: MNIST observed (conv prior), SVHN missing (conv decoder, Gaussian)
        ((ModalityDef("mnist", (28, 28)),), (ModalityDef("svhn", (3, 32, 32)),), "conv", "conv"),
        # mst {M,T} observed, S missing; text observed through the text conv net
        ((ModalityDef("mnist", (28, 28)), ModalityDef("text", (8, 71), "categorical")),
         (ModalityDef("svhn", (3, 32, 32)),), "conv", "conv"),
        # mst {S} observed, M and T missing: an image decoder and a text decoder
        ((ModalityDef("svhn", (3, 32, 32)),),
         (ModalityDef("mnist", (28, 28), "bernoulli"), ModalityDef("text", (8, 71), "categorical")), "conv", "conv"),
        # flickr-like: vectors, Bernoulli tags, MLP everywhere
        ((ModalityDef("image", (40,)),), (ModalityDef("tags", (30,), "bernoulli"),), "mlp", "mlp"),
    ],
)
def test_architectures_for_dataset_kinds(observed, missing, feature, decoder):
    cfg = CMMDConfig(
        observed=observed, missing=missing, num_classes=10, zdim=20, encoder_hidden=(32,), prior_hidden=(32,),
        decoder_hidden=(32,), classifier_hidden=(16,),
        feature_nets=tuple((m.name, feature) for m in observed), decoder_nets=tuple((m.name, decoder) for m in missing),
    )
    model = CMMD(cfg)
    n = 4
    def sample(m):
        if m.likelihood == "categorical":
            return torch.nn.functional.one_hot(torch.randint(0, m.shape[-1], (n, *m.shape[:-1])), m.shape[-1]).float()
        return torch.rand(n, *m.shape).round() if m.likelihood == "bernoulli" else torch.rand(n, *m.shape)
    b = {"obs": {m.name: sample(m) for m in observed}, "mis": {m.name: sample(m) for m in missing},
         "y": torch.randint(0, 10, (n,))}
    loss, terms = cmmd_loss(model, model(b), b, LossWeights())
    assert torch.isfinite(loss)
    loss.backward()
    pred = model.predict(b["obs"])
    for m in missing:
        assert pred["generated"][m.name].shape == (n, *m.shape)


def test_model_package_is_pure_torch():
    code = (
        "import sys, cmmd_dist.model\n"
        "bad = [m for m in ('ray', 'mlflow', 'boto3', 'pyarrow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_round_trips_through_json():
    import json

    cfg = CMMDConfig(observed=(ModalityDef("m", (28, 28)), ModalityDef("t", (8, 71), "categorical")),
                     missing=(ModalityDef("s", (3, 32, 32)),), num_classes=10, zdim=5,
                     feature_nets=(("t", "conv"),), decoder_nets=(("s", "conv"),))
    assert CMMDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
