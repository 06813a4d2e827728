"""Synthetic probe problems shared by the probe tests (not a test module)."""

import numpy as np


def clusters(n, d, classes, seed, multi=False):
    """Gaussian class clusters; centres depend on (classes, d) only, so every split of a problem
    shares them. ``multi``: multi-hot targets, a noisy threshold of ``classes`` feature columns."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(classes * 100 + d).normal(size=(classes, d)) * 1.2
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    x[:, 0] = x[:, 0] * 30.0 + 5.0  # one wide, off-centre feature: standardisation matters
    if multi:
        y = (x[:, 1:1 + classes] + rng.normal(size=(n, classes)) > 0.8).astype(np.int32)
    return x, y
