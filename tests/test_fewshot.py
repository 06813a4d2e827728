"""The fewshot protocol pinned to its definition (ViT / BiT / big_vision few-shot ridge)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from vtabkit.errors import UserError
from vtabkit.protocols import fewshot, merge_config

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits pixels as features (64 dims): 1000 train, 300 val, 497 test."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x = x.astype(np.float32)
    pick = {"train": order[:1000], "val": order[1000:1300], "test": order[1300:]}
    return {name: (x[index], y[index]) for name, index in pick.items()}


# --- independent references -------------------------------------------------------------------

def reference_sample(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """The sampling rule as written: one permutation per class, classes in sorted order."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.concatenate(picked)


def reference_logits(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray,
                     l2: float) -> np.ndarray:
    """The classifier as written, in float64: standardise, bias 100, ±1 targets, plain solve."""
    train_x, query_x = train_x.astype(np.float64), query_x.astype(np.float64)
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-5

    def design(x: np.ndarray) -> np.ndarray:
        return np.c_[(x - mean) / scale, np.full(len(x), 100.0)]

    x = design(train_x)
    targets = 2.0 * np.eye(NUM_CLASSES)[train_y] - 1.0
    weights = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ targets)
    return design(query_x) @ weights


def reference_loo_correct(train_x: np.ndarray, train_y: np.ndarray, l2: float) -> int:
    """Leave-one-out by refitting without each example (standardisation from the whole set)."""
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-5
    x = np.c_[(train_x - mean) / scale, np.full(len(train_x), 100.0)]
    targets = 2.0 * np.eye(NUM_CLASSES)[train_y] - 1.0
    correct = 0
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        weights = np.linalg.solve(x[keep].T @ x[keep] + l2 * np.eye(x.shape[1]),
                                  x[keep].T @ targets[keep])
        correct += int(np.argmax(x[i] @ weights) == train_y[i])
    return correct


def few_shot_set(split: tuple[np.ndarray, np.ndarray], shots: int, seed: int):
    index = fewshot.sample_few_shot(split[1], shots, seed)
    return split[0][index], split[1][index]


# --- sampling ---------------------------------------------------------------------------------

def test_sampling_follows_the_written_rule(digits):
    labels = digits["train"][1]
    for seed in (0, 1, 2):
        for shots in (1, 5, 10, 25):
            got = fewshot.sample_few_shot(labels, shots, seed)
            np.testing.assert_array_equal(got, reference_sample(labels, shots, seed))


def test_sampling_is_nested_across_shots_for_a_seed(digits):
    labels = digits["train"][1]
    for seed in (0, 1, 2):
        sets = [set(fewshot.sample_few_shot(labels, k, seed).tolist()) for k in (1, 5, 10, 25)]
        assert sets[0] < sets[1] < sets[2] < sets[3]
        for k, chosen in zip((1, 5, 10, 25), sets):
            assert np.bincount(labels[list(chosen)], minlength=NUM_CLASSES).tolist() == \
                [k] * NUM_CLASSES


def test_sampling_is_deterministic_and_seeds_differ(digits):
    labels = digits["train"][1]
    first = fewshot.sample_few_shot(labels, 5, 0)
    np.testing.assert_array_equal(first, fewshot.sample_few_shot(labels, 5, 0))
    assert set(first.tolist()) != set(fewshot.sample_few_shot(labels, 5, 1).tolist())


def test_class_with_too_few_examples_gives_what_it_has():
    labels = np.array([0] * 30 + [1] * 3 + [2] * 30)
    index = fewshot.sample_few_shot(labels, 5, 0)
    assert np.bincount(labels[index]).tolist() == [5, 3, 5]
    assert set(np.flatnonzero(labels == 1)) <= set(index.tolist())


# --- the ridge classifier ---------------------------------------------------------------------

# 2 and 5 shots x 10 classes = 20 / 50 examples < 64 dims: dual; 10 and 25 shots: primal.
REGIMES = [2, 5, 10, 25]


# Both solvers: the device path (JAX, shape buckets) and the host path (NumPy, below host_max_size).
SOLVERS = {"device": {"host_max_size": 0}, "host": {"host_max_size": 1e30}}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shots", REGIMES)
def test_predictions_equal_plain_solve_in_float64(digits, shots, solver):
    """With 64-bit floats the eigendecomposition path equals np.linalg.solve for every λ."""
    few_x, few_y = few_shot_set(digits["train"], shots, seed=0)
    test_x = digits["test"][0]
    with jax.enable_x64(True):
        predicted = fewshot.ridge_predict(few_x.astype(np.float64), few_y,
                                          test_x.astype(np.float64), NUM_CLASSES, fewshot.L2_GRID, solver=solver)
    for l2, got in zip(fewshot.L2_GRID, predicted):
        expected = np.argmax(reference_logits(few_x, few_y, test_x, l2), axis=1)
        np.testing.assert_array_equal(got, expected, err_msg=f"l2={l2}")


