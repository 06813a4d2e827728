"""Probe cost, compile included: vtabkit's linear probe vs scikit-learn, cold and warm.

Every measurement runs in a fresh Python process (``--child``), so "cold" is a first call
with nothing compiled and "warm" the same call repeated in that process. JAX's persistent
compilation cache is off in the children except in the VTAB-1k phase's bucketed rows: the
first fills a temporary cache folder, the second process loads from it, as a second
``vtabkit run`` would.

Both sides run the same procedure: each l2 of vtabkit's default grid fit on train (for
scikit-learn ``LogisticRegression(C=1/(l2·n_train))``, lbfgs, same tol and max_iter, on
StandardScaler features), best on val (ties → stronger), refit on train+val, top-1 on test.
Features are well conditioned: isotropic Gaussian class clusters.

The VTAB-1k phase fits the 19 tasks' shapes (800 train / 200 val, their class counts, 768-d)
in one process, with shape buckets off and on; test sets are 1,000 rows (not the tasks'
real sizes: prediction is a NumPy matmul and does not compile).

    python benchmarks/bench_probes.py              # every row (about 10 minutes on 2 cores)
    python benchmarks/bench_probes.py --only vtab  # one group: digits, 1k, 20k, vtab
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# Class counts of the 19 VTAB-1k tasks (shared/reference/vtab.md), in the suite's order.
VTAB_CLASSES = {"caltech101": 102, "cifar100": 100, "dtd": 47, "flowers102": 102, "pets": 37, "sun397": 397,
                "svhn": 10, "camelyon": 2, "eurosat": 10, "resisc45": 45, "retinopathy": 5, "clevr_count": 8,
                "clevr_dist": 6, "dmlab": 6, "dsprites_loc": 16, "dsprites_ori": 16, "kitti_dist": 4,
                "smallnorb_azi": 18, "smallnorb_ele": 9}


def clusters(n: int, dim: int, classes: int, seed: int, spread: float = 0.12):
    """Isotropic class clusters: centres shared by all splits of a problem, noise per split."""
    centres = np.random.default_rng(classes * 1000 + dim).normal(size=(classes, dim)) * spread
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def problem(case: str):
    if case == "digits":
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order].astype(np.float32), y[order]
        return (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:]), 10
    n_train = {"1k": 800, "20k": 20000}[case]
    n_val = n_train // 4
    return (clusters(n_train, 768, 100, 1), clusters(n_val, 768, 100, 2), clusters(2000, 768, 100, 3), 100)


def grid() -> list[float]:
    from vtabkit.protocols import merge_config
    return sorted(merge_config("linear", None)["l2_grid"], reverse=True)


def sklearn_probe(train, val, test) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, l2):
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-4, max_iter=1000)
        return scaler, model.fit(scaler.transform(x), y)

    def top1(fitted, x, y):
        return float(np.mean(fitted[1].predict(fitted[0].transform(x)) == y))

    started = time.perf_counter()
    l2s = grid()
    val_scores = [top1(fit(*train, l2), *val) for l2 in l2s]
    best = max(l2 for l2, s in zip(l2s, val_scores) if s == max(val_scores))
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    score = top1(fit(*both, best), *test)
    return {"s": time.perf_counter() - started, "top1": score, "l2": best}


def vtabkit_probe(train, val, test, classes) -> dict:
    from vtabkit.protocols import linear
    started = time.perf_counter()
    out = linear.evaluate_features(train, val, test, classes)
    return {"s": time.perf_counter() - started, "top1": out["top1"], "l2": out["l2"]}


def child(args) -> dict:
    import jax
    from vtabkit import compile_cache
    from vtabkit.protocols import linear
    linear.SHAPE_BUCKETS = args.buckets == "on"
    if args.disk_cache:
        os.environ["VTABKIT_CACHE"] = args.disk_cache
        compile_cache.enable()
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    counter = compile_cache.CompileCounter()
    if args.child == "vtab":
        started = time.perf_counter()
        for name, classes in VTAB_CLASSES.items():
            seed = sum(map(ord, name))
            train, val = clusters(800, 768, classes, seed), clusters(200, 768, classes, seed + 1)
            vtabkit_probe(train, val, clusters(1000, 768, classes, seed + 2), classes)
        return {"s": time.perf_counter() - started, **counter.take(),
                "fit_path_compiles": linear.fit_path._cache_size()}
    train, val, test, classes = problem(args.child)
    cold = vtabkit_probe(train, val, test, classes)
    cold.update(counter.take())
    warm = vtabkit_probe(train, val, test, classes)
    return {"cold": cold, "warm": warm, "sklearn": sklearn_probe(train, val, test)}


def spawn(case: str, buckets: str = "on", disk_cache: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", case, "--buckets", buckets]
    if disk_cache:
        command += ["--disk-cache", disk_cache]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["digits", "1k", "20k", "vtab"], action="append")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--buckets", default="on", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--disk-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    import jax
    print(f"backend: {jax.default_backend()}, {os.cpu_count()} CPUs")
    groups = args.only or ["digits", "1k", "vtab"]  # 20k only when asked: sklearn alone takes minutes
    cases = {"digits": "digits 800/200/797 x 64, 10 classes", "1k": "800/200/2000 x 768, 100 classes",
             "20k": "20000/5000/2000 x 768, 100 classes"}
    rows = [case for case in cases if case in groups]
    if rows:
        print("| problem | vtabkit top-1 % (l2) | sklearn top-1 % (l2) | vtabkit cold s (compiles) "
              "| vtabkit warm s | sklearn s | cold speed-up | warm speed-up |")
        print("|---|---|---|---|---|---|---|---|")
    for case in rows:
        r = spawn(case)
        cold, warm, sk = r["cold"], r["warm"], r["sklearn"]
        print(f"| {cases[case]} | {100 * cold['top1']:.1f} ({cold['l2']:g}) | {100 * sk['top1']:.1f} ({sk['l2']:g}) "
              f"| {cold['s']:.2f} ({cold['compilations']}) | {warm['s']:.2f} | {sk['s']:.2f} "
              f"| {sk['s'] / cold['s']:.2f}x | {sk['s'] / warm['s']:.2f}x |", flush=True)
    if "vtab" in groups:
        print("\n| VTAB-1k probe phase (19 tasks, 768-d) | wall s | XLA compiles | fit_path compiles "
              "| loaded from disk cache |")
        print("|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as folder:
            for label, buckets, disk in [("no buckets (cold process)", "off", None),
                                         ("buckets (cold process, fills the disk cache)", "on", folder),
                                         ("buckets, second process (disk cache)", "on", folder)]:
                r = spawn("vtab", buckets, disk)
                print(f"| {label} | {r['s']:.1f} | {r['compilations']} | {r['fit_path_compiles']} "
                      f"| {r['compile_cache_hits']} |", flush=True)


if __name__ == "__main__":
    main()
