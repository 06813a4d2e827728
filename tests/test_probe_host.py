"""Issue 14 point 2: the host paths (NumPy, no compile) of the few-shot ridge and k-NN probes
equal their device paths (JAX): same chosen λ / k, same predictions, scores within float32
rounding; the size threshold routes and is recorded as ``details.solver``."""

import jax
import numpy as np
import pytest

from vtabkit.errors import UserError
from vtabkit.protocols import fewshot, knn

from probe_problems import clusters as _clusters


def _both(module, train, val, classes, settings, multi=False):
    """(head, details) of the host and of the device path."""
    out = {}
    for path, size in [("host", 1e30), ("device", 0)]:
        config = module.merge_config(module.__name__.rsplit(".", 1)[1], {**settings, "host_max_size": size})
        head, details = module.fit(train, val, num_classes=classes, target="multi" if multi else "single",
                                   config=config)
        assert details["solver"] == path
        out[path] = head, details
    return out


# --- few-shot ridge -------------------------------------------------------------------------------

@pytest.mark.parametrize("shots, d, classes, selection, multi", [
    (3, 40, 7, "loo", False),     # 21 rows < 40 dims: dual
    (12, 20, 3, "loo", False),    # 36 rows > 20 dims: primal
    (6, 30, 5, "val", False),     # 30 rows == 30 dims: dual
    (10, 25, 9, "val", False),    # primal, many classes
    (2, 33, 11, "fixed", False),
    (8, 30, 6, "val", True),      # multi-hot: first 48 rows, λ by val mAP; primal
    (3, 50, 6, "fixed", True)])   # multi-hot, dual
def test_fewshot_host_equals_device(shots, d, classes, selection, multi):
    train = _clusters(shots * classes * 4, d, classes, seed=d, multi=multi)
    val, test = _clusters(150, d, classes, d + 1, multi), _clusters(333, d, classes, d + 2, multi)
    out = _both(fewshot, train, val, classes, {"shots": shots, "seed": 1, "l2_selection": selection, "l2": 64.0},
                multi)
    (host, h), (device, dv) = out["host"], out["device"]
    assert h["l2"] == dv["l2"]
    key = "l2_holdout_map" if multi else "l2_holdout_top1"
    holdout = {p: np.array(details.pop(key, [])) for p, details in (("host", h), ("device", dv))}
    h.pop("solver"), dv.pop("solver")
    assert h == dv  # the same few-shot set, λ and record otherwise
    if len(holdout["host"]):
        # Equal to the device's float32 wherever λ is not near-interpolating (there float32 may
        # flip a round-off-sized decision or two), and to the device everywhere in 64-bit floats
        # (where the host's scores, too, are no longer cast to float32 before ranking).
        large = np.array(fewshot.L2_GRID) >= 1
        np.testing.assert_allclose(holdout["host"][large], holdout["device"][large], atol=1e-6 if multi else 0)
        with jax.enable_x64(True):
            x64 = _both(fewshot, train, val, classes, {"shots": shots, "seed": 1, "l2_selection": selection}, multi)
        np.testing.assert_allclose(x64["host"][1][key], x64["device"][1][key], atol=1e-9, rtol=0)
        assert x64["host"][1]["l2"] == x64["device"][1]["l2"] == h["l2"]
    scores = {p: fewshot.predict(head, test[0]) for p, head in (("host", host), ("device", device))}
    assert scores["host"].shape == scores["device"].shape == (len(test[1]), classes)
    assert scores["host"].dtype == scores["device"].dtype
    if multi:
        np.testing.assert_array_equal(scores["host"] > 0, scores["device"] > 0)
    else:
        np.testing.assert_array_equal(scores["host"].argmax(1), scores["device"].argmax(1))
    # The host (float64) is the plain float64 solve up to the float32 cast of its output; the
    # device's float32 dual is off by up to ~2e-4 of the score scale (measured on these problems).
    scale = np.abs(scores["device"]).max()
    np.testing.assert_allclose(scores["host"], _plain_solve(train, test[0], h, classes, multi), atol=1e-6 * scale)
    np.testing.assert_allclose(scores["host"], scores["device"], atol=5e-4 * scale)


def _plain_solve(train, query, details, classes, multi):
    """The few-shot classifier as written (standardise, bias 100, ±1 targets, np.linalg.solve)."""
    index = (np.arange(details["num_train"]) if multi
             else fewshot.sample_few_shot(train[1], details["shots"], details["seed"]))
    x, y = train[0][index].astype(np.float64), train[1][index]
    mean, scale = x.mean(0), x.std(0) + fewshot.STD_EPS

    def design(rows):
        return np.c_[(rows - mean) / scale, np.full(len(rows), fewshot.BIAS)]

    targets = 2.0 * (y if multi else np.eye(classes)[y]) - 1.0
    weights = np.linalg.solve(design(x).T @ design(x) + details["l2"] * np.eye(x.shape[1] + 1), design(x).T @ targets)
    return design(query.astype(np.float64)) @ weights


