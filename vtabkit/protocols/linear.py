"""Linear probe: logistic regression on frozen features, solved in JAX.

Single-label targets get a multinomial (softmax) probe; multi-hot targets one sigmoid per
class (the sum of independent binary problems, i.e. one-vs-rest). For each l2 strength of the grid the probe is fit on train, scored on val, and the best l2
(ties → the stronger one; judged by top-1, or mAP for multi-hot targets) is refit on
train+val; the head predicts logits. Fits use full-batch
L-BFGS (optax) and run over the grid from strong to weak regularisation, each warm-started
from the previous solution, all inside one compiled function. The selection solves on the
train rows alone; the refit on train+val starts from the chosen l2's solution (re-expressed for
the refit's standardiser; ``refit_start: zeros`` starts it cold) and solves that one l2, the other
entries of its grid-sized argument doing no iterations, so it compiles with the selection's
shape wherever both fall in one shape bucket (a VTAB-1k task: 800 and 1,000 rows).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vtabkit import metrics
from vtabkit.protocols import linear_host, merge_config
from vtabkit.protocols.common import (FitContext, Number, bucket, check_list, check_setting, check_splits,
                                      headline, solver_for, target_kind)

DESCRIPTION = "logistic regression on frozen features (softmax, or sigmoid per class for multi-label); l2 on val"
INPUT = "features"
TARGETS = ("single", "multi")
VAL_FRACTION = 0.2  # share of train held out to choose l2 when the task has no val split
# Solves are padded to shape buckets (see ``common.bucket``) so that a suite of tasks with many
# sizes compiles ``fit_path`` a few times; the floors keep tiny problems from spreading over
# many small buckets. False solves at the exact shape (tests compare the two).
SHAPE_BUCKETS = True
ROW_FLOOR, WIDTH_FLOOR, CLASS_FLOOR = 256, 64, 16
REFIT_STARTS = ("selected", "zeros")


def check_config(config: dict[str, Any]) -> None:
    check_list("linear", config, "l2_grid", Number, lambda v: v > 0, "positive numbers")
    check_setting("linear", config, "max_iter", int, lambda v: v > 0, "a positive integer")
    check_setting("linear", config, "tol", Number, lambda v: v > 0, "a positive number")
    check_setting("linear", config, "gap_tol", Number, lambda v: v > 0, "a positive number")
    check_setting("linear", config, "host_max_size", Number, lambda v: v >= 0, "a number >= 0 (0: never)")
    check_setting("linear", config, "standardize", bool, expected="true or false")
    check_setting("linear", config, "refit_start", str, lambda v: v in REFIT_STARTS,
                  " or ".join(REFIT_STARTS))


def cells(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(config, setting="default", seed=0)]


def _weighted_standardizer(x, weights):
    total = weights.sum()
    mean = (weights[:, None] * x).sum(0) / total
    var = (weights[:, None] * (x - mean) ** 2).sum(0) / total
    return mean, jnp.sqrt(var) + 1e-6


def _converged(grad, value, l2, tol, gap_tol, stalled):
    """Both stopping tests: scikit-learn's (largest gradient entry <= ``tol``) and a certificate.

    The objective is at least ``l2``-strongly convex in the weights, so a point with gradient g
    is within ||g||^2 / (2 l2) of the minimum. The first test alone is scale-blind: at weak l2
    the curvature is ~l2 and a gradient of 1e-4 leaves the point far from the minimum, so a warm
    start from the previous l2 would stop at once wherever it began. The second asks that the
    bound be a ``gap_tol`` fraction of the objective, which ties the stopping point to the new
    l2's minimum whatever the start. (The unpenalised bias gets its curvature from the loss
    alone; counting it in g is conservative.) ``stalled`` waives the certificate, not the first test.
    """
    squared = sum(jnp.sum(g * g) for g in jax.tree.leaves(grad))
    largest = optax.tree.norm(grad, ord=jnp.inf)
    return (largest <= tol) & ((squared <= 2.0 * l2 * gap_tol * value) | stalled)


@partial(jax.jit, static_argnames=("num_classes", "max_iter", "standardize", "multi"))
def fit_path(x, y, weights, l2_grid, class_mask=None, start=None, num_active=None, *, num_classes: int,
             max_iter: int, tol: float, gap_tol: float, standardize: bool, multi: bool = False):
    """Fit one probe per l2 in ``l2_grid`` (descending), rows weighted by ``weights``.

    The first l2 starts from ``start`` ((W, b) in the standardised space; zeros when None), each
    later one from the previous solution. Only the first ``num_active`` entries (all when None;
    a traced value, so no recompile) are solved; the rest repeat the last solution with 0
    iterations.

    ``y`` holds int labels (softmax cross-entropy) or, with ``multi``, (N, C) multi-hot rows
    (binary cross-entropy summed over classes). ``class_mask`` (C,) marks the real classes of
    a padded problem: the others get -inf logits in the softmax and no term in the sigmoid sum,
    so their gradient is 0 and their weights stay at their 0 start. Padded rows carry weight 0;
    padded feature columns are all 0, so they standardise to 0 and add nothing either.

    Returns (W (L, D, C), b (L, C), mean (D,), scale (D,), iterations (L,)).
    """
    if standardize:
        mean, scale = _weighted_standardizer(x, weights)
    else:
        mean, scale = jnp.zeros(x.shape[1], x.dtype), jnp.ones(x.shape[1], x.dtype)
    z = (x - mean) / scale
    onehot = y.astype(x.dtype) if multi else jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    total = weights.sum()
    real = jnp.ones(num_classes, bool) if class_mask is None else class_mask

    def loss(params, l2):
        w, b = params
        logits = z @ w + b
        if multi:
            nll = jnp.where(real, jax.nn.softplus(logits) - onehot * logits, 0.0).sum(1)
        else:
            # The label term uses the unmasked logits: onehot is 0 on padded classes, and
            # 0 * -inf would be nan.
            nll = jax.nn.logsumexp(jnp.where(real, logits, -jnp.inf), axis=1) - (onehot * logits).sum(1)
        return (weights * nll).sum() / total + 0.5 * l2 * (w * w).sum()

    solver = optax.lbfgs()

    limit = len(l2_grid) if num_active is None else num_active

    def solve(params, entry):
        l2, index = entry
        objective = partial(loss, l2=l2)
        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(carry):
            params, state, _, last_value, count = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=objective)
            # Float32 can run out of digits before the certificate holds (a nearly separable
            # problem at weak l2): once a step no longer lowers the objective, the gradient
            # test alone ends the solve. It is always required, so no l2 stops earlier than
            # under scikit-learn's rule.
            stalled = (count > 0) & (value >= last_value)
            done = _converged(grad, value, l2, tol, gap_tol, stalled)
            params = optax.apply_updates(params, updates)
            return params, state, done, value, count + 1

        def keep_going(carry):
            return (carry[4] < max_iter) & ~carry[2]

        # An inactive entry starts "done": the loop runs no step and passes the params on.
        init = (params, solver.init(params), index >= limit, jnp.array(jnp.inf, x.dtype), jnp.array(0))
        params, _, _, _, count = jax.lax.while_loop(keep_going, step, init)
        return params, (params, count)

    if start is None:
        start = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros(num_classes, x.dtype))
    _, (params, counts) = jax.lax.scan(solve, tuple(start), (l2_grid, jnp.arange(len(l2_grid))))
    return params[0], params[1], mean, scale, counts


def solve_path(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2_grid: list[float], *, num_classes: int,
               max_iter: int, tol: float, gap_tol: float, standardize: bool, multi: bool = False,
               buckets: bool | None = None, start: tuple[np.ndarray, np.ndarray] | None = None,
               num_active: int | None = None) -> tuple[np.ndarray, ...]:
    """``fit_path`` on the problem padded to its shape bucket, the padding cut off the result.

    ``start``: (W (D, C), b (C,)) for the first l2, in the standardised space of this problem;
    ``num_active``: solve only the first that many l2 values (see ``fit_path``).
    """
    buckets = SHAPE_BUCKETS if buckets is None else buckets
    n, d = x.shape
    rows, width, classes = ((bucket(n, ROW_FLOOR), bucket(d, WIDTH_FLOOR), bucket(num_classes, CLASS_FLOOR))
                            if buckets else (n, d, num_classes))
    x_pad = np.zeros((rows, width), np.float32)
    x_pad[:n, :d] = x
    y_pad = np.zeros((rows, classes) if multi else rows, y.dtype)
    if multi:
        y_pad[:n, :num_classes] = y
    else:
        y_pad[:n] = y
    w_pad = np.zeros(rows, np.float32)
    w_pad[:n] = weights
    # Always passed (zeros, all), so a cold path and a warm refit share one compile per shape.
    start_w, start_b = np.zeros((width, classes), np.float32), np.zeros(classes, np.float32)
    if start is not None:
        start_w[:d, :num_classes], start_b[:num_classes] = start
    # NumPy arguments go to the device with the call (a jnp.asarray per argument would compile a
    # small transfer function for every new shape).
    out = fit_path(x_pad, y_pad, w_pad, np.asarray(l2_grid, np.float32), np.arange(classes) < num_classes,
                   (start_w, start_b), np.int32(len(l2_grid) if num_active is None else num_active),
                   num_classes=classes, max_iter=max_iter, tol=tol, gap_tol=gap_tol, standardize=standardize,
                   multi=multi)
    w, b, mean, scale, counts = (np.asarray(a) for a in out)
    return w[:, :d, :num_classes], b[:, :num_classes], mean[:d], scale[:d], counts


def choose_l2(grid: list[float], val_scores: list[float]) -> float:
    """The l2 with the best val score; among ties the strongest (the simpler model)."""
    best = max(val_scores)
    return max(l2 for l2, score in zip(grid, val_scores) if score == best)


@dataclasses.dataclass
class LinearHead:
    """A fitted probe: logits = ((x - mean) / scale) @ w + b."""

    w: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def predict(head: LinearHead, x: np.ndarray) -> np.ndarray:
    """Logits (N, C) of features ``x``."""
    return ((np.asarray(x, np.float32) - head.mean) / head.scale) @ head.w + head.b


def fit(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None, *,
        num_classes: int, target: str, config: dict[str, Any],
        context: FitContext | None = None) -> tuple[LinearHead, dict[str, Any]]:
    """Select l2 on ``val`` (fit on ``train``), refit on train+val with it.

    Without ``val``, a seeded 20% of ``train`` (no stratification) plays val, and the details
    say so (``val_source: "train_holdout"``). ``config`` is the merged settings of one cell.
    """
    (x_train, y_train), (x_val, y_val), val_source = _with_val(train, val, config)
    multi = target == "multi"
    select_by = "map" if multi else "top1"
    grid = sorted((float(l2) for l2 in config["l2_grid"]), reverse=True)  # strong → weak: warm starts
    x_all = np.concatenate([x_train, x_val]).astype(np.float32, copy=False)
    y_all = np.concatenate([y_train, y_val])
    max_iter = int(config["max_iter"])
    # Below host_max_size (examples x width x classes) a compile costs more than the solve:
    # SciPy on the host solves the same objective with the same stopping rule.
    path = solver_for(len(y_all) * x_all.shape[1] * num_classes, config["host_max_size"])
    solve = partial(linear_host.solve_path if path == "host" else solve_path, num_classes=num_classes,
                    max_iter=max_iter, tol=float(config["tol"]),
                    gap_tol=float(config["gap_tol"]),
                    standardize=bool(config["standardize"]), multi=multi)

    x_train = np.asarray(x_train, np.float32)
    w, b, mean, scale, iterations = solve(x_train, y_train, np.ones(len(y_train)), grid)
    score = metrics.get_metric(select_by).function
    val_scores = [score(predict(LinearHead(w[i], b[i], mean, scale), x_val), y_val) for i in range(len(grid))]
    best = grid.index(choose_l2(grid, val_scores))

    chosen = LinearHead(w[best], b[best], mean, scale)
    start = _restandardized(chosen, x_all, bool(config["standardize"])) if config["refit_start"] == "selected" else None
    # The l2 argument keeps the grid's length (the compiled shape); only its first entry is solved.
    w, b, mean, scale, refit_iterations = solve(x_all, y_all, np.ones(len(y_all)), [grid[best]] * len(grid),
                                                start=start, num_active=1)
    counts = [int(i) for i in iterations] + [int(refit_iterations[0])]
    details = {"l2": grid[best], "selected_by": f"val_{select_by}", "val_source": val_source,
               f"val_{select_by}": {f"{l2:.3g}": value for l2, value in zip(grid, val_scores)},
               "iterations": counts, "converged": all(count < max_iter for count in counts), "solver": path,
               "num_train": int(len(y_train)), "num_val": int(len(y_val))}
    return LinearHead(w[0], b[0], mean, scale), details


def _restandardized(head: LinearHead, x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``head``'s (W, b) for the standardiser the refit on ``x`` will use: the same logits on
    every input, so the refit starts where the selection ended."""
    if not standardize:
        return head.w, head.b
    mean, scale = linear_host.standardizer(np.asarray(x, np.float64), np.ones(len(x)))
    # ((x - m1) / s1) W1 + b1 = ((x - m2) / s2) W2 + b2  with  W2 = (s2 / s1) W1,  b2 = b1 + ((m2 - m1) / s1) W1
    w = (scale / head.scale)[:, None] * head.w
    b = head.b + ((mean - head.mean) / head.scale) @ head.w
    return w.astype(np.float32), b.astype(np.float32)


def _with_val(train, val, config):
    x_train, y_train = train
    if val is not None:
        return train, val, "val"
    order = np.random.default_rng(config.get("seed", 0)).permutation(len(y_train))
    cut = int(round((1 - VAL_FRACTION) * len(order)))
    return ((x_train[order[:cut]], y_train[order[:cut]]), (x_train[order[cut:]], y_train[order[cut:]]),
            "train_holdout")


def evaluate_features(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
                      test: tuple[np.ndarray, np.ndarray], num_classes: int,
                      config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Select l2 on ``val`` (train on ``train``), refit on train+val, score ``test``.

    Without ``val``, 20% of ``train`` (a seeded, stratification-free hold-out) plays val.
    Returns ``top1`` (test; ``map`` for multi-hot labels), ``l2``, the val score per l2 and
    solver iterations.
    """
    config = merge_config("linear", config)
    train, val, test, num_classes = check_splits(train, val, test, num_classes)
    head, details = fit(train, val, num_classes=num_classes, target=target_kind(train[1]), config=config)
    return {**headline(predict(head, test[0]), test[1]), **details, "num_test": int(len(test[1]))}
