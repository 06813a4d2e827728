"""Multi-label linear probe and kNN against independent implementations.

- linear: one sigmoid per class on standardised features, l2 chosen on val by mAP, refit on
  train+val. Its objective per class is (1/n) sum BCE + l2/2 ||w||^2 with an unpenalised bias,
  which is scikit-learn's one-vs-rest `LogisticRegression` with C = 1 / (n l2). The probe's test
  mAP must be within 1.5 points of scikit-learn's, both at the probe's l2 and with scikit-learn
  choosing C on val itself.
- kNN: weighted votes per class (the weighted share of the k nearest that carry the class)
  against a brute-force float64 implementation: all cosine similarities, a full sort.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_multilabel_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier

from vtabkit import metrics
from vtabkit.protocols import knn, linear, merge_config

CLASSES = 8


@pytest.fixture(scope="module")
def data():
    x, y = make_multilabel_classification(n_samples=2000, n_features=20, n_classes=CLASSES, n_labels=2,
                                          random_state=2)
    x = (x + np.random.default_rng(0).normal(0, 0.3, x.shape)).astype(np.float32)  # not integer counts
    y = y.astype(np.uint8)
    return {"train": (x[:1000], y[:1000]), "val": (x[1000:1400], y[1000:1400]), "test": (x[1400:], y[1400:])}


def _standardise(fit_on: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    mean = fit_on.astype(np.float64).mean(0)
    scale = fit_on.astype(np.float64).std(0) + 1e-6  # population std, as the probe
    return [(a.astype(np.float64) - mean) / scale for a in arrays]


def _sklearn_map(train_x, train_y, test_x, test_y, l2: float) -> float:
    model = OneVsRestClassifier(LogisticRegression(C=1.0 / (len(train_y) * l2), max_iter=5000, tol=1e-8))
    model.fit(train_x, train_y)
    # macro AP over the classes present in test (sklearn's own definition of AP)
    scores = model.decision_function(test_x)
    present = test_y.sum(0) > 0
    return float(average_precision_score(test_y[:, present], scores[:, present], average="macro"))


def test_linear_multilabel_map_matches_sklearn_one_vs_rest(data):
    result = linear.evaluate_features(data["train"], data["val"], data["test"], CLASSES)
    assert result["selected_by"] == "val_map" and result["converged"]
    ours = 100 * result["map"]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]

    # 1. the same l2, refit on train+val as the probe does
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    all_s, test_s = _standardise(x_all, x_all, x_test)
    at_our_l2 = 100 * _sklearn_map(all_s, y_all, test_s, y_test, result["l2"])
    assert abs(ours - at_our_l2) <= 1.5, (ours, at_our_l2)

    # 2. scikit-learn choosing its own C on val over the same grid, then refitting on train+val
    train_s, val_s = _standardise(x_train, x_train, x_val)
    grid = merge_config("linear", None)["l2_grid"]
    val_maps = {l2: _sklearn_map(train_s, y_train, val_s, y_val, l2) for l2 in grid}
    best = max(grid, key=lambda l2: (val_maps[l2], l2))
    own_choice = 100 * _sklearn_map(all_s, y_all, test_s, y_test, best)
    assert abs(ours - own_choice) <= 1.5, (ours, own_choice, best, result["l2"])
    print(f"mAP: vtabkit {ours:.2f} (l2 {result['l2']}), sklearn at that l2 {at_our_l2:.2f}, "
          f"sklearn own choice {own_choice:.2f} (l2 {best})")
    assert ours > 100 * y_test.mean() + 20  # far above chance (AP of random scores ~ label frequency)
    assert 1e-6 < result["l2"] < 1.0  # an interior choice: the solution is not just the prior


def _brute_force_shares(bank_x, bank_y, query_x, k, temperature=0.07) -> np.ndarray:
    bank = bank_x.astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries = query_x.astype(np.float64)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = queries @ bank.T
    out = np.zeros((len(query_x), bank_y.shape[1]))
    for row in range(len(query_x)):
        nearest = np.argsort(-similarity[row], kind="stable")[:min(k, len(bank_y))]
        weights = np.exp(similarity[row, nearest] / temperature)
        out[row] = (weights[:, None] * bank_y[nearest]).sum(0) / weights.sum()
    return out


@pytest.mark.parametrize("chunk_size", [64, 333])
def test_knn_multilabel_votes_equal_brute_force(data, chunk_size):
    (bank_x, bank_y), (query_x, _) = data["train"], data["test"]
    ks = (1, 10, 20, 100)
    got = knn.knn_votes(bank_x, bank_y, query_x, CLASSES, ks, chunk_size=chunk_size)
    for k in ks:
        expected = _brute_force_shares(bank_x, bank_y, query_x, k)
        np.testing.assert_allclose(got[k], expected, atol=2e-5, err_msg=f"k={k}")
        assert got[k].shape == (len(query_x), CLASSES) and (got[k] >= -1e-6).all() and (got[k] <= 1 + 1e-6).all()


def test_knn_multilabel_protocol_scores_are_the_brute_force_shares(data):
    """The protocol: k chosen on val by mAP (bank = train), test scored with bank = train+val.
    mAP ranks the float32 vote shares, so near-equal shares may swap against the float64
    reference: equal within 1e-3 (the shares themselves within 2e-5, above)."""
    result = knn.evaluate_features(data["train"], data["val"], data["test"], CLASSES)
    k = result["k"]
    val_maps = {int(key): value for key, value in result["val_map_at_k"].items()}
    for each, value in val_maps.items():
        shares = _brute_force_shares(*data["train"], data["val"][0], each)
        assert value == pytest.approx(metrics.get_metric("map").function(knn.scores_from_votes(shares, True),
                                                                         data["val"][1]), abs=1e-3)
    assert val_maps[k] == max(val_maps.values())
    bank_x = np.concatenate([data["train"][0], data["val"][0]])
    bank_y = np.concatenate([data["train"][1], data["val"][1]])
    shares = _brute_force_shares(bank_x, bank_y, data["test"][0], k)
    expected = metrics.get_metric("map").function(knn.scores_from_votes(shares, True), data["test"][1])
    assert result["map"] == pytest.approx(expected, abs=1e-3)
