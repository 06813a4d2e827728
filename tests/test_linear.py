"""The linear probe against scikit-learn on real features, and its selection rules."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vtabkit.errors import UserError
from vtabkit.protocols import linear


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    return (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:])


def _sklearn_probe(train, val, test, grid):
    """The same procedure with scikit-learn: select C on val, refit on train+val."""
    def fit(x, y, l2):
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-6)
        return scaler, model.fit(scaler.transform(x), y)

    def score(fitted, x, y):
        scaler, model = fitted
        return float(np.mean(model.predict(scaler.transform(x)) == y))

    val_scores = [score(fit(*train, l2), *val) for l2 in grid]
    best = grid[int(np.argmax(val_scores))]
    x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    return score(fit(x_all, y_all, best), *test), best


def test_matches_sklearn_within_one_point(digits):
    train, val, test = digits
    ours = linear.evaluate_features(train, val, test, num_classes=10)
    grid = sorted(linear.merge_config("linear", None)["l2_grid"], reverse=True)
    reference, reference_l2 = _sklearn_probe(train, val, test, grid)
    assert abs(ours["top1"] - reference) <= 0.01, (ours, reference, reference_l2)
    assert ours["top1"] > 0.9  # real digits are easy for a linear model
    assert ours["l2"] in grid and set(ours["val_top1"]) == {f"{l2:.3g}" for l2 in grid}


def test_selection_never_reads_test_labels(digits):
    train, val, (x_test, y_test) = digits
    shuffled = np.random.default_rng(1).permutation(y_test)
    first = linear.evaluate_features(train, val, (x_test, y_test), num_classes=10)
    second = linear.evaluate_features(train, val, (x_test, shuffled), num_classes=10)
    assert first["l2"] == second["l2"] and first["val_top1"] == second["val_top1"]
    assert second["top1"] < 0.3  # scored against shuffled labels, so the score must collapse


def test_ties_pick_the_strongest_l2():
    assert linear.choose_l2([1e-3, 1.0, 0.1], [0.5, 0.5, 0.4]) == 1.0
    assert linear.choose_l2([1e-3, 1.0, 0.1], [0.6, 0.5, 0.4]) == 1e-3


def test_without_val_holds_out_part_of_train(digits):
    train, _, test = digits
    result = linear.evaluate_features(train, None, test, num_classes=10)
    assert result["num_train"] == 640 and result["num_val"] == 160
    assert result["top1"] > 0.85


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (x[:, :, None], y), "must be 2-D"),
    (lambda x, y: (x, y[:-1]), "one label per example"),
    (lambda x, y: (x, y + 10), r"labels must be integers in \[0, 10\)"),
    (lambda x, y: (np.where(x > 5, np.nan, x), y), "NaN or inf"),
])
def test_bad_inputs_are_clear_errors(digits, bad, message):
    train, val, test = digits
    with pytest.raises(UserError, match=message):
        linear.evaluate_features(bad(*train), val, test, num_classes=10)


def test_unknown_setting_is_an_error(digits):
    with pytest.raises(UserError, match="has no setting 'l3_grid'"):
        linear.evaluate_features(*digits, num_classes=10, config={"l3_grid": [1.0]})
