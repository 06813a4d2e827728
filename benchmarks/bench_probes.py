"""Probe cost, compile included: vtabkit against scikit-learn and CLIP_benchmark's probe, cold and warm.

Every problem runs in a fresh Python process (``--child``), so "cold" is a first call with
nothing compiled and "warm" the same call repeated in that process. JAX's persistent
compilation cache is off in the children except in the VTAB-1k phase's bucketed rows: the
first fills a temporary cache folder, the second process loads from it, as a second
``vtabkit run`` would.

Pairs, on the same features:

- logistic: vtabkit's linear probe (l2 grid on val, refit on train+val; the host path below
  its size threshold) against ``LogisticRegression(C=1/(l2·n_train))`` (lbfgs, same tol and
  max_iter, StandardScaler features, same grid, best on val with ties → stronger, refit) and
  against CLIP_benchmark's probe algorithm, written here from its description: a linear layer
  trained by AdamW (lr 0.1, batch 64, 10 epochs, cosine schedule) on standardised features,
  weight decay searched on val over 97 log-spaced values in [1e-6, 1e2] (7 coarse points, then
  4 rounds probing ±8, ±4, ±2, ±1 places around the best), refit on train+val.
- ridge: vtabkit's few-shot ridge classifier (``fewshot.ridge_predict``, λ = 1024) fitted on
  the whole train split against ``RidgeClassifier(alpha=1024)`` on StandardScaler features; the
  host or device path as the protocol's ``host_max_size`` picks it for a set of that size.
- kNN: vtabkit's k-NN probe (k from 10/20/100/200 on val, refit bank train+val) against
  ``KNeighborsClassifier`` (cosine, brute force, uniform votes, same k choice and bank). The
  "choice" column names the path (host / device) each of vtabkit's probes took.

Features: ``well`` = isotropic Gaussian class clusters (digits: the real pixels); ``ill`` = the
same features times a random rotation with singular values from 1 to 1e-4 (condition number
1e4 after standardisation can no longer undo it).

The VTAB-1k phase fits the 19 tasks' shapes (800 train / 200 val, their class counts, 768-d)
with the three probes in one process; test sets are 1,000 rows (prediction does not compile).

    nice python benchmarks/bench_probes.py                     # digits, 1k, vtab
    nice python benchmarks/bench_probes.py --only 20k          # the large size (scikit-learn takes minutes)
    nice python benchmarks/bench_probes.py --only 20k --probes ridge,knn --no-clip   # without the logistic fits
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
KS = [10, 20, 100, 200]


def clusters(n: int, dim: int, classes: int, seed: int, spread: float = 0.12):
    """Isotropic class clusters: centres shared by all splits of a problem, noise per split."""
    centres = np.random.default_rng(classes * 1000 + dim).normal(size=(classes, dim)) * spread
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def ill_conditioned(splits, dim: int):
    """The splits times one random rotation with singular values 1 .. 1e-4."""
    rng = np.random.default_rng(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mix = (q * np.logspace(0, -4, dim)) @ np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return [((x.astype(np.float64) @ mix).astype(np.float32), y) for x, y in splits]


def problem(case: str, features: str):
    if case == "digits":
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order].astype(np.float32), y[order]
        splits, classes = [(x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:])], 10
    else:
        n_train = {"1k": 800, "20k": 20000}[case]
        splits = [clusters(n_train, 768, 100, 1), clusters(n_train // 4, 768, 100, 2), clusters(2000, 768, 100, 3)]
        classes = 100
    if features == "ill":
        splits = ill_conditioned(splits, splits[0][0].shape[1])
    return (*splits, classes)


def grid() -> list[float]:
    from vtabkit.protocols import merge_config
    return sorted(merge_config("linear", None)["l2_grid"], reverse=True)


def _both(train, val):
    return np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])


def _timed(function, *args):
    started = time.perf_counter()
    out = function(*args)
    return {"s": time.perf_counter() - started, **out}


# --- vtabkit -------------------------------------------------------------------------------

def vtabkit_logistic(train, val, test, classes) -> dict:
    from vtabkit.protocols import linear
    out = linear.evaluate_features(train, val, test, classes)
    return {"top1": out["top1"], "choice": f"l2 {out['l2']:g}", "path": out["solver"]}


def vtabkit_ridge(train, val, test, classes) -> dict:
    from vtabkit.protocols import fewshot, merge_config
    from vtabkit.protocols.common import solver_for
    # The path the protocol would take for a few-shot set of this size (its host_max_size).
    solver = solver_for(train[0].size * classes, merge_config("fewshot", None)["host_max_size"])
    predicted = fewshot.ridge_predict(train[0], train[1], test[0], classes, [1024.0], solver=solver)[0]
    return {"top1": float(np.mean(predicted == test[1])), "choice": "λ 1024", "path": solver}


def vtabkit_knn(train, val, test, classes) -> dict:
    from vtabkit.protocols import knn
    out = knn.evaluate_features(train, val, test, classes)
    return {"top1": out["top1"], "choice": f"k {out['k']}", "path": out["solver"]}


# --- scikit-learn ----------------------------------------------------------------------------

def sklearn_logistic(train, val, test, classes) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, l2):
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-4, max_iter=1000)
        return scaler, model.fit(scaler.transform(x), y)

    def top1(fitted, x, y):
        return float(np.mean(fitted[1].predict(fitted[0].transform(x)) == y))

    l2s = grid()
    val_scores = [top1(fit(*train, l2), *val) for l2 in l2s]
    best = max(l2 for l2, s in zip(l2s, val_scores) if s == max(val_scores))
    return {"top1": top1(fit(*_both(train, val), best), *test), "choice": f"l2 {best:g}"}


def sklearn_ridge(train, val, test, classes) -> dict:
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(train[0])
    model = RidgeClassifier(alpha=1024.0).fit(scaler.transform(train[0]), train[1])
    return {"top1": float(np.mean(model.predict(scaler.transform(test[0])) == test[1])), "choice": "α 1024"}


def sklearn_knn(train, val, test, classes) -> dict:
    from sklearn.neighbors import KNeighborsClassifier

    def top1(bank, k, query):
        k = min(k, len(bank[1]))
        model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(*bank)
        return float(np.mean(model.predict(query[0]) == query[1]))

    scores = [top1(train, k, val) for k in KS]
    best = KS[int(np.argmax(scores))]  # first of the best: ties → smaller k, as vtabkit
    return {"top1": top1(_both(train, val), best, test), "choice": f"k {best}"}


# --- CLIP_benchmark's probe, from its description ---------------------------------------------

def clip_probe(train, val, test, classes) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from sklearn.preprocessing import StandardScaler

    batch, epochs, lr = 64, 10, 0.1

    def train_model(x, y, wd, seed=0):
        steps_per_epoch = -(-len(y) // batch)
        rng = np.random.default_rng(seed)
        # Each epoch a new permutation; the last batch wraps around to stay full-sized.
        order = np.concatenate([np.resize(rng.permutation(len(y)), steps_per_epoch * batch)
                                for _ in range(epochs)]).reshape(-1, batch)
        return _run(jnp.asarray(x), jnp.asarray(y), jnp.asarray(order), jnp.float32(wd))

    @jax.jit
    def _run(x, y, order, wd):
        schedule = optax.cosine_decay_schedule(lr, order.shape[0])
        opt = optax.adamw(schedule, weight_decay=wd)
        params = (jnp.zeros((x.shape[1], classes)), jnp.zeros(classes))

        def loss(params, idx):
            logits = x[idx] @ params[0] + params[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

        def step(carry, idx):
            params, state = carry
            grads = jax.grad(loss)(params, idx)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), order)
        return params

    def top1(params, x, y):
        return float(np.mean((x @ np.asarray(params[0]) + np.asarray(params[1])).argmax(1) == y))

    scaler = StandardScaler().fit(train[0])
    xt, xv = scaler.transform(train[0]).astype(np.float32), scaler.transform(val[0]).astype(np.float32)
    wds = np.logspace(-6, 2, 97)
    seen: dict[int, float] = {}

    def score(i):
        if i not in seen:
            seen[i] = top1(train_model(xt, train[1], wds[i]), xv, val[1])
        return seen[i]

    best = max(range(0, 97, 16), key=lambda i: (score(i), -i))
    for delta in (8, 4, 2, 1):
        candidates = [i for i in (best - delta, best, best + delta) if 0 <= i < 97]
        best = max(candidates, key=lambda i: (score(i), -i))
    x_all, y_all = _both(train, val)
    scaler = StandardScaler().fit(x_all)
    params = train_model(scaler.transform(x_all).astype(np.float32), y_all, wds[best])
    return {"top1": top1(params, scaler.transform(test[0]).astype(np.float32), test[1]),
            "choice": f"wd {wds[best]:.2g} ({len(seen)} fits)"}


# --- processes -------------------------------------------------------------------------------

def vtab_phase(counter) -> dict:
    from vtabkit.protocols import fewshot, knn, linear
    seconds = {"linear": 0.0, "fewshot": 0.0, "knn": 0.0}
    host = {"linear": 0, "fewshot": 0, "knn": 0}  # solves (fewshot: cells) done on the host path
    for name, classes in VTAB_CLASSES.items():
        seed = sum(map(ord, name))
        train, val = clusters(800, 768, classes, seed), clusters(200, 768, classes, seed + 1)
        test = clusters(1000, 768, classes, seed + 2)
        for protocol, call in [("linear", linear.evaluate_features), ("fewshot", fewshot.evaluate_features),
                               ("knn", knn.evaluate_features)]:
            started = time.perf_counter()
            out = call(train, val, test, classes)
            seconds[protocol] += time.perf_counter() - started
            host[protocol] += sum(cell["solver"] == "host" for cell in out.get("per_cell", [out]))
    return {"s": sum(seconds.values()), **{f"{k}_s": v for k, v in seconds.items()}, **counter.take(),
            "fit_path_compiles": linear.fit_path._cache_size(), "host_solves": host,
            "fewshot_cells": len(fewshot.cells(fewshot.merge_config("fewshot", None)))}


def child(args) -> dict:
    import jax
    from vtabkit import compile_cache
    from vtabkit.protocols import fewshot, knn, linear
    for module in (linear, fewshot, knn):
        module.SHAPE_BUCKETS = args.buckets == "on"
    if args.disk_cache:
        os.environ["VTABKIT_CACHE"] = args.disk_cache
        compile_cache.enable()
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    counter = compile_cache.CompileCounter()
    if args.child == "vtab":
        return vtab_phase(counter)
    train, val, test, classes = problem(args.child, args.features)
    out = {}
    for family, ours, theirs in [("logistic", vtabkit_logistic, sklearn_logistic), ("ridge", vtabkit_ridge, sklearn_ridge),
                                 ("knn", vtabkit_knn, sklearn_knn)]:
        if family not in args.probes.split(","):
            continue
        cold = _timed(ours, train, val, test, classes)
        cold.update(counter.take())
        warm = _timed(ours, train, val, test, classes)
        out[family] = {"cold": cold, "warm": warm, "sklearn": _timed(theirs, train, val, test, classes)}
    if not args.no_clip and "logistic" in out:
        out["logistic"]["clip"] = _timed(clip_probe, train, val, test, classes)
    return out


def spawn(case: str, features: str = "well", buckets: str = "on", disk_cache: str | None = None,
          no_clip: bool = False, probes: str = "logistic,ridge,knn") -> dict:
    command = [sys.executable, __file__, "--child", case, "--features", features, "--buckets", buckets,
               "--probes", probes]
    command += ["--disk-cache", disk_cache] if disk_cache else []
    command += ["--no-clip"] if no_clip else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


CASES = {"digits": "digits 800/200/797 x 64, 10 cl.", "1k": "800/200/2000 x 768, 100 cl.",
         "20k": "20000/5000/2000 x 768, 100 cl."}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["digits", "1k", "20k", "vtab"], action="append")
    parser.add_argument("--no-clip", action="store_true", help="leave out the CLIP_benchmark-style probe")
    parser.add_argument("--probes", default="logistic,ridge,knn",
                        help="comma-separated subset of logistic,ridge,knn for the size rows (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--features", default="well", choices=["well", "ill"], help=argparse.SUPPRESS)
    parser.add_argument("--buckets", default="on", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--disk-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    import jax
    print(f"backend: {jax.default_backend()}, {os.cpu_count()} CPUs")
    groups = args.only or ["digits", "1k", "vtab"]
    rows = [case for case in CASES if case in groups]
    if rows:
        print("| problem | features | probe | vtabkit top-1 % (choice) | reference top-1 % (choice) "
              "| vtabkit cold s (compiles) | vtabkit warm s | reference s | cold speed-up | warm speed-up |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for case in rows:
        for features in ("well", "ill"):
            r = spawn(case, features, no_clip=args.no_clip, probes=args.probes)
            for family, named in [("logistic", "sklearn LogisticRegression"), ("ridge", "sklearn RidgeClassifier"),
                                  ("knn", "sklearn KNeighborsClassifier"), ("logistic", "CLIP_benchmark probe")]:
                if family not in r:
                    continue
                ref = r[family]["clip" if named.startswith("CLIP") else "sklearn"] if (
                    not named.startswith("CLIP") or "clip" in r[family]) else None
                if ref is None:
                    continue
                cold, warm = r[family]["cold"], r[family]["warm"]
                path = f", {cold['path']}" if "path" in cold else ""
                print(f"| {CASES[case]} | {features} | {family} vs {named} "
                      f"| {100 * cold['top1']:.1f} ({cold['choice']}{path}) | {100 * ref['top1']:.1f} ({ref['choice']}) "
                      f"| {cold['s']:.2f} ({cold['compilations']}) | {warm['s']:.2f} | {ref['s']:.2f} "
                      f"| {ref['s'] / cold['s']:.2f}x | {ref['s'] / warm['s']:.2f}x |", flush=True)
    if "vtab" in groups:
        print("\n| VTAB-1k probe phase (19 tasks x linear, fewshot, knn; 768-d) | wall s | linear s | fewshot s "
              "| knn s | XLA compiles | fit_path compiles | host solves (linear / fewshot cells / knn) "
              "| loaded from disk cache |")
        print("|---|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as folder:
            for label, buckets, disk in [("no buckets (cold process)", "off", None),
                                         ("buckets (cold process, fills the disk cache)", "on", folder),
                                         ("buckets, second process (disk cache)", "on", folder)]:
                r = spawn("vtab", buckets=buckets, disk_cache=disk)
                print(f"| {label} | {r['s']:.1f} | {r['linear_s']:.1f} | {r['fewshot_s']:.1f} | {r['knn_s']:.1f} "
                      f"| {r['compilations']} | {r['fit_path_compiles']} "
                      f"| {r['host_solves']['linear']}/19, {r['host_solves']['fewshot']}/{19 * r['fewshot_cells']}, "
                      f"{r['host_solves']['knn']}/19 "
                      f"| {r['compile_cache_hits']} |", flush=True)


if __name__ == "__main__":
    main()
