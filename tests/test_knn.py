"""The knn protocol pinned to its definition (DINO weighted k-NN on cosine similarity)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vtabkit.errors import UserError
from vtabkit.protocols import knn, merge_config

NUM_CLASSES = 10
KS = (10, 20, 100, 200)


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits pixels as features (64 dims): 900 train, 300 val, 597 test."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x = x.astype(np.float32)
    pick = {"train": order[:900], "val": order[900:1200], "test": order[1200:]}
    return {name: (x[index], y[index]) for name, index in pick.items()}


def reference_predict(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, k: int,
                      temperature: float = 0.07) -> np.ndarray:
    """Brute force in float64: all similarities, full sort, weighted votes, first max wins."""
    bank = bank_x / np.linalg.norm(bank_x, axis=1, keepdims=True)
    queries = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)
    similarity = queries.astype(np.float64) @ bank.astype(np.float64).T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :min(k, len(bank_y))]
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
    votes = np.zeros((len(query_x), NUM_CLASSES))
    np.add.at(votes, (np.arange(len(query_x))[:, None], bank_y[nearest]), weights)
    return np.argmax(votes, axis=1)


# Both solvers: the device path (JAX, shape buckets) and the host path (NumPy, below host_max_size).
SOLVERS = {"device": {"host_max_size": 0}, "host": {"host_max_size": 1e30}}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("chunk_size", [1, 64, 77, 597, 4096])  # 597 test rows: ragged ends
def test_predictions_equal_brute_force(digits, chunk_size, solver):
    (bank_x, bank_y), (test_x, _) = digits["train"], digits["test"]
    got = knn.knn_predict(bank_x, bank_y, test_x, NUM_CLASSES, KS, chunk_size=chunk_size, solver=solver)
    assert sorted(got) == list(KS)
    for k in KS:
        np.testing.assert_array_equal(got[k], reference_predict(bank_x, bank_y, test_x, k),
                                      err_msg=f"k={k}")


def test_k_is_capped_at_the_bank_size(digits):
    bank_x, bank_y = digits["train"][0][:150], digits["train"][1][:150]
    test_x = digits["test"][0]
    got = knn.knn_predict(bank_x, bank_y, test_x, NUM_CLASSES, (100, 200, 1000), chunk_size=100)
    expected = reference_predict(bank_x, bank_y, test_x, 150)
    np.testing.assert_array_equal(got[200], expected)
    np.testing.assert_array_equal(got[1000], expected)


def test_temperature_is_used(digits):
    (bank_x, bank_y), (test_x, _) = digits["train"], digits["test"]
    got = knn.knn_predict(bank_x, bank_y, test_x, NUM_CLASSES, (200,), temperature=1.0)
    np.testing.assert_array_equal(got[200], reference_predict(bank_x, bank_y, test_x, 200, 1.0))


@pytest.mark.parametrize("solver", SOLVERS)
def test_without_val_uses_the_configured_k(digits, solver):
    test_x, test_y = digits["test"]
    for k in (20, 100):
        result = knn.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES, {"k": k, **SOLVERS[solver]})
        assert result["solver"] == solver
        expected = np.mean(reference_predict(*digits["train"], test_x, k) == test_y)
        assert result["top1"] == pytest.approx(expected, abs=1e-12)
        assert result["k"] == result["k_used"] == k and result["k_selection"] == "default"
    assert result["bank_size"] == 900 and result["num_test"] == len(test_y)
    assert result["temperature"] == 0.07 and "val_top1_at_k" not in result and not result["k_capped"]


def test_k_beyond_the_bank_is_capped_visibly(digits):
    bank = (digits["train"][0][:50], digits["train"][1][:50])
    result = knn.evaluate_features(bank, None, digits["test"], NUM_CLASSES, {"k": 200})
    assert result["k"] == 200 and result["k_used"] == 50 and result["k_capped"]
    expected = np.mean(reference_predict(*bank, digits["test"][0], 50) == digits["test"][1])
    assert result["top1"] == pytest.approx(expected, abs=1e-12)


def test_val_selection_only_tries_the_listed_ks(digits):
    result = knn.evaluate_features(digits["train"], digits["val"], digits["test"], NUM_CLASSES,
                                   {"ks": [10, 100], "k": 20})
    assert set(result["val_top1_at_k"]) == {"10", "100"} and result["k"] in (10, 100)


@pytest.mark.parametrize("solver", SOLVERS)
def test_with_val_k_is_chosen_on_val_and_test_uses_train_plus_val(digits, solver):
    result = knn.evaluate_features(digits["train"], digits["val"], digits["test"], NUM_CLASSES, SOLVERS[solver])
    assert result["solver"] == solver
    val_x, val_y = digits["val"]
    val_scores = {k: np.mean(reference_predict(*digits["train"], val_x, k) == val_y) for k in KS}
    best = max(val_scores.values())
    assert result["k"] == min(k for k in KS if val_scores[k] == best)
    assert result["k_selection"] == "val"
    for k in KS:
        assert result["val_top1_at_k"][str(k)] == pytest.approx(val_scores[k], abs=1e-12)
    bank_x = np.concatenate([digits["train"][0], val_x])
    bank_y = np.concatenate([digits["train"][1], val_y])
    test_x, test_y = digits["test"]
    expected = np.mean(reference_predict(bank_x, bank_y, test_x, result["k"]) == test_y)
    assert result["top1"] == pytest.approx(expected, abs=1e-12)
    assert result["bank_size"] == 1200


def test_k_selection_never_reads_test(digits):
    result = knn.evaluate_features(digits["train"], digits["val"], digits["test"], NUM_CLASSES)
    rng = np.random.default_rng(3)
    test_x, test_y = digits["test"]
    corrupted = (rng.normal(size=test_x.shape).astype(np.float32), rng.permutation(test_y))
    other = knn.evaluate_features(digits["train"], digits["val"], corrupted, NUM_CLASSES)
    assert other["k"] == result["k"]
    assert other["val_top1_at_k"] == result["val_top1_at_k"]


def test_chunk_size_does_not_change_results(digits):
    results = [knn.evaluate_features(digits["train"], digits["val"], digits["test"], NUM_CLASSES,
                                     {"chunk_size": size}) for size in (50, 256, 10_000)]
    assert results[0]["val_top1_at_k"] == results[1]["val_top1_at_k"] == results[2]["val_top1_at_k"]
    assert results[0]["top1"] == results[1]["top1"] == results[2]["top1"]


def test_one_default_cell():
    cell_list = knn.cells(merge_config("knn", None))
    assert len(cell_list) == 1
    assert cell_list[0]["setting"] == "default" and cell_list[0]["seed"] == 0
    assert cell_list[0]["ks"] == list(KS) and cell_list[0]["temperature"] == 0.07


@pytest.mark.parametrize("config,message", [
    ({"temperature": 0}, "temperature"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"ks": []}, "'ks'"),
    ({"ks": [10, -1]}, "'ks'"),
    ({"k": 2.5}, "'k'"),
    ({"neighbours": 5}, "no setting"),
])
def test_bad_settings_are_user_errors(config, message):
    with pytest.raises(UserError, match=message):
        knn.cells(merge_config("knn", config))


@pytest.mark.parametrize("test,message", [
    ((np.zeros((4, 5), np.float32), np.zeros(4, int)), "dim"),
    ((np.zeros((4, 3), np.float32), np.zeros(3, int)), "one label per example"),
    ((np.zeros((4, 3), np.float32), np.array([0, 1, 2, 10])), r"\[0, 10\)"),
    ((np.zeros((4, 3), np.float32), np.zeros(4, np.float32)), "integers"),
    ((np.full((4, 3), np.inf, np.float32), np.zeros(4, int)), "NaN or inf"),
])
def test_bad_input_is_a_user_error(test, message):
    train = (np.ones((20, 3), np.float32), np.arange(20) % 10)
    with pytest.raises(UserError, match=message):
        knn.evaluate_features(train, None, test, NUM_CLASSES)


def test_bad_num_classes_is_a_user_error():
    split = (np.ones((4, 3), np.float32), np.zeros(4, int))
    with pytest.raises(UserError, match="num_classes"):
        knn.evaluate_features(split, None, split, 0)
