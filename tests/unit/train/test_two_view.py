"""The two-view recipe and the embedded digits2v dataset."""

import numpy as np

from cmmd_dist.datasets.loaders import load_digits2v
from cmmd_dist.datasets.two_view import pair_by_class, rotate_images


def test_pairing_is_same_class_and_another_row():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=200)
    partner = pair_by_class(labels, rng)
    assert np.all(labels[partner] == labels)
    assert np.all(partner != np.arange(200))


def test_rotation_keeps_range_and_mass_roughly():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 28, 28), np.float32)
    img[0, 10:18, 12:16] = 1.0
    out = rotate_images(img, rng)
    assert out.min() >= 0 and out.max() <= 1
    assert abs(out.sum() - img.sum()) < 0.15 * img.sum()
    assert not np.allclose(out, img)


def test_digits2v_is_seeded_and_shaped():
    a, b = load_digits2v(seed=3), load_digits2v(seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (1197, 300, 300)
    assert a.train.arrays["view1"].shape == (1197, 8, 8) and a.train.arrays["view1"].dtype == np.float32
    assert np.array_equal(a.train.arrays["view2"], b.train.arrays["view2"])
    assert a.train.arrays["view2"].min() >= 0 and a.train.arrays["view2"].max() <= 1
    c = load_digits2v(seed=4)
    assert not np.array_equal(a.train.arrays["view1"], c.train.arrays["view1"])
