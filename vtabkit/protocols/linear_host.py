"""The linear probe's l2 path solved on the host (NumPy + SciPy), for problems too small to pay for a compile.

Same objective, standardiser, warm-started path and stopping rule as ``linear.fit_path``:
weighted mean cross-entropy (softmax, or summed sigmoids for multi-hot rows) + l2/2 ||W||^2,
bias unpenalised; each l2 stops when the largest gradient entry is <= ``tol`` and the
strong-convexity bound ||g||^2 / (2 l2) is <= ``gap_tol`` times the objective (waived once a
step no longer lowers the objective). SciPy's L-BFGS-B in float64 does the steps; the callback
applies that rule, since SciPy's own tests know nothing of the certificate.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from threadpoolctl import threadpool_limits


def standardizer(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean and std (+1e-6) per column that both paths standardise with."""
    total = weights.sum()
    mean = (weights[:, None] * x).sum(0) / total
    var = (weights[:, None] * (x - mean) ** 2).sum(0) / total
    return mean, np.sqrt(var) + 1e-6


def _loss_and_grad(theta, z, targets, weights, l2, multi):
    d, c = z.shape[1], targets.shape[1]
    w, b = theta[:d * c].reshape(d, c), theta[d * c:]
    logits = z @ w + b
    if multi:
        # softplus(l) - t*l, with its gradient sigmoid(l) - t
        nll = (-log_expit(-logits) - targets * logits).sum(1)
        residual = expit(logits) - targets
    else:
        # One exp pass serves both the log-sum-exp and the softmax (scipy's logsumexp would take
        # its own, and costs more than the arithmetic on probe-sized arrays).
        shifted = logits - logits.max(1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(1, keepdims=True)
        nll = np.log(total[:, 0]) - (targets * shifted).sum(1)
        residual = exp / total - targets
    share = weights / weights.sum()
    residual *= share[:, None]
    value = float(share @ nll + 0.5 * l2 * (w * w).sum())
    grad = np.concatenate([(z.T @ residual + l2 * w).ravel(), residual.sum(0)])
    return value, grad


def _stopping(z, targets, weights, l2, multi, tol, gap_tol):
    """The objective for SciPy, remembering its last gradient, and a callback applying the stopping rule."""
    state = {"count": 0, "last": np.inf, "grad": None}

    def objective(theta):
        value, grad = _loss_and_grad(theta, z, targets, weights, l2, multi)
        state["grad"] = grad
        return value, grad

    def callback(intermediate_result):
        # L-BFGS-B evaluates the accepted point last before calling back, so the remembered
        # gradient is that of ``intermediate_result.x``.
        state["count"] += 1
        value, grad = intermediate_result.fun, state["grad"]
        stalled = value >= state["last"]
        state["last"] = value
        if np.abs(grad).max() <= tol and (grad @ grad <= 2.0 * l2 * gap_tol * value or stalled):
            raise StopIteration

    return objective, callback, state


def solve_path(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2_grid: list[float], *, num_classes: int,
               max_iter: int, tol: float, gap_tol: float, standardize: bool,
               multi: bool = False, start: tuple[np.ndarray, np.ndarray] | None = None,
               num_active: int | None = None) -> tuple[np.ndarray, ...]:
    """``linear.solve_path``'s result (W (L, D, C), b (L, C), mean, scale, iterations (L,)), in float32;
    ``start`` and ``num_active`` as there."""
    # Matrices this small run slower on several BLAS threads than on one (measured: 15x on 2
    # busy cores for 1000 x 64 @ 64 x 10), and the device path keeps the threads meanwhile.
    with threadpool_limits(1, user_api="blas"):
        return _solve_path(x, y, weights, l2_grid, num_classes=num_classes, max_iter=max_iter, tol=tol,
                           gap_tol=gap_tol, standardize=standardize, multi=multi, start=start,
                           num_active=len(l2_grid) if num_active is None else num_active)


def _solve_path(x, y, weights, l2_grid, *, num_classes, max_iter, tol, gap_tol, standardize, multi, start,
                num_active):
    x = np.asarray(x, np.float64)
    weights = np.asarray(weights, np.float64)
    if standardize:
        mean, scale = standardizer(x, weights)
    else:
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    z = (x - mean) / scale
    targets = np.asarray(y, np.float64) if multi else np.eye(num_classes)[np.asarray(y)]
    d, c = x.shape[1], num_classes
    theta = np.zeros(d * c + c) if start is None else np.r_[np.ravel(start[0]), start[1]].astype(np.float64)
    ws, bs, counts = [], [], []
    for index, l2 in enumerate(l2_grid):
        if index >= num_active:  # as the device path: the last solution, no iterations
            ws.append(ws[-1])
            bs.append(bs[-1])
            counts.append(0)
            continue
        objective, callback, state = _stopping(z, targets, weights, float(l2), multi, tol, gap_tol)
        value, grad = objective(theta)
        if not (np.abs(grad).max() <= tol and grad @ grad <= 2.0 * l2 * gap_tol * value):
            done = minimize(objective, theta, jac=True, method="L-BFGS-B", callback=callback,
                            options=dict(maxiter=max_iter, gtol=0.0, ftol=0.0, maxls=50))
            theta = done.x
        ws.append(theta[:d * c].reshape(d, c))
        bs.append(theta[d * c:])
        counts.append(max(state["count"], 1))  # the device path counts the step that finds it converged
    as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return as32(ws), as32(bs), as32(mean), as32(scale), np.asarray(counts)
