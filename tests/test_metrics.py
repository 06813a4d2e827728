"""vtabkit.metrics against independent implementations (scikit-learn, scipy, python loops)."""

import math
import warnings

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import (average_precision_score, balanced_accuracy_score, f1_score, log_loss,
                             top_k_accuracy_score)

from vtabkit import metrics
from vtabkit.errors import UserError

SEEDS = [0, 1, 2, 3]


def single(seed, n=300, c=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)) * 2.0, rng.integers(0, c, size=n)


def one_line_error(function, *args, **kwargs):
    with pytest.raises(UserError) as caught:
        function(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def test_registry_lists_the_documented_metrics():
    names = ["brier", "ece", "map", "mean_per_class_recall", "micro_f1", "nll", "real_top1", "top1", "top5"]
    assert metrics.list_metrics() == names
    assert [metrics.get_metric(n).higher_is_better for n in ("top1", "nll", "brier", "ece")] == [True, False, False, False]
    assert metrics.get_metric("map").targets == ("multi",)
    assert metrics.get_metric("real_top1").targets == ("set",)
    assert all(metrics.get_metric(n).description for n in names)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k, name", [(1, "top1"), (5, "top5")])
def test_top_k_matches_sklearn(seed, k, name):
    scores, labels = single(seed)  # continuous scores: no ties, where sklearn's tie rule would differ
    expected = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(scores.shape[1]))
    assert metrics.get_metric(name).function(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_ties_rank_the_lower_class_index_first():
    scores = np.round(np.random.default_rng(5).normal(size=(400, 8)))  # many ties
    labels = np.random.default_rng(6).integers(0, 8, size=400)
    ranks = [sorted(range(8), key=lambda c: (-row[c], c)).index(y) for row, y in zip(scores, labels)]
    assert metrics.top1(scores, labels) == pytest.approx(np.mean(np.array(ranks) < 1))
    assert metrics.top5(scores, labels) == pytest.approx(np.mean(np.array(ranks) < 5))


def test_top5_with_fewer_than_five_classes_is_top_c():
    scores, labels = single(0, c=3)
    assert metrics.top5(scores, labels) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_nll_matches_sklearn_log_loss(seed):
    scores, labels = single(seed)
    expected = log_loss(labels, softmax(scores, axis=1), labels=np.arange(scores.shape[1]))
    assert metrics.nll(scores, labels) == pytest.approx(expected, rel=1e-9)


def test_nll_is_stable_for_huge_scores():
    scores = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert metrics.nll(scores, np.array([1, 1])) == pytest.approx(500.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_matches_a_loop(seed):
    scores, labels = single(seed)
    total = 0.0
    for row, y in zip(scores, labels):
        p = [math.exp(s) for s in row]
        p = [v / sum(p) for v in p]
        total += sum((pc - (c == y)) ** 2 for c, pc in enumerate(p))
    assert metrics.brier(scores, labels) == pytest.approx(total / len(labels), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_matches_a_brute_force_loop(seed):
    scores, labels = single(seed, c=4)
    confidence = softmax(scores, axis=1).max(1)
    correct = scores.argmax(1) == labels
    # Put some confidences exactly on bin edges (scores whose softmax max is k/15 are awkward
    # to build, so the reduction is tested on them directly).
    confidence[:20] = np.arange(20) % 16 / 15
    confidence[:20] = np.maximum(confidence[:20], 1 / 15)
    total = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        members = [i for i, p in enumerate(confidence) if (low < p <= high) or (b == 0 and p == 0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            mean_confidence = sum(confidence[i] for i in members) / len(members)
            total += abs(accuracy - mean_confidence) * len(members) / len(confidence)
    assert metrics.ece_from(confidence, correct) == pytest.approx(total, abs=1e-12)
    # and the metric itself on the untouched scores
    confidence = softmax(scores, axis=1).max(1)
    expected = sum(abs(np.mean(correct[m]) - np.mean(confidence[m])) * m.mean()
                   for b in range(15) if (m := (confidence > b / 15) & (confidence <= (b + 1) / 15)).any())
    assert metrics.ece(scores, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_real_top1_matches_a_loop_over_sets(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(200, 10))
    sets = np.full((200, 3), -1)
    for i in range(200):
        size = rng.integers(0, 4)  # 0 = empty set, left out
        sets[i, :size] = rng.choice(10, size=size, replace=False)
    hits, counted = 0, 0
    for row, labels in zip(scores, sets):
        accepted = {int(v) for v in labels if v >= 0}
        if accepted:
            counted += 1
            hits += int(np.argmax(row)) in accepted
    assert metrics.real_top1(scores, sets) == pytest.approx(hits / counted)


@pytest.mark.parametrize("seed", SEEDS)
def test_map_matches_sklearn_per_class_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(250, 9)), 1)  # rounding makes ties
    targets = (rng.random((250, 9)) < 0.2).astype(int)
    targets[:, 3] = 0  # a class without positives is left out of the mean
    per_class = [average_precision_score(targets[:, c], scores[:, c]) for c in range(9) if targets[:, c].any()]
    assert metrics.get_metric("map").function(scores, targets) == pytest.approx(np.mean(per_class), abs=1e-12)
    assert metrics.get_metric("map").function(scores, targets.astype(bool)) == pytest.approx(np.mean(per_class))


def test_map_over_many_classes_uses_every_block():
    rng = np.random.default_rng(9)
    scores, targets = rng.normal(size=(60, 150)), (rng.random((60, 150)) < 0.1).astype(int)
    per_class = [average_precision_score(targets[:, c], scores[:, c]) for c in range(150) if targets[:, c].any()]
    assert metrics.get_metric("map").function(scores, targets) == pytest.approx(np.mean(per_class), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_micro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(200, 7)))  # many exact zeros: sigmoid 0.5 is a negative
    targets = (rng.random((200, 7)) < 0.3).astype(int)
    expected = f1_score(targets, (scores > 0).astype(int), average="micro")
    assert metrics.micro_f1(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_micro_f1_without_any_positive_is_zero_like_sklearn():
    targets = np.zeros((5, 3), int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = f1_score(targets, targets, average="micro")
    assert metrics.micro_f1(-np.ones((5, 3)), targets) == expected == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_per_class_recall_matches_balanced_accuracy(seed):
    scores, labels = single(seed, n=150, c=20)
    labels[labels == 7] = 8  # a class absent from the targets (but maybe predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y_true
        expected = balanced_accuracy_score(labels, scores.argmax(1))
    assert metrics.mean_per_class_recall(scores, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_grouped_matches_a_loop(seed):
    scores, labels = single(seed)
    groups = np.random.default_rng(seed + 100).choice(["small", "large", "huge"], size=len(labels))
    mean, per_group = metrics.grouped("nll", scores, labels, groups)
    expected = {g: metrics.nll(scores[groups == g], labels[groups == g]) for g in sorted(set(groups))}
    assert list(per_group) == ["huge", "large", "small"]
    assert per_group == pytest.approx(expected)
    assert mean == pytest.approx(np.mean(list(expected.values())))


def test_grouped_keys_are_str_of_values_in_value_order():
    scores, labels = single(0, n=60)
    groups = np.tile([10, 2, 33], 20)
    _, per_group = metrics.grouped("top1", scores, labels, groups)
    assert list(per_group) == ["2", "10", "33"]


def test_compute_plain_and_grouped_specs():
    scores, labels = single(1)
    size = np.arange(len(labels)) % 4
    values, groups = metrics.compute(["top1", "top1@size", "ece"], scores, labels, target_kind="single",
                                     metadata={"size": size})
    assert list(values) == ["top1", "top1@size", "ece"]
    assert values["top1"] == metrics.top1(scores, labels)
    assert values["ece"] == metrics.ece(scores, labels)
    assert list(groups) == ["top1@size"]
    assert groups["top1@size"] == {str(g): metrics.top1(scores[size == g], labels[size == g]) for g in range(4)}
    assert values["top1@size"] == pytest.approx(np.mean(list(groups["top1@size"].values())))


def test_parse_spec():
    assert metrics.parse_spec("top1") == ("top1", None)
    assert metrics.parse_spec("ece@object_size") == ("ece", "object_size")
    for bad in ["", "top1@", "top1@a@b", 3, "nope", "nope@x"]:
        one_line_error(metrics.parse_spec, bad)
    assert "known metrics: brier, ece" in one_line_error(metrics.parse_spec, "nope")


def test_check_specs():
    metrics.check_specs(["top1", "nll@size"], "single", "tasks/x.yaml")
    assert "tasks/x.yaml" in one_line_error(metrics.check_specs, ["map"], "single", "tasks/x.yaml")
    assert "tasks/x.yaml" in one_line_error(metrics.check_specs, ["top1@"], "single", "tasks/x.yaml")
    assert "tasks/x.yaml" in one_line_error(metrics.check_specs, "top1", "single", "tasks/x.yaml")
    assert "tasks/x.yaml" in one_line_error(metrics.check_specs, [], "single", "tasks/x.yaml")
    assert "tasks/x.yaml" in one_line_error(metrics.check_specs, ["top1"], "pairs", "tasks/x.yaml")


def test_every_user_error_is_one_line():
    scores, labels = single(0, n=20, c=4)
    multi = np.zeros((20, 4), int)
    cases = [
        (metrics.get_metric, "nope"),
        (metrics.top1, np.zeros(3), labels),                      # scores not 2-D
        (metrics.top1, np.zeros((0, 4)), labels[:0]),             # empty
        (metrics.top1, np.full((20, 4), "a"), labels),            # not numbers
        (metrics.top1, np.full((20, 4), np.nan), labels),         # not finite
        (metrics.top1, scores, labels[:5]),                       # wrong length
        (metrics.top1, scores, labels.astype(float)),             # not ints
        (metrics.top1, scores, labels + 4),                       # out of range
        (metrics.top1, scores, multi),                            # multi-hot to a single-label metric
        (metrics.micro_f1, scores, labels),                       # single to a multi-hot metric
        (metrics.micro_f1, scores, multi + 2),                    # not 0/1
        (metrics.real_top1, scores, labels),                      # not 2-D
        (metrics.real_top1, scores, np.full((20, 2), 9)),         # out of range
        (metrics.real_top1, scores, np.full((20, 2), -1)),        # every set empty
        (metrics.get_metric("map").function, scores, multi),      # no positives
        (metrics.check_targets, labels, "pairs", 20, 4),          # unknown kind
        (metrics.grouped, "top1", scores, labels, np.arange(5)),  # groups of the wrong length
        (metrics.grouped, "top1", scores, labels, np.array([1, "a"] * 10, dtype=object)),  # unsortable
        (metrics.over_groups, len, np.zeros((2, 2))),
        (metrics.compute, ["top1@size"], scores, labels),         # (target_kind below)
        (metrics.compute, ["map"], scores, labels),
        (metrics.compute, ["top1@size"], scores, labels),
    ]
    kinds = {19: {"target_kind": "single"}, 20: {"target_kind": "single"},
             21: {"target_kind": "single", "metadata": {"size": np.arange(3)}}}
    for i, (function, *args) in enumerate(cases):
        one_line_error(function, *args, **kinds.get(i, {}))
    assert "'size'" in one_line_error(metrics.compute, ["top1@size"], scores, labels, target_kind="single",
                                      metadata={"colour": labels})


def test_register_metric_rejects_duplicates_and_unknown_kinds(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    one_line_error(metrics.register_metric("top1"), lambda s, t: 0.0)
    one_line_error(metrics.register_metric, "x", targets=("pairs",))

    @metrics.register_metric("always_half", higher_is_better=False, targets=("single", "set"))
    def always_half(scores, targets):
        """Half, whatever the input."""
        return 0.5

    metric = metrics.get_metric("always_half")
    assert (metric.targets, metric.higher_is_better, metric.description) == (("single", "set"), False,
                                                                             "Half, whatever the input.")
