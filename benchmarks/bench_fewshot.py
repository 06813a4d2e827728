"""Few-shot ridge: vtabkit's one-eigendecomposition solve vs a plain solve per λ vs scikit-learn.

Every method solves the same problem — the protocol's design matrix (standardised few-shot
features + bias column 100) with ±1 one-hot targets — for every (shots, seed) cell and every
λ of a grid, and scores the whole synthetic test set at each λ:

- vtabkit: ``fewshot.fit_ridge`` (one eigendecomposition) then test top-1 for all λ;
- numpy:   XᵀX and XᵀY formed once per cell, then ``np.linalg.solve(XᵀX + λI, XᵀY)`` and a
  test product per λ (float64);
- sklearn: ``RidgeClassifier(alpha=λ, fit_intercept=False)`` fitted and scored per λ (float64).

Agreement is the largest |Δ top-1| against numpy over all cells and λ (all λ, and λ ≥ 1 where
float32 is not fighting near-interpolating round-off). Run by hand, e.g.

    PYTHONPATH=. python benchmarks/bench_fewshot.py                      # both configs
    PYTHONPATH=. python benchmarks/bench_fewshot.py --classes 1000 --seeds 0   # 4 cells
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from vtabkit.protocols import fewshot

SHOTS = (1, 5, 10, 25)
SEEDS = (0, 1, 2)


Split = tuple[np.ndarray, np.ndarray]


def synthetic_features(classes: int, dim: int, per_class: int, test: int,
                       seed: int = 0) -> tuple[Split, Split]:
    """Gaussian classes behind a random mixing with a decaying spectrum (pre-logits-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.25
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim) * np.geomspace(3.0, 0.1, dim)[None, :]

    def draw(labels: np.ndarray) -> np.ndarray:
        x = centres[labels] + rng.normal(size=(len(labels), dim))
        return (x @ mixing).astype(np.float32)

    train_y = np.repeat(np.arange(classes), per_class)
    test_y = rng.integers(0, classes, size=test)
    return (draw(train_y), train_y), (draw(test_y), test_y)


def design(train_x: np.ndarray, query_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train_x, query_x = train_x.astype(np.float64), query_x.astype(np.float64)
    mean, scale = train_x.mean(0), train_x.std(0) + fewshot.STD_EPS
    add_bias = lambda x: np.c_[(x - mean) / scale, np.full(len(x), fewshot.BIAS)]  # noqa: E731
    return add_bias(train_x), add_bias(query_x)


def run_vtabkit(few_x: np.ndarray, few_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                classes: int, l2s: tuple[float, ...]) -> np.ndarray:
    ridge = fewshot.fit_ridge(few_x, few_y, classes)
    return fewshot.ridge_top1(ridge, (test_x, test_y), l2s)


def run_numpy(few_x: np.ndarray, few_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              classes: int, l2s: tuple[float, ...]) -> np.ndarray:
    x, query = design(few_x, test_x)
    targets = 2.0 * np.eye(classes)[few_y] - 1.0
    gram, moment = x.T @ x, x.T @ targets
    identity = np.eye(x.shape[1])
    return np.array([np.mean(np.argmax(query @ np.linalg.solve(gram + l2 * identity, moment),
                                       axis=1) == test_y) for l2 in l2s])


def run_sklearn(few_x: np.ndarray, few_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                classes: int, l2s: tuple[float, ...]) -> np.ndarray:
    from sklearn.linear_model import RidgeClassifier

    x, query = design(few_x, test_x)
    scores = []
    for l2 in l2s:
        model = RidgeClassifier(alpha=l2, fit_intercept=False).fit(x, few_y)
        scores.append(np.mean(model.predict(query) == test_y))
    return np.array(scores)


METHODS: dict[str, Callable] = {"vtabkit": run_vtabkit, "numpy": run_numpy, "sklearn": run_sklearn}


def bench(classes: int, dim: int, test: int, methods: list[str], l2s: tuple[float, ...],
          seeds: tuple[int, ...] = SEEDS) -> None:
    train, (test_x, test_y) = synthetic_features(classes, dim, max(SHOTS), test)
    print(f"\n{classes} classes x {dim} dims, test {test}, shots {SHOTS} x seeds {seeds} x "
          f"{len(l2s)} λ ({l2s[0]:g}..{l2s[-1]:g})")
    cells = [(k, s, fewshot.sample_few_shot(train[1], k, s)) for k in SHOTS for s in seeds]
    # Warm-up: compile vtabkit's kernels for each shot count's shapes outside the timing.
    for k, s, index in cells[::len(seeds)]:
        run_vtabkit(train[0][index], train[1][index], test_x, test_y, classes, l2s)
        fewshot.ridge_top1(fewshot.fit_ridge(train[0][index], train[1][index], classes),
                           (test_x, test_y), [1024.0])
    times, scores = {}, {}
    for name in methods:
        start = time.perf_counter()
        scores[name] = np.stack([METHODS[name](train[0][i], train[1][i], test_x, test_y,
                                               classes, l2s) for _, _, i in cells])
        times[name] = time.perf_counter() - start
    start = time.perf_counter()  # the protocol as run: fixed λ = 1024, one λ per cell
    fixed = [fewshot.ridge_top1(fewshot.fit_ridge(train[0][i], train[1][i], classes),
                                (test_x, test_y), [1024.0])[0] for _, _, i in cells]
    fixed_time = time.perf_counter() - start

    large, protocol = np.asarray(l2s) >= 1.0, np.asarray(l2s) == 1024.0
    print(f"{'method':<10} {'seconds':>9} {'per cell':>9}   max|Δtop1| vs numpy: "
          f"{'all λ':>7} {'λ≥1':>7} {'λ=1024':>7}")
    for name in methods:
        delta = np.abs(scores[name] - scores["numpy"]) if "numpy" in scores \
            else np.zeros((len(cells), len(l2s)))
        print(f"{name:<10} {times[name]:9.2f} {times[name] / len(cells):9.3f}   "
              f"{'':<21}{delta.max():7.4f} {delta[:, large].max():7.4f} "
              f"{delta[:, protocol].max() if protocol.any() else float('nan'):7.4f}")
    print(f"{'vtabkit, fixed λ=1024 (protocol)':<34} {fixed_time:.2f} s for {len(cells)} cells")
    index_1024 = l2s.index(1024.0) if 1024.0 in l2s else None
    if index_1024 is not None:
        table = np.array(fixed).reshape(len(SHOTS), len(seeds))
        print("top-1 at λ=1024, mean over seeds: " + ", ".join(
            f"{k}-shot {row.mean():.3f}" for k, row in zip(SHOTS, table)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    for classes in args.classes:
        bench(classes, args.dim, args.test, args.methods, fewshot.L2_GRID, tuple(args.seeds))


if __name__ == "__main__":
    main()
