"""Intervals and paired tests on per-example results, for reports, comparisons and leaderboards.

Everything here works on plain arrays (one value per test example, or a metric callable on a
set of rows) so it can be checked against scipy and hand-written loops. Resampling is seeded:
the same inputs give the same interval on every machine.

- `wilson_interval`: the 95 % interval for an accuracy (k of n correct). Unlike the percentile
  bootstrap it does not collapse to a point at 0 % or 100 %.
- `bootstrap_distribution` / `percentile_interval`: the percentile bootstrap over test examples,
  for any metric (mAP, ECE, …) and for paired differences (resample the *same* rows for both
  models, so the per-example pairing is kept).
- `mcnemar_exact`: the exact McNemar test on the discordant pairs of two classifiers.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from vtabkit.errors import UserError

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_CHUNK = 128  # resamples drawn at once: bounds memory at _CHUNK × n indices


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (fractions in [0, 1])."""
    from scipy.stats import norm

    if n <= 0 or not 0 <= successes <= n:
        raise UserError(f"a Wilson interval needs 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def resampled_rows(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Iterator[np.ndarray]:
    """Bootstrap row indices, ``(k, n)`` blocks with k ≤ 128, ``n_resamples`` rows in all.

    The stream depends only on (n, n_resamples, seed), so two calls resample the same rows —
    which is what makes a paired comparison (and a suite mean over tasks) consistent.
    """
    if n <= 0:
        raise UserError("the bootstrap needs at least one example")
    if n_resamples <= 0:
        raise UserError(f"the bootstrap needs a positive number of resamples, got {n_resamples}")
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        k = min(_CHUNK, n_resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def bootstrap_distribution(values: np.ndarray | Callable[[np.ndarray], float], n: int | None = None, *,
                           n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The statistic on each bootstrap resample of the test examples, shape ``(n_resamples,)``.

    ``values``: one number per example (the statistic is their mean: accuracy from 0/1
    correctness, a paired difference from ``a - b``), or a callable ``rows -> float`` for any
    other metric (then ``n`` is the number of examples).
    """
    if callable(values):
        if n is None:
            raise UserError("bootstrap_distribution: give n, the number of examples, with a metric callable")
        return np.array([values(rows) for block in resampled_rows(n, n_resamples, seed) for rows in block])
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise UserError(f"bootstrap_distribution: expected one value per example, got shape {values.shape}")
    return np.concatenate([values[block].mean(axis=1)
                           for block in resampled_rows(len(values), n_resamples, seed)])


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``samples`` (percentile method)."""
    samples = np.asarray(samples, dtype=np.float64)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over examples and its paired percentile-bootstrap interval.

    ``a``, ``b``: per-example values of two models on the same examples in the same order
    (e.g. 0/1 correctness). Returns (difference, low, high).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise UserError(f"paired_bootstrap: a and b need one value per shared example, got {a.shape} and {b.shape}")
    difference = a - b
    low, high = percentile_interval(bootstrap_distribution(difference, n_resamples=n_resamples, seed=seed),
                                    confidence)
    return float(difference.mean()), low, high


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs (1.0 when none)."""
    from scipy.stats import binomtest

    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a_correct.shape != b_correct.shape:
        raise UserError(f"mcnemar_exact: correctness arrays differ in shape {a_correct.shape} vs {b_correct.shape}")
    only_a = int(np.sum(a_correct & ~b_correct))
    only_b = int(np.sum(~a_correct & b_correct))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