@pytest.mark.parametrize("shots", REGIMES)
def test_default_float32_matches_plain_solve(digits, shots):
    """float32 (the default): exact at the protocol's λ and above; near-interpolating small λ
    on these degenerate pixel features may flip a few round-off-sized decisions."""
    few_x, few_y = few_shot_set(digits["train"], shots, seed=1)
    test_x, test_y = digits["test"]
    l2s = [2.0 ** -10, 2.0 ** -4, 1.0, 1024.0, 2.0 ** 19]
    predicted = fewshot.ridge_predict(few_x, few_y, test_x, NUM_CLASSES, l2s)
    for l2, got in zip(l2s, predicted):
        logits = reference_logits(few_x, few_y, test_x, l2)
        expected = np.argmax(logits, axis=1)
        if l2 >= 1024:
            # Exact, except where the float64 top two are tied within float32 round-off.
            top2 = np.sort(logits, axis=1)[:, -2:]
            tied = top2[:, 1] - top2[:, 0] < 1e-4 * np.abs(logits).max()
            assert np.all((got == expected) | tied), f"l2={l2}"
            assert np.mean(got != expected) <= 0.01
        else:
            # Not an input-conditioning effect (float64 solves of inputs perturbed at 2^-20 flip
            # none of these): float32 arithmetic on the near-interpolating system. How many flip
            # depends on the CPU's XLA kernels: up to 3 % on one machine, 6.8 % (5 shots, λ=2^-10)
            # on another; the host path (float64, the default at this size) is exact.
            assert np.mean(got != expected) <= 0.10, f"l2={l2}"


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shots,l2", [(5, 1024.0), (25, 1024.0), (25, 16.0), (5, 2.0 ** 15)])
def test_evaluate_cell_top1_equals_plain_solve(digits, shots, l2, solver):
    cell = {"shots": shots, "seed": 2, "l2": l2, **SOLVERS[solver]}
    result = fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES, cell)
    assert result["solver"] == solver
    few_x, few_y = few_shot_set(digits["train"], shots, seed=2)
    test_x, test_y = digits["test"]
    expected = np.mean(np.argmax(reference_logits(few_x, few_y, test_x, l2), axis=1) == test_y)
    assert result["top1"] == pytest.approx(expected, abs=1e-12)
    assert result["l2"] == l2 and result["shots"] == shots and result["seed"] == 2
    assert result["num_train"] == shots * NUM_CLASSES
    assert result["num_test"] == len(test_y)
    assert result["setting"] == f"{shots}shot" and result["l2_selection"] == "fixed"


def test_num_classes_beyond_the_labels_seen(digits):
    """Classes absent from the few-shot set still get a (−1) target column; nothing breaks."""
    result = fewshot.evaluate_features(digits["train"], None, digits["test"], 12,
                                       {"shots": 5, "seed": 0})
    assert 0.0 <= result["top1"] <= 1.0


# --- λ selection ------------------------------------------------------------------------------

def _corrupted(split):
    x, y = split
    rng = np.random.default_rng(7)
    return rng.normal(size=x.shape).astype(x.dtype), rng.permutation(y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_val_selection_picks_best_val_lambda_and_ignores_test(digits, solver):
    cell = {"shots": 10, "seed": 0, "l2_selection": "val", **SOLVERS[solver]}
    with jax.enable_x64(True):  # 64-bit so every held-out score must equal the plain solve's
        result = fewshot.evaluate_features(digits["train"], digits["val"], digits["test"],
                                           NUM_CLASSES, cell)
    assert result["solver"] == solver
    assert result["l2_grid"] == list(fewshot.L2_GRID)
    scores = np.array(result["l2_holdout_top1"])
    few_x, few_y = few_shot_set(digits["train"], 10, seed=0)
    val_x, val_y = digits["val"]
    expected = [np.mean(np.argmax(reference_logits(few_x, few_y, val_x, l2), axis=1) == val_y)
                for l2 in fewshot.L2_GRID]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    best = scores.max()
    assert result["l2"] == max(l2 for l2, s in zip(fewshot.L2_GRID, scores) if s == best)
    # test data never takes part: corrupt it completely, same λ and held-out scores
    cell_result = fewshot.evaluate_features(digits["train"], digits["val"], digits["test"],
                                            NUM_CLASSES, cell)
    other = fewshot.evaluate_features(digits["train"], digits["val"], _corrupted(digits["test"]),
                                      NUM_CLASSES, cell)
    assert other["l2"] == cell_result["l2"]
    assert other["l2_holdout_top1"] == cell_result["l2_holdout_top1"]


def test_val_selection_does_not_train_on_val(digits):
    """Changing val labels may change λ, but with λ pinned the classifier ignores val."""
    fixed = fewshot.evaluate_features(digits["train"], digits["val"], digits["test"],
                                      NUM_CLASSES, {"shots": 5, "seed": 0})
    no_val = fewshot.evaluate_features(digits["train"], None, digits["test"],
                                       NUM_CLASSES, {"shots": 5, "seed": 0})
    assert fixed == no_val


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shots", [3, 10])  # 30 examples: dual; 100 examples: primal
def test_loo_selection_equals_refitting_without_each_example(digits, shots, solver):
    cell = {"shots": shots, "seed": 0, "l2_selection": "loo", **SOLVERS[solver]}
    result = fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES, cell)
    assert result["solver"] == solver
    few_x, few_y = few_shot_set(digits["train"], shots, seed=0)
    n = len(few_y)
    for l2 in (2.0 ** 0, 2.0 ** 6, 2.0 ** 10, 2.0 ** 14):
        index = fewshot.L2_GRID.index(l2)
        assert result["l2_holdout_top1"][index] * n == pytest.approx(
            reference_loo_correct(few_x.astype(np.float64), few_y, l2))
    other = fewshot.evaluate_features(digits["train"], None, _corrupted(digits["test"]),
                                      NUM_CLASSES, cell)
    assert other["l2"] == result["l2"]
    assert other["l2_holdout_top1"] == result["l2_holdout_top1"]


