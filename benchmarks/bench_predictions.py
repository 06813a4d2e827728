"""Predictions and metrics: their cost next to the linear probe, and the predictions' size.

(a) on a 50,000 x 1000 eval set: `predictions.compact` + `predictions.save` + the single-label
    metrics (top1, top5, ece, nll, brier, mean_per_class_recall), once through
    `metrics.compute` on the scores and once through `predictions.recompute` on what was stored;
(b) the linear probe on 768-d features in the same run: train 10,000 (10 per class), val 2,000,
    test 50,000, 1000 classes (`vtabkit.protocols.linear.evaluate_features`, compile included);
then the predictions file size for the 19 VTAB-1k test sets (random float32 scores).

    PYTHONPATH=. python benchmarks/bench_predictions.py            # all of it
    PYTHONPATH=. python benchmarks/bench_predictions.py --no-probe # (a) and the sizes only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from vtabkit import metrics, predictions

SPECS = ["top1", "top5", "ece", "nll", "brier", "mean_per_class_recall"]

# VTAB-1k test sets: (task, test examples, classes), from shared/reference/vtab.md split sizes.
VTAB1K_TEST = [
    ("caltech101", 6084, 102), ("cifar100", 10000, 100), ("dtd", 1880, 47), ("flowers102", 6149, 102),
    ("pets", 3669, 37), ("sun397", 21750, 397), ("svhn", 26032, 10), ("camelyon", 32768, 2),
    ("eurosat", 5400, 10), ("resisc45", 6300, 45), ("retinopathy", 42670, 5), ("clevr_count", 15000, 8),
    ("clevr_dist", 15000, 6), ("dmlab", 22735, 6), ("dsprites_loc", 73728, 16), ("dsprites_ori", 73728, 16),
    ("kitti_dist", 711, 4), ("smallnorb_azi", 12150, 18), ("smallnorb_ele", 12150, 9),
]


def tfds_ids(task: str, n: int) -> np.ndarray:
    # Shaped like TFDS example ids ("<dataset>-<split>.tfrecord-<shard>-of-<shards>__<index>").
    per_shard = -(-n // 16)
    return np.array([f"{task}-test.tfrecord-{i // per_shard:05d}-of-00016__{i % per_shard}" for i in range(n)])


def features(n: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    # Class clusters in a random 64-d subspace plus noise, as in bench_linear.py.
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(64, 768)) / 8.0
    centres = np.random.default_rng(1).normal(size=(1000, 64))
    labels = rng.integers(0, 1000, size=n) if labels is None else labels
    latent = centres[labels] + 4.0 * rng.normal(size=(n, 64))
    return (latent @ basis + 0.5 * rng.normal(size=(n, 768))).astype(np.float32), labels


def store_and_score(folder: str, scores: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    timings = {}
    started = time.perf_counter()
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    timings["compact"] = time.perf_counter() - started
    started = time.perf_counter()
    predictions.save(os.path.join(folder, "p.npz"), arrays)
    timings["save"] = time.perf_counter() - started
    started = time.perf_counter()
    direct = metrics.compute(SPECS, scores, labels, target_kind="single")[0]
    timings["metrics.compute"] = time.perf_counter() - started
    started = time.perf_counter()
    stored = predictions.recompute(SPECS, arrays)[0]
    timings["predictions.recompute"] = time.perf_counter() - started
    assert all(abs(direct[k] - stored[k]) < 1e-9 for k in SPECS), (direct, stored)
    timings["size_mb"] = os.path.getsize(os.path.join(folder, "p.npz")) / 1e6
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-probe", action="store_true", help="skip (b), the linear probe")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench_predictions-")

    rng = np.random.default_rng(0)
    scores = (3.0 * rng.normal(size=(50_000, 1000))).astype(np.float32)
    labels = rng.integers(0, 1000, size=50_000)
    ids = tfds_ids("imagenet", 50_000)
    t = store_and_score(folder, scores, labels, ids)
    stored_path = t["compact"] + t["save"] + t["predictions.recompute"]
    direct_path = t["compact"] + t["save"] + t["metrics.compute"]
    print(f"(a) 50000 x 1000: compact {t['compact']:.2f} s, save {t['save']:.2f} s ({t['size_mb']:.2f} MB), "
          f"metrics.compute {t['metrics.compute']:.2f} s, predictions.recompute {t['predictions.recompute']:.3f} s")
    print(f"    compact + save + metrics from the stored form: {stored_path:.2f} s; "
          f"with metrics.compute on the scores instead: {direct_path:.2f} s")

    if not args.no_probe:
        from vtabkit.protocols import linear

        train = features(10_000, 10, np.repeat(np.arange(1000), 10))
        val, test = features(2_000, 11), features(50_000, 12)
        started = time.perf_counter()
        result = linear.evaluate_features(train, val, test, 1000)
        probe = time.perf_counter() - started
        print(f"(b) linear probe 10000/2000/50000 x 768, 1000 classes: {probe:.1f} s "
              f"(top1 {result['top1']:.3f}, l2 {result['l2']:g}, iterations {sum(result['iterations'])})")
        print(f"    ratio (a)/(b): {100 * stored_path / probe:.2f} % (stored form), "
              f"{100 * direct_path / probe:.2f} % (metrics.compute)")

    total = 0.0
    print("\n| task | test x classes | stored form | MB |\n|---|---|---|---|")
    for task, n, c in VTAB1K_TEST:
        task_rng = np.random.default_rng(n)
        arrays = predictions.compact(tfds_ids(task, n), (3.0 * task_rng.normal(size=(n, c))).astype(np.float32),
                                     task_rng.integers(0, c, size=n), target_kind="single")
        path = os.path.join(folder, f"{task}.npz")
        predictions.save(path, arrays)
        size = os.path.getsize(path) / 1e6
        total += size
        print(f"| {task} | {n} x {c} | {'scores' if 'scores' in arrays else 'top-5'} | {size:.2f} |")
    print(f"| **all 19** | | | **{total:.1f}** |")


if __name__ == "__main__":
    main()