def test_fewshot_host_grid_equals_device_grid_in_float64():
    """In 64-bit floats both paths give the same prediction for every λ of the grid."""
    x, y = _clusters(60, 24, 5, seed=3)
    query = _clusters(200, 24, 5, seed=4)[0]
    for rows in (20, 60):  # dual, primal
        with jax.enable_x64(True):
            device = fewshot.ridge_predict(x[:rows].astype(np.float64), y[:rows], query.astype(np.float64), 5,
                                           fewshot.L2_GRID)
        host = fewshot.ridge_predict(x[:rows], y[:rows], query, 5, fewshot.L2_GRID, solver="host")
        np.testing.assert_array_equal(host, device)


def test_fewshot_threshold_routes_by_size():
    train, val = _clusters(200, 30, 4, 0), _clusters(50, 30, 4, 1)
    size = 5 * 4 * 30 * 4  # 5 shots x 4 classes rows, 30 dims, 4 classes
    for limit, path in [(size, "host"), (size - 1, "device")]:
        config = fewshot.merge_config("fewshot", {"shots": 5, "seed": 0, "host_max_size": limit})
        assert fewshot.fit(train, val, num_classes=4, target="single", config=config)[1]["solver"] == path
    with pytest.raises(UserError, match="host_max_size"):
        fewshot.merge_config("fewshot", {"host_max_size": -1})


# --- k-NN ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_train, d, classes, multi, use_val", [
    (150, 37, 5, False, True), (90, 70, 23, False, True), (300, 20, 3, False, False),
    (120, 45, 6, True, True), (60, 30, 13, True, False)])
def test_knn_host_equals_device(n_train, d, classes, multi, use_val):
    train = _clusters(n_train, d, classes, seed=d, multi=multi)
    val, test = _clusters(70, d, classes, d + 1, multi), _clusters(300, d, classes, d + 2, multi)
    out = _both(knn, train, val if use_val else None, classes, {"chunk_size": 128}, multi)
    (host, h), (device, dv) = out["host"], out["device"]
    key = "val_map_at_k" if multi else "val_top1_at_k"
    if use_val:
        np.testing.assert_allclose(list(h.pop(key).values()), list(dv.pop(key).values()), atol=1e-9)
    h.pop("solver"), dv.pop("solver")
    assert h == dv  # same k, k_used, bank size
    scores = {p: knn.predict(head, test[0]) for p, head in (("host", host), ("device", device))}
    assert scores["host"].shape == scores["device"].shape == (len(test[1]), classes)
    if multi:
        np.testing.assert_array_equal(scores["host"] > 0, scores["device"] > 0)
    else:
        np.testing.assert_array_equal(scores["host"].argmax(1), scores["device"].argmax(1))
    np.testing.assert_allclose(scores["host"], scores["device"], rtol=1e-4, atol=1e-4)


def test_knn_host_breaks_ties_as_the_device():
    """Duplicated bank rows tie exactly; both paths take the lower bank index first, so the
    neighbours, and hence the votes of every k (cut inside a run of ties), are the same."""
    x, y = _clusters(40, 16, 4, seed=9)
    bank_x, bank_y = np.repeat(x, 3, axis=0), np.arange(120) % 4  # copies of one row carry 3 labels
    query = _clusters(50, 16, 4, seed=10)[0]
    ks = [1, 2, 4, 5, 7]
    host = knn.knn_votes(bank_x, bank_y, query, 4, ks, solver="host")
    device = knn.knn_votes(bank_x, bank_y, query, 4, ks)
    for k in ks:
        np.testing.assert_array_equal(host[k] > 0, device[k] > 0, err_msg=f"k={k}")  # the same labels voted
        np.testing.assert_allclose(host[k], device[k], rtol=1e-5)
    # Many exact ties (+ 0.0 turns the -0.0 of rounding into 0.0, which top_k would rank below it).
    similarity = np.round(np.random.default_rng(0).normal(size=(30, 50)), 1) + 0.0
    for k in (1, 3, 10, 50):
        np.testing.assert_array_equal(knn._nearest_host(similarity, k),
                                      np.asarray(jax.lax.top_k(similarity.astype(np.float32), k)[1]))


def test_knn_threshold_routes_by_size():
    train, val = _clusters(200, 30, 4, 0), _clusters(50, 30, 4, 1)
    for limit, path in [(250 * 30, "host"), (250 * 30 - 1, "device")]:
        config = knn.merge_config("knn", {"host_max_size": limit})
        assert knn.fit(train, val, num_classes=4, target="single", config=config)[1]["solver"] == path
    with pytest.raises(UserError, match="host_max_size"):
        knn.merge_config("knn", {"host_max_size": "big"})
