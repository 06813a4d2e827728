"""Issue 14 point 4: does warm-starting the l2 path change what each l2 converges to?

Each l2 of the path is solved again from a cold (zero) start and compared with the warm-started
solution on its own objective. Where the objective is well conditioned (l2 >= 1e-3 on digits)
both land on the same solution. For the weakest l2 values the stopping rule (largest gradient
entry below ``tol``) does not pin the solution: with curvature ~l2, a gradient of 1e-4 leaves
the point up to 1e-4 / l2 away, and the warm start stops after a step or two at a worse
objective than a cold start reaches (l2=1e-6 on digits: +48% objective, 1.5 points of held-out
top-1); at 1e-4 and 1e-5 it ends lower than the cold start. The l2=1e-6 gap is pinned here as
a known gap (strict xfail), so a fix of the stopping rule shows up as an unexpected pass.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vtabkit.protocols import linear

GRID = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
SETTINGS = dict(num_classes=10, max_iter=1000, tol=1e-4, standardize=True)


@pytest.fixture(scope="module")
def path():
    x, y = load_digits(return_X_y=True)
    x, y = x[:1000].astype(np.float32), y[:1000]
    weights = np.r_[np.ones(800), np.zeros(200)]
    warm = linear.solve_path(x, y, weights, GRID, **SETTINGS)
    cold = [linear.solve_path(x, y, weights, [l2], **SETTINGS) for l2 in GRID]
    return x, y, warm, cold


def _objective(x, y, w, b, mean, scale, l2):
    """The probe's objective in float64, written out independently of the JAX loss."""
    logits = ((x - mean) / scale).astype(np.float64) @ w + b
    top = logits.max(1, keepdims=True)
    nll = np.log(np.exp(logits - top).sum(1)) + top[:, 0] - logits[np.arange(len(y)), y]
    return nll.mean() + 0.5 * l2 * float((w.astype(np.float64) ** 2).sum())


def _compare(path, i):
    x, y, (w, b, mean, scale, _), cold = path
    cw, cb = cold[i][0][0], cold[i][1][0]
    train, held = slice(0, 800), slice(800, 1000)
    warm_obj = _objective(x[train], y[train], w[i], b[i], mean, scale, GRID[i])
    cold_obj = _objective(x[train], y[train], cw, cb, mean, scale, GRID[i])
    z = (x[held] - mean) / scale
    agree = np.mean((z @ w[i] + b[i]).argmax(1) == (z @ cw + cb).argmax(1))
    return warm_obj, cold_obj, agree


@pytest.mark.parametrize("i", [0, 1, 2, 3])
def test_warm_start_reaches_the_cold_start_solution(path, i):
    warm_obj, cold_obj, agree = _compare(path, i)
    assert abs(warm_obj - cold_obj) <= 1e-3 * cold_obj
    assert agree >= 0.99


@pytest.mark.parametrize("i", [4, 5])
def test_warm_start_is_no_worse_than_cold_at_moderately_weak_l2(path, i):
    # Neither start pins the solution here, but the warm one ends at the lower objective.
    warm_obj, cold_obj, _ = _compare(path, i)
    assert warm_obj <= cold_obj * (1 + 1e-3)


@pytest.mark.xfail(strict=True, reason="issue 14.4: at l2=1e-6 the warm start stops after 1 iteration "
                                       "at a worse objective than a cold start reaches")
def test_weakest_l2_warm_start_is_no_worse_than_cold(path):
    warm_obj, cold_obj, _ = _compare(path, 6)
    assert warm_obj <= cold_obj * (1 + 1e-3)
