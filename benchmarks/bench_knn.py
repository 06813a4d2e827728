"""k-NN: vtabkit's chunked jax k-NN vs scikit-learn KNeighborsClassifier (cosine, brute force).

Both run the DINO rule — the k most cosine-similar train examples vote with weight
exp(similarity / 0.07) — for k in 10/20/100/200 on synthetic features. scikit-learn gets a
callable ``weights`` (its distances are 1 − cosine similarity) and one fit/predict per k, as a
user would run it; vtabkit scores all k from one top-200 pass. Agreement is the fraction of
identical test predictions and |Δ top-1|. Run by hand, e.g.

    PYTHONPATH=. python benchmarks/bench_knn.py                                   # 50k x 10k x 768
    PYTHONPATH=. python benchmarks/bench_knn.py --train 20000 --test 5000 --chunk-size 512
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vtabkit.protocols import knn

KS = (10, 20, 100, 200)
TEMPERATURE = 0.07


def synthetic_features(classes: int, dim: int, train: int, test: int, seed: int = 0
                       ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Gaussian classes behind a random mixing with a decaying spectrum (pre-logits-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.4
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim) * np.geomspace(3.0, 0.1, dim)[None, :]

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, size=count)
        x = (centres[labels] + rng.normal(size=(count, dim))) @ mixing
        return x.astype(np.float32), labels

    return draw(train), draw(test)


def dino_weights(distances: np.ndarray) -> np.ndarray:
    # scikit-learn's cosine distance is 1 - cosine similarity.
    return np.exp((1.0 - distances) / TEMPERATURE)


def run_sklearn(train: tuple[np.ndarray, np.ndarray], test_x: np.ndarray) -> dict[int, np.ndarray]:
    from sklearn.neighbors import KNeighborsClassifier

    predictions = {}
    for k in KS:
        model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                     weights=dino_weights, n_jobs=-1)
        predictions[k] = model.fit(*train).predict(test_x)
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    train, (test_x, test_y) = synthetic_features(args.classes, args.dim, args.train, args.test)
    print(f"{args.train} train x {args.test} test x {args.dim} dims, {args.classes} classes, "
          f"k in {KS}, chunk_size {args.chunk_size}")
    # Warm-up on a slice of the same shapes so compilation is not timed.
    knn.knn_predict(*train, test_x[:args.chunk_size], args.classes, KS, TEMPERATURE,
                    args.chunk_size)
    start = time.perf_counter()
    ours = knn.knn_predict(*train, test_x, args.classes, KS, TEMPERATURE, args.chunk_size)
    ours_time = time.perf_counter() - start
    print(f"{'method':<9} {'seconds':>8}  " + "  ".join(f"top1@{k:<4}" for k in KS))
    print(f"{'vtabkit':<9} {ours_time:8.2f}  " + "  ".join(
        f"{np.mean(ours[k] == test_y):9.4f}" for k in KS))
    if args.skip_sklearn:
        return
    start = time.perf_counter()
    theirs = run_sklearn(train, test_x)
    theirs_time = time.perf_counter() - start
    print(f"{'sklearn':<9} {theirs_time:8.2f}  " + "  ".join(
        f"{np.mean(theirs[k] == test_y):9.4f}" for k in KS))
    print(f"{'agree':<9} {'':8}  " + "  ".join(
        f"{np.mean(ours[k] == theirs[k]):9.4f}" for k in KS)
        + "   (fraction of identical predictions)")
    print(f"speed-up {theirs_time / ours_time:.1f}x")


if __name__ == "__main__":
    main()
