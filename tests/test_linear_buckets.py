"""Shape buckets of the linear probe: padded solves equal exact-shape solves, and compile rarely."""

import numpy as np
import pytest

from vtabkit.protocols import linear
from vtabkit.protocols.common import bucket

# Class counts of the 19 VTAB-1k tasks (shared/reference/vtab.md).
VTAB_CLASSES = [102, 100, 47, 102, 37, 397, 10, 2, 10, 45, 5, 8, 6, 6, 16, 16, 4, 18, 9]


def _problem(n_train, n_val, d, classes, multi, seed):
    """Gaussian class clusters (well conditioned); multi-hot targets are a noisy projection."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    if multi:
        x = rng.normal(size=(n, d)).astype(np.float32)
        y = (x @ rng.normal(size=(d, classes)) + rng.normal(size=(n, classes)) > 0.5).astype(np.int32)
    else:
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = (rng.normal(size=(classes, d))[y] * 1.5 + rng.normal(size=(n, d))).astype(np.float32)
    x[:, 0] *= 40.0  # one wide-scale feature: standardisation matters
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _fit(train, val, classes, multi, buckets, monkeypatch):
    monkeypatch.setattr(linear, "SHAPE_BUCKETS", buckets)
    # Tight tolerances: at the default ones two solves that sum in another order may both stop
    # "converged" at slightly different points of a flat minimum (l2 = 1e-4 on 180 examples),
    # enough to swap two near-tied val examples (measured: val mAP 0.9517 vs 0.9533). The test
    # is about padding, so both solves are driven close to the one minimiser.
    config = linear.merge_config("linear", {"l2_grid": [1e-1, 1e-2, 1e-3, 1e-4], "host_max_size": 0,
                                            "tol": 1e-6, "gap_tol": 1e-6})
    return linear.fit(train, val, num_classes=classes, target="multi" if multi else "single", config=config)


@pytest.mark.parametrize("n_train, n_val, d, classes, multi", [
    (150, 50, 37, 5, False), (300, 70, 70, 23, False), (201, 40, 30, 2, False),
    (180, 40, 45, 6, True), (250, 50, 20, 13, True)])
def test_bucketed_solve_equals_the_exact_shape_solve(n_train, n_val, d, classes, multi, monkeypatch):
    train, val = _problem(n_train, n_val, d, classes, multi, seed=d)
    assert (bucket(n_train + n_val, linear.ROW_FLOOR), bucket(d, linear.WIDTH_FLOOR)) != (n_train + n_val, d)
    exact_head, exact = _fit(train, val, classes, multi, False, monkeypatch)
    padded_head, padded = _fit(train, val, classes, multi, True, monkeypatch)
    assert padded["l2"] == exact["l2"]
    key = "val_map" if multi else "val_top1"
    np.testing.assert_allclose(list(padded[key].values()), list(exact[key].values()), atol=1e-6)
    query = _problem(300, 0, d, classes, multi, seed=d + 1)[0][0]
    exact_scores, padded_scores = linear.predict(exact_head, query), linear.predict(padded_head, query)
    assert padded_scores.shape == exact_scores.shape == (300, classes)
    if multi:
        np.testing.assert_array_equal(padded_scores > 0, exact_scores > 0)
    else:
        np.testing.assert_array_equal(padded_scores.argmax(1), exact_scores.argmax(1))
    scale = np.abs(exact_scores).max()
    np.testing.assert_allclose(padded_scores, exact_scores, atol=2e-4 * scale)


@pytest.mark.parametrize("multi", [False, True])
def test_padding_stays_exactly_zero(multi):
    train, val = _problem(90, 0, 11, 3, multi, seed=3)
    x, y = train
    # Pad by hand: 3 zero columns, 2 padded classes, 6 rows of weight 0.
    x_pad = np.zeros((96, 14), np.float32)
    x_pad[:90, :11] = x
    y_pad = np.zeros((96, 5) if multi else 96, np.int32)
    if multi:
        y_pad[:90, :3] = y
    else:
        y_pad[:90] = y
    weights = np.r_[np.ones(90), np.zeros(6)].astype(np.float32)
    mask = np.arange(5) < 3
    w, b, mean, scale, _ = (np.asarray(a) for a in linear.fit_path(
        x_pad, y_pad, weights, np.asarray([1e-2, 1e-3], np.float32), mask, num_classes=5, max_iter=200,
        tol=1e-5, gap_tol=1e-3, standardize=True, multi=multi))
    assert np.all(w[:, 11:, :] == 0) and np.all(w[:, :, 3:] == 0) and np.all(b[:, 3:] == 0)
    np.testing.assert_allclose(mean[:11], x.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scale[:11], x.std(0) + 1e-6, rtol=1e-4)
    assert np.all(mean[11:] == 0)


def test_a_suite_of_shapes_compiles_once_per_bucket(monkeypatch):
    """19 VTAB-1k-like problems (each its own class count, width and size) share a few compiles."""
    monkeypatch.setattr(linear, "SHAPE_BUCKETS", True)
    rng = np.random.default_rng(0)
    config = linear.merge_config("linear", {"l2_grid": [1e-2, 1e-3], "max_iter": 3, "host_max_size": 0})
    # As in VTAB-1k, sizes and widths vary less than class counts (there: 1000 rows, one width).
    shapes = [(int(rng.integers(220, 300)), int(rng.integers(50, 80)), int(rng.integers(70, 96)), classes)
              for classes in VTAB_CLASSES]
    assert len(set(shapes)) == 19
    # The selection solves on train rows, the refit on train+val: each its row bucket.
    buckets = {(bucket(rows, linear.ROW_FLOOR), bucket(d, linear.WIDTH_FLOOR), bucket(c, linear.CLASS_FLOOR))
               for n, m, d, c in shapes for rows in (n, n + m)}
    assert len(buckets) <= 10  # 19 shapes, 5 class buckets (16, 24, 48, 128, 512), rows 256 or 384
    before = linear.fit_path._cache_size()
    for n_train, n_val, d, classes in shapes:
        train, val = _problem(n_train, n_val, d, classes, False, seed=classes)
        linear.fit(train, val, num_classes=classes, target="single", config=config)
    assert linear.fit_path._cache_size() - before <= len(buckets)


def test_vtab1k_selection_and_refit_share_one_compile(monkeypatch):
    """800 train rows (selection) and 1,000 train+val rows (refit) fall in one row bucket."""
    monkeypatch.setattr(linear, "SHAPE_BUCKETS", True)
    assert bucket(800, linear.ROW_FLOOR) == bucket(1000, linear.ROW_FLOOR)
    config = linear.merge_config("linear", {"l2_grid": [1e-2, 1e-3], "max_iter": 3, "host_max_size": 0})
    train, val = _problem(800, 200, 33, 7, False, seed=7)
    before = linear.fit_path._cache_size()
    linear.fit(train, val, num_classes=7, target="single", config=config)
    assert linear.fit_path._cache_size() - before == 1
