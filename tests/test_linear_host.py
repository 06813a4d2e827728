"""Issue 14 point 2: the linear probe's host path (SciPy, no compile) equals its device path (JAX)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vtabkit.protocols import linear


def _digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    return (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:]), 10


def _multi():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(700, 30)).astype(np.float32)
    y = (x @ rng.normal(size=(30, 7)) + rng.normal(size=(700, 7)) > 0.5).astype(np.int32)
    x[:, 0] *= 40.0
    return (x[:400], y[:400]), (x[400:500], y[400:500]), (x[500:], y[500:]), 7


def _both(problem, settings=None, use_val=True):
    train, val, test, classes = problem
    target = "multi" if train[1].ndim == 2 else "single"
    out = {}
    for path, size in [("host", 1e12), ("device", 0)]:
        config = linear.merge_config("linear", {**(settings or {}), "host_max_size": size})
        head, details = linear.fit(train, val if use_val else None, num_classes=classes, target=target, config=config)
        assert details["solver"] == path
        out[path] = (linear.predict(head, test[0]), details)
    return out, target


@pytest.mark.parametrize("problem, use_val", [(_digits, True), (_digits, False), (_multi, True)])
def test_host_and_device_choose_the_same_l2_and_predict_the_same(problem, use_val):
    out, target = _both(problem(), use_val=use_val)
    (host, h), (device, d) = out["host"], out["device"]
    assert h["l2"] == d["l2"]
    key = "val_map" if target == "multi" else "val_top1"
    np.testing.assert_allclose(list(h[key].values()), list(d[key].values()), atol=0.011)  # <= 1 of 100 flips
    if target == "multi":
        assert np.mean((host > 0) == (device > 0)) >= 0.995
    else:
        assert np.mean(host.argmax(1) == device.argmax(1)) >= 0.995


def test_tightly_converged_paths_give_the_same_scores():
    # With tolerances tight enough that both solvers sit at the minimum, what is left is float32.
    settings = {"l2_grid": [1.0, 1e-1, 1e-2], "tol": 1e-6, "gap_tol": 1e-9}
    out, _ = _both(_digits(), settings)
    host, device = out["host"][0], out["device"][0]
    np.testing.assert_array_equal(host.argmax(1), device.argmax(1))
    np.testing.assert_allclose(host, device, atol=2e-4 * np.abs(host).max())
    assert out["host"][1]["val_top1"] == out["device"][1]["val_top1"]


def test_the_threshold_routes_by_size():
    train, val, test, classes = _digits()
    n = len(train[1]) + len(val[1])
    for size, path in [(n * 64 * classes, "host"), (n * 64 * classes - 1, "device")]:
        config = linear.merge_config("linear", {"l2_grid": [1.0], "host_max_size": size})
        _, details = linear.fit(train, val, num_classes=classes, target="single", config=config)
        assert details["solver"] == path
    assert linear.merge_config("linear", None)["host_max_size"] >= n * 64 * classes  # digits-sized: host
