"""The two-view recipe of Wang et al. used by the paper's MNIST experiment (and our digits2v).

View 1 (observed): the image rotated by an angle drawn from U[-45, 45] degrees.
View 2 (missing): ANOTHER image of the same class, plus U[0, 1] noise, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["rotate_images", "pair_by_class", "two_view"]


def rotate_images(images: np.ndarray, rng: np.random.Generator, max_deg: float = 45.0) -> np.ndarray:
    """Rotate each (H, W) image by its own angle from U[-max_deg, max_deg]; values stay in [0, 1]."""
    angles = rng.uniform(-max_deg, max_deg, size=len(images))
    out = np.empty_like(images, dtype=np.float32)
    for i, (img, a) in enumerate(zip(images, angles)):
        out[i] = ndimage.rotate(img, a, reshape=False, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0)


def pair_by_class(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every row, the index of a DIFFERENT row with the same label (itself if it is alone in its class)."""
    partner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 1:
            partner[idx] = idx
            continue
        # a random derangement-ish choice: shift a permutation by one so no row picks itself
        perm = rng.permutation(idx)
        partner[perm] = np.roll(perm, 1)
    return partner


def two_view(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(view1, view2) float32 arrays of shape (N, H, W) from images in [0, 1] and their labels."""
    images = images.astype(np.float32, copy=False)
    view1 = rotate_images(images, rng)
    partner = pair_by_class(labels, rng)
    noise = rng.uniform(0.0, 1.0, size=images.shape).astype(np.float32)
    view2 = np.clip(images[partner] + noise, 0.0, 1.0).astype(np.float32)
    return view1, view2
