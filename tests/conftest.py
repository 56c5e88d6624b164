"""Fixtures shared by unit and integration tests: source files of the exact format a converter reads, written by the test."""

import numpy as np
import pytest
from scipy.io import savemat


def write_svhn(folder, n_train=80, n_test=30):
    """SVHN's ``train_32x32.mat`` / ``test_32x32.mat`` in ``folder``: labels cycle 0..9 (stored as 10 for 0)."""
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        x[...] = (y * 20 + 5).astype(np.uint8)  # every pixel encodes the digit
        savemat(folder / f"{name}_32x32.mat", {"X": x, "y": np.where(y == 0, 10, y).reshape(-1, 1)})


@pytest.fixture(scope="session")
def svhn_writer():
    """``write_svhn(folder, n_train=80, n_test=30)``: fake SVHN .mat files whose every pixel encodes the digit."""
    return write_svhn
