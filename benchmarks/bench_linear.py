"""Linear probe: vtabkit (JAX, warm-started L-BFGS over the l2 grid) vs scikit-learn.

Both run the same procedure — fit each l2 of the grid on train, pick on val, refit on
train+val, score test — on the same standardised features, on this machine, in one run.
Features are synthetic class clusters in a random low-rank subspace plus noise (like frozen
features: many classes, correlated dimensions, not separable).

    python benchmarks/bench_linear.py            # VTAB-1k size and full size
    python benchmarks/bench_linear.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vtabkit.protocols import linear, merge_config


def make_features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(64, dim)) / 8.0  # shared across splits
    centres = np.random.default_rng(1).normal(size=(classes, 64))
    labels = rng.integers(0, classes, size=n)
    latent = centres[labels] + 4.0 * rng.normal(size=(n, 64))
    return (latent @ basis + 0.5 * rng.normal(size=(n, dim))).astype(np.float32), labels


def sklearn_probe(train, val, test, grid):
    def fit(x, y, l2):
        scaler = StandardScaler().fit(x)
        return scaler, LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-4, max_iter=1000).fit(scaler.transform(x), y)

    def score(fitted, x, y):
        return float(np.mean(fitted[1].predict(fitted[0].transform(x)) == y))

    val_scores = [score(fit(*train, l2), *val) for l2 in grid]
    best = max(l2 for l2, s in zip(grid, val_scores) if s == max(val_scores))
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    return score(fit(*both, best), *test), best


def bench(name: str, n_train: int, n_val: int, n_test: int, dim: int, classes: int) -> None:
    train = make_features(n_train, dim, classes, seed=10)
    val = make_features(n_val, dim, classes, seed=11)
    test = make_features(n_test, dim, classes, seed=12)
    grid = sorted(merge_config("linear", None)["l2_grid"], reverse=True)
    linear.evaluate_features(train, val, test, classes)  # compile once; measured below is the solve
    started = time.perf_counter()
    ours = linear.evaluate_features(train, val, test, classes)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs, theirs_l2 = sklearn_probe(train, val, test, grid)
    theirs_s = time.perf_counter() - started
    print(f"| {name} | {n_train}/{n_val}/{n_test} x {dim}, {classes} classes | {100 * ours['top1']:.1f} "
          f"(l2 {ours['l2']:g}) | {100 * theirs:.1f} (l2 {theirs_l2:g}) | {ours_s:.2f} | {theirs_s:.2f} "
          f"| {theirs_s / ours_s:.1f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import jax
    print(f"backend: {jax.default_backend()}, devices: {jax.device_count()}")
    print("| case | train/val/test x dim | vtabkit top-1 % | sklearn top-1 % | vtabkit s | sklearn s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    if args.quick:
        bench("1k (small)", 800, 200, 2000, 256, 20)
        return
    bench("VTAB-1k", 800, 200, 10000, 768, 100)
    bench("full", 40000, 10000, 10000, 768, 100)


if __name__ == "__main__":
    main()
