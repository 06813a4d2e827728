"""vtabkit.stats against scipy and hand-written loops."""

import numpy as np
import pytest
from scipy.stats import binomtest

from vtabkit import stats
from vtabkit.errors import UserError


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (37, 50), (412, 1000), (1, 3)])
def test_wilson_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_refuses_impossible_counts():
    with pytest.raises(UserError, match="successes"):
        stats.wilson_interval(11, 10)


def test_mcnemar_matches_binomtest_on_discordant_counts():
    rng = np.random.default_rng(3)
    a = rng.random(400) < 0.7
    b = rng.random(400) < 0.6
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert stats.mcnemar_exact(a, b) == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert stats.mcnemar_exact(a, a) == 1.0


def test_bootstrap_equals_a_direct_loop_with_the_same_draws():
    rng = np.random.default_rng(0)
    values = rng.random(57)
    samples = stats.bootstrap_distribution(values, n_resamples=300, seed=5)
    direct = np.random.default_rng(5)
    expected = []
    while len(expected) < 300:  # the same draws, one resample at a time
        block = direct.integers(0, 57, size=(min(128, 300 - len(expected)), 57))
        expected += [values[rows].mean() for rows in block]
    np.testing.assert_allclose(samples, expected)
    callable_samples = stats.bootstrap_distribution(lambda rows: values[rows].mean(), 57, n_resamples=300, seed=5)
    np.testing.assert_allclose(callable_samples, expected)


def test_paired_bootstrap_of_a_run_with_itself_is_exactly_zero():
    correct = np.random.default_rng(1).random(200) < 0.5
    assert stats.paired_bootstrap(correct, correct) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(11)
    n, trials, covered = 300, 200, 0
    # a is right with probability 0.75; b with P(U + 0.1 Z < 0.7) = 0.70 (to 1e-6): correlated pairs
    true_difference = 0.05
    for _ in range(trials):
        hardness = rng.random(n)
        a, b = hardness < 0.75, hardness + 0.1 * rng.standard_normal(n) < 0.70
        _, low, high = stats.paired_bootstrap(a, b, n_resamples=500, seed=int(rng.integers(1 << 30)))
        covered += low <= true_difference <= high
    assert 0.88 <= covered / trials <= 0.99