# --- cells and the multi-cell return ----------------------------------------------------------

def test_default_cells_are_shots_by_seeds():
    cell_list = fewshot.cells(merge_config("fewshot", None))
    assert [(c["setting"], c["seed"]) for c in cell_list] == [
        (f"{k}shot", s) for k in (1, 5, 10, 25) for s in (0, 1, 2)]
    assert all(c["l2"] == 1024 and c["l2_selection"] == "fixed" for c in cell_list)
    assert all("seeds" not in c for c in cell_list)


def test_a_cell_is_evaluated_as_one_cell(digits):
    cell = fewshot.cells({"shots": [5], "seeds": [1]})[0]
    result = fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES, cell)
    assert result["shots"] == 5 and result["seed"] == 1 and "per_cell" not in result


def test_several_cells_give_per_cell_and_per_setting(digits):
    config = {"shots": [1, 5], "seeds": [0, 1]}
    result = fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES, config)
    assert [(c["shots"], c["seed"]) for c in result["per_cell"]] == [(1, 0), (1, 1), (5, 0), (5, 1)]
    five = [c["top1"] for c in result["per_cell"] if c["shots"] == 5]
    assert result["top1"] == pytest.approx(np.mean(five))
    assert result["setting"] == "5shot" and result["shots"] == 5 and result["seeds"] == [0, 1]
    assert result["per_setting"]["5shot"]["top1_std"] == pytest.approx(np.std(five))
    assert result["per_setting"]["1shot"]["num_seeds"] == 2
    assert result["l2"] == 1024.0
    for cell in result["per_cell"]:
        single = fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES,
                                           {"shots": cell["shots"], "seed": cell["seed"]})
        assert single == cell


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("train,message", [
    ((np.zeros(10), np.zeros(10, int)), "2-D"),
    ((np.zeros((10, 3, 2)), np.zeros(10, int)), "2-D"),
    ((np.zeros((10, 3)), np.zeros(10)), "integers"),
    ((np.zeros((10, 3)), np.zeros(9, int)), "one label per example"),
    ((np.zeros((10, 3)), np.full(10, 10)), r"\[0, 10\)"),
    ((np.zeros((10, 3)), np.full(10, -1)), r"\[0, 10\)"),
    ((np.full((10, 3), np.nan), np.zeros(10, int)), "NaN"),
    ((np.zeros((0, 3)), np.zeros(0, int)), "empty"),
    (np.zeros((10, 3)), "pair"),
])
def test_bad_input_is_a_user_error(train, message):
    test = (np.zeros((4, 3)), np.zeros(4, int))
    with pytest.raises(UserError, match=message):
        fewshot.evaluate_features(train, None, test, 10, {"shots": 1, "seed": 0})


@pytest.mark.parametrize("num_classes", [0, 2.5, True])
def test_bad_num_classes_is_a_user_error(num_classes):
    split = (np.zeros((4, 3)), np.zeros(4, int))
    with pytest.raises(UserError, match="num_classes"):
        fewshot.evaluate_features(split, None, split, num_classes, {"shots": 1, "seed": 0})


def test_mismatched_feature_widths_are_a_user_error():
    train = (np.zeros((10, 3)), np.zeros(10, int))
    with pytest.raises(UserError, match="dim"):
        fewshot.evaluate_features(train, None, (np.zeros((4, 5)), np.zeros(4, int)), 10)


@pytest.mark.parametrize("config,message", [
    ({"l2_selection": "test"}, "l2_selection"),
    ({"l2": 0}, "'l2'"),
    ({"shots": [0, 5]}, "'shots'"),
    ({"seeds": [-1]}, "seeds"),
    ({"shots": [1, 5], "l2_selection": "loo"}, "at least 2 shots"),
    ({"lambda": 3}, "no setting"),
])
def test_bad_settings_are_user_errors(config, message):
    with pytest.raises(UserError, match=message):
        fewshot.cells(merge_config("fewshot", config))


def test_val_selection_without_val_is_a_user_error(digits):
    with pytest.raises(UserError, match="needs a val split"):
        fewshot.evaluate_features(digits["train"], None, digits["test"], NUM_CLASSES,
                                  {"shots": 5, "seed": 0, "l2_selection": "val"})
