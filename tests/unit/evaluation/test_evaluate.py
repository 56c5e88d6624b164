"""Metrics: error, mAP, posterior-collapse curve, latent classification."""

import numpy as np

from cmmd_dist.evaluation.metrics import classification_metrics, collapse_curve, latent_classification


def test_error_and_map():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert classification_metrics(probs, np.array([0, 1, 1]), False)["error"] == 1 / 3
    y = np.array([[1, 0], [0, 1], [1, 1]])
    m = classification_metrics(np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.7]]), y, True)
    assert m["map"] == 1.0 and m["metric"] == 0.0


def test_collapse_curve_counts_dims_equal_to_prior():
    n, d = 500, 4
    mu_p, lv_p = np.zeros((n, d)), np.zeros((n, d))
    mu_q = np.zeros((n, d))
    mu_q[:, 2:] = 3.0  # two informative dims (KL 4.5 nats each), two collapsed ones
    curve = collapse_curve(mu_q, np.zeros((n, d)), mu_p, lv_p, eps_grid=[0.0, 0.01, 4.0, 5.0])
    assert curve == [0.0, 0.5, 0.5, 1.0]


def test_latent_classification_separable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    z = np.eye(3)[y] * 5 + rng.normal(size=(2000, 3))
    assert latent_classification(z[:1000], y[:1000], z[1000:], y[1000:]) > 0.95
