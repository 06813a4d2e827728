"""Multi-label linear probe on BigEarthNet-sized features: vtabkit vs scikit-learn one-vs-rest.

Features: 768-dim, 43 labels, a 10,000-example test set, train regimes of the first 1,000 and
50,000 examples (the paper's low-data end and a full-train-sized fit), val 5,000. Synthetic:
each label has a direction in a 64-dim latent space; an example's latent is the sum of its
labels' directions plus noise, projected to 768 dims plus noise. Label frequencies are skewed
like BigEarthNet's (a few labels in half the patches, most in a few percent; ~3 labels each).

Both sides run the same procedure — fit every l2 of the grid on train, choose by val mAP, refit
on train+val, score test mAP — on the same standardised features. vtabkit's objective per class
is (1/n) sum BCE + l2/2 ||w||^2, i.e. scikit-learn's LogisticRegression with C = 1/(n l2) per
class (OneVsRestClassifier). Both are scored by `vtabkit.metrics` ``map``.

    PYTHONPATH=. python benchmarks/bench_multilabel.py                       # both regimes, full grid
    PYTHONPATH=. python benchmarks/bench_multilabel.py --sizes 1000          # the small regime only
    PYTHONPATH=. python benchmarks/bench_multilabel.py --sizes 50000 --sklearn-grid chosen

``--sklearn-grid chosen`` fits scikit-learn only at the l2 vtabkit chose (one refit on
train+val instead of the grid plus a refit): on 2 CPU cores the full grid at 50,000 takes hours.
The table says which was run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CLASSES, DIM, LATENT = 43, 768, 64


def label_frequencies() -> np.ndarray:
    ranks = np.arange(1, CLASSES + 1)
    return np.clip(0.55 * ranks ** -0.8, 0.01, None)


def make_features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(0).normal(size=(CLASSES, LATENT))  # shared by all splits
    basis = np.random.default_rng(1).normal(size=(LATENT, DIM)) / 8.0
    labels = (rng.random((n, CLASSES)) < label_frequencies()).astype(np.uint8)
    latent = labels @ directions + 3.0 * rng.normal(size=(n, LATENT))
    features = latent @ basis + 0.5 * rng.normal(size=(n, DIM))
    return features.astype(np.float32), labels


def sklearn_probe(train, val, test, grid, chosen: float | None):
    """scikit-learn's one-vs-rest logistic regression through the same procedure (or, given
    ``chosen``, only the refit on train+val at that l2); returns (test mAP, l2, seconds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    from vtabkit import metrics

    score = metrics.get_metric("map").function

    def fit(x, y, l2):
        scaler = StandardScaler().fit(x)
        model = OneVsRestClassifier(LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-4, max_iter=1000))
        return scaler, model.fit(scaler.transform(x), y)

    def evaluate(fitted, x, y):
        return float(score(fitted[1].decision_function(fitted[0].transform(x)), y))

    started = time.perf_counter()
    if chosen is None:
        val_scores = [evaluate(fit(*train, l2), *val) for l2 in grid]
        best = max(l2 for l2, s in zip(grid, val_scores) if s == max(val_scores))
    else:
        best = chosen
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    result = evaluate(fit(*both, best), *test)
    return result, best, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,50000", help="train regimes (first N examples)")
    parser.add_argument("--val", type=int, default=5000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--sklearn-grid", choices=["full", "chosen"], default="full")
    args = parser.parse_args()

    from vtabkit.protocols import linear, merge_config

    grid = sorted(merge_config("linear", None)["l2_grid"], reverse=True)
    sizes = [int(size) for size in args.sizes.split(",")]
    train_all = make_features(max(sizes), seed=10)
    val, test = make_features(args.val, seed=11), make_features(args.test, seed=12)
    print(f"{os.cpu_count()} CPUs; grid {grid}; val {args.val}, test {args.test} x {DIM}, {CLASSES} labels "
          f"(mean {train_all[1].mean() * CLASSES:.1f} per example)")
    print("| train N | vtabkit mAP (l2) | vtabkit s (solver) | sklearn OvR mAP (l2) | sklearn s | sklearn ran |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        train = (train_all[0][:size], train_all[1][:size])  # the first N, as the first:N regime
        linear.evaluate_features(train, val, test, CLASSES)  # compile once (device path); timed below
        started = time.perf_counter()
        ours = linear.evaluate_features(train, val, test, CLASSES)
        ours_s = time.perf_counter() - started
        chosen = ours["l2"] if args.sklearn_grid == "chosen" else None
        theirs, theirs_l2, theirs_s = sklearn_probe(train, val, test, grid, chosen)
        ran = "grid + refit" if chosen is None else "refit at vtabkit's l2 only"
        print(f"| {size} | {100 * ours['map']:.2f} ({ours['l2']:g}) | {ours_s:.1f} ({ours['solver']}) | "
              f"{100 * theirs:.2f} ({theirs_l2:g}) | {theirs_s:.1f} | {ran} |", flush=True)


if __name__ == "__main__":
    main()
