"""Shape buckets of the few-shot and k-NN probes: padded solves equal exact-shape solves
(predictions and chosen hyper-parameters), and a suite of shapes compiles once per bucket."""

import numpy as np
import pytest

from vtabkit.protocols import fewshot, knn
from vtabkit.protocols.common import bucket

from probe_problems import clusters as _clusters

# Class counts of the 19 VTAB-1k tasks (shared/reference/vtab.md).
VTAB_CLASSES = [102, 100, 47, 102, 37, 397, 10, 2, 10, 45, 5, 8, 6, 6, 16, 16, 4, 18, 9]


# --- few-shot -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shots, d, classes, selection", [
    (3, 40, 7, "loo"),      # 21 rows < 40 dims: dual; padded to 32 x 64, 16 classes
    (6, 30, 5, "val"),      # 30 rows == 30 dims: dual
    (12, 20, 3, "loo"),     # 36 rows > 20 dims: primal; padded 48 x 64
    (4, 70, 23, "val"),     # dual, 92 -> 96 rows, 70 -> 96 width
    (2, 33, 11, "fixed")])
def test_fewshot_bucketed_equals_exact_shape(shots, d, classes, selection, monkeypatch):
    train = _clusters(shots * classes * 4, d, classes, seed=d)
    val, test = _clusters(150, d, classes, seed=d + 1), _clusters(333, d, classes, seed=d + 2)
    cell = {"shots": shots, "seed": 1, "l2_selection": selection, "l2": 64.0, "host_max_size": 0}  # the device path
    out, heads = {}, {}
    for buckets in (False, True):
        monkeypatch.setattr(fewshot, "SHAPE_BUCKETS", buckets)
        config = fewshot.merge_config("fewshot", cell)
        heads[buckets], out[buckets] = fewshot.fit(train, val, num_classes=classes, target="single", config=config)
    assert heads[True].ridge.mean.shape[0] > d  # the bucketed solve really was padded
    # Chosen λ the same; held-out scores the same except where near-interpolating λ values
    # (the smallest of the grid) flip a round-off-sized decision or two in float32.
    holdout = {b: np.array(out[b].pop("l2_holdout_top1", [])) for b in out}
    assert out[True] == out[False]
    if len(holdout[True]):
        n = len(val[1]) if selection == "val" else shots * classes
        np.testing.assert_allclose(holdout[True], holdout[False], atol=2.5 / n, rtol=0)
        large = np.array(fewshot.L2_GRID) >= 1
        np.testing.assert_array_equal(holdout[True][large], holdout[False][large])
    monkeypatch.setattr(fewshot, "SHAPE_BUCKETS", False)
    exact = fewshot.predict(heads[False], test[0])
    monkeypatch.setattr(fewshot, "SHAPE_BUCKETS", True)
    padded = fewshot.predict(heads[True], test[0])
    assert padded.shape == exact.shape == (len(test[1]), classes)
    np.testing.assert_array_equal(padded.argmax(1), exact.argmax(1))
    np.testing.assert_allclose(padded, exact, atol=1e-4 * np.abs(exact).max())


def test_fewshot_suite_compiles_once_per_bucket(monkeypatch):
    """19 VTAB-like tasks x 2 shot counts (38 few-shot shapes) share a few ridge compiles."""
    monkeypatch.setattr(fewshot, "SHAPE_BUCKETS", True)
    rng = np.random.default_rng(0)
    widths = {classes: int(rng.integers(40, 64)) for classes in set(VTAB_CLASSES)}
    shapes = [(shots * c, widths[c], c) for c in VTAB_CLASSES for shots in (1, 2)]
    assert len(set(shapes)) >= 30
    fits = {(bucket(n, fewshot.ROW_FLOOR), bucket(d, fewshot.WIDTH_FLOOR), bucket(c, fewshot.CLASS_FLOOR), n <= d)
            for n, d, c in shapes}
    assert len(fits) <= len(set(shapes)) // 2
    before = fewshot._fit._cache_size(), fewshot._correct_grid._cache_size()
    for classes in VTAB_CLASSES:
        train, val = _clusters(3 * classes, widths[classes], classes, 5), _clusters(200, widths[classes], classes, 6)
        for shots in (1, 2):
            config = fewshot.merge_config("fewshot", {"shots": shots, "seed": 0, "l2_selection": "val",
                                                      "host_max_size": 0})
            fewshot.fit(train, val, num_classes=classes, target="single", config=config)
    assert fewshot._fit._cache_size() - before[0] <= len(fits)
    # Every val split (200 rows) is one 256-row query block: one scoring compile per ridge shape.
    assert fewshot._correct_grid._cache_size() - before[1] <= len(fits)


# --- k-NN ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_train, d, classes, multi", [
    (150, 37, 5, False), (90, 70, 23, False), (300, 20, 3, False), (120, 45, 6, True), (60, 30, 13, True)])
def test_knn_bucketed_equals_exact_shape(n_train, d, classes, multi, monkeypatch):
    train = _clusters(n_train, d, classes, seed=d, multi=multi)
    val, test = _clusters(70, d, classes, seed=d + 1, multi=multi), _clusters(300, d, classes, d + 2, multi)
    config = knn.merge_config("knn", {"chunk_size": 128, "host_max_size": 0})  # the device path
    out, scores = {}, {}
    for buckets in (False, True):
        monkeypatch.setattr(knn, "SHAPE_BUCKETS", buckets)
        head, out[buckets] = knn.fit(train, val, num_classes=classes, target="multi" if multi else "single",
                                     config=config)
        scores[buckets] = knn.predict(head, test[0])
    key = "val_map_at_k" if multi else "val_top1_at_k"
    assert out[True]["k"] == out[False]["k"] and out[True]["k_used"] == out[False]["k_used"]
    np.testing.assert_allclose(list(out[True][key].values()), list(out[False][key].values()), atol=1e-9)
    assert scores[True].shape == scores[False].shape == (len(test[1]), classes)
    if multi:
        np.testing.assert_array_equal(scores[True] > 0, scores[False] > 0)
    else:
        np.testing.assert_array_equal(scores[True].argmax(1), scores[False].argmax(1))
    np.testing.assert_allclose(scores[True], scores[False], rtol=1e-4, atol=1e-4)


def test_knn_suite_compiles_once_per_bucket(monkeypatch):
    """19 VTAB-like banks (sizes, widths, class counts all different) share a few compiles."""
    monkeypatch.setattr(knn, "SHAPE_BUCKETS", True)
    rng = np.random.default_rng(1)
    shapes = [(int(rng.integers(420, 500)), int(rng.integers(70, 96)), c) for c in VTAB_CLASSES]
    assert len(set(shapes)) == 19
    # Each bank is compiled twice: train (k chosen on val) and train + val (scoring).
    banks = {(bucket(n + m, knn.BANK_FLOOR), bucket(d, knn.WIDTH_FLOOR), bucket(c, knn.CLASS_FLOOR), ks)
             for n, d, c in shapes for m, ks in ((0, 4), (100, 1))}
    assert len(banks) <= 10
    config = knn.merge_config("knn", {"host_max_size": 0})
    before = knn._votes_chunk._cache_size()
    for n, d, classes in shapes:
        train, val = _clusters(n, d, classes, 3), _clusters(100, d, classes, 4)
        head, _ = knn.fit(train, val, num_classes=classes, target="single", config=config)
        knn.predict(head, _clusters(300, d, classes, 5)[0])
    assert knn._votes_chunk._cache_size() - before <= len(banks)
