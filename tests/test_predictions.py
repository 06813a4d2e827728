"""vtabkit.predictions: what is stored, the file round trip, and exact recomputation of metrics."""

import os

import numpy as np
import pytest

from vtabkit import metrics, predictions
from vtabkit.errors import UserError

SINGLE_SPECS = ["top1", "top5", "ece", "nll", "brier", "mean_per_class_recall",
                "top1@size", "top5@size", "ece@size", "nll@size", "brier@size", "mean_per_class_recall@size"]


def make(n, c, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    scores = (3.0 * rng.normal(size=(n, c))).astype(dtype)  # float32: what the JAX heads produce
    labels = rng.integers(0, c, size=n)
    ids = np.array([f"test/{i:06d}" for i in range(n)])
    return ids, scores, labels, {"size": rng.choice(["s", "m", "l"], size=n)}


def label_sets(n, c, seed=0):
    rng = np.random.default_rng(seed)
    sets = np.full((n, 3), -1)
    for i in range(n):
        size = rng.integers(0, 4)
        sets[i, :size] = rng.choice(c, size=size, replace=False)
    return sets


def assert_same(recomputed, expected, tol=1e-6):
    assert list(recomputed[0]) == list(expected[0]) and list(recomputed[1]) == list(expected[1])
    assert recomputed[0] == pytest.approx(expected[0], abs=tol)
    for spec in expected[1]:
        assert recomputed[1][spec] == pytest.approx(expected[1][spec], abs=tol)


def one_line_error(function, *args, **kwargs):
    with pytest.raises(UserError) as caught:
        function(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_full_form_round_trip(tmp_path):
    ids, scores, labels, _ = make(500, 10)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    assert set(arrays) == {"ids", "targets", "num_classes", "target_kind", "scores"}
    assert arrays["scores"].dtype == np.float32 and arrays["targets"].dtype == np.int8
    digest = predictions.save(tmp_path / "p.npz", arrays)
    loaded = predictions.load(tmp_path / "p.npz", sha256=digest)
    assert set(loaded) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])
        assert loaded[key].dtype == arrays[key].dtype
    assert loaded["ids"][3] == "test/000003" and str(loaded["target_kind"]) == "single"
    assert int(loaded["num_classes"]) == 10
    assert os.listdir(tmp_path) == ["p.npz"]  # no temporary left behind


def test_top_k_form_round_trip(tmp_path):
    ids, scores, labels, _ = make(300, 1000)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    assert set(arrays) == {"ids", "targets", "num_classes", "target_kind", "top_index", "top_score",
                           "logsumexp", "sum_sq_prob", "max_score", "target_score"}
    assert arrays["top_index"].shape == (300, 5) and arrays["top_index"].dtype == np.int32
    assert arrays["top_score"].dtype == np.float32 and arrays["logsumexp"].dtype == np.float64
    assert arrays["targets"].dtype == np.int16
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(arrays["top_index"], order)
    np.testing.assert_array_equal(arrays["top_score"], np.take_along_axis(scores, order, 1))
    loaded = predictions.load(tmp_path / "p.npz", predictions.save(tmp_path / "p.npz", arrays))
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])


def test_top_k_breaks_ties_across_the_cut_by_class_index():
    scores = np.round(np.random.default_rng(3).normal(size=(400, 150)))  # heavy ties at the 5th place
    index, values = predictions.top_k(scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(index, order)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, order, 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_recompute_full_scores_equals_compute(seed):
    ids, scores, labels, metadata = make(800, 10, seed)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    assert_same(predictions.recompute(SINGLE_SPECS, arrays, metadata=metadata),
                metrics.compute(SINGLE_SPECS, scores, labels, target_kind="single", metadata=metadata))


def test_recompute_multi_hot_keeps_full_scores_at_any_c():
    ids, scores, _, metadata = make(300, 150)
    targets = np.random.default_rng(1).random((300, 150)) < 0.1
    arrays = predictions.compact(ids, scores, targets.astype(int), target_kind="multi")
    assert arrays["scores"].shape == (300, 150) and arrays["targets"].dtype == bool
    specs = ["map", "micro_f1", "map@size"]
    assert_same(predictions.recompute(specs, arrays, metadata=metadata),
                metrics.compute(specs, scores, targets, target_kind="multi", metadata=metadata))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recompute_top_k_form_equals_compute_on_full_scores(dtype):
    ids, scores, labels, metadata = make(2000, 1000, dtype=dtype)
    labels[:600] = np.take_along_axis(np.argsort(-scores[:600], 1), labels[:600, None] % 5, 1)[:, 0]  # hits in the top 5
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    assert "scores" not in arrays
    expected = metrics.compute(SINGLE_SPECS, scores, labels, target_kind="single", metadata=metadata)
    assert 0.05 < expected[0]["top1"] < expected[0]["top5"]  # the comparison covers hits, not only misses
    assert_same(predictions.recompute(SINGLE_SPECS, arrays, metadata=metadata), expected)


def test_recompute_top_k_form_label_sets():
    ids, scores, _, metadata = make(1500, 1000)
    sets = label_sets(1500, 1000)
    sets[:500, 0] = scores[:500].argmax(1)  # some hits
    arrays = predictions.compact(ids, scores, sets, target_kind="set")
    assert "target_score" not in arrays and "top_index" in arrays
    specs = ["real_top1", "real_top1@size"]
    expected = metrics.compute(specs, scores, sets, target_kind="set", metadata=metadata)
    assert expected[0]["real_top1"] > 0.2
    assert_same(predictions.recompute(specs, arrays, metadata=metadata), expected)


def test_recompute_refuses_a_metric_that_needs_full_scores(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    metrics.register_metric("label_mean")(lambda scores, targets: float(np.mean(targets)))
    ids, scores, labels, _ = make(50, 200)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    assert "needs full scores" in one_line_error(predictions.recompute, ["top1", "label_mean"], arrays)
    full = predictions.compact(ids, scores[:, :20], labels % 20, target_kind="single")
    assert predictions.recompute(["label_mean"], full)[0]["label_mean"] == pytest.approx(np.mean(labels % 20))


def test_sha256_mismatch_after_editing_the_file(tmp_path):
    ids, scores, labels, _ = make(100, 10)
    path = tmp_path / "p.npz"
    digest = predictions.save(path, predictions.compact(ids, scores, labels, target_kind="single"))
    predictions.load(path, digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    message = one_line_error(predictions.load, path, digest)
    assert "does not match its record's sha256" in message and str(path) in message
    predictions.save(path, predictions.compact(ids, scores, labels, target_kind="single"))  # overwrite works
    assert predictions.load(path, digest)["scores"].shape == (100, 10)  # same content, same hash


def test_load_errors_are_one_line(tmp_path):
    assert "does not exist" in one_line_error(predictions.load, tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    one_line_error(predictions.load, tmp_path / "junk.npz")
    one_line_error(predictions.recompute, ["top1"], {"targets": np.zeros(3, int)})
    ids, scores, labels, _ = make(20, 300)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    del arrays["logsumexp"]
    assert "logsumexp" in one_line_error(predictions.recompute, ["top1"], arrays)
    one_line_error(predictions.compact, ids[:5], scores, labels, target_kind="single")
    one_line_error(predictions.compact, ids, scores, labels, target_kind="multi")


def test_size_of_the_top_k_form_for_50000_by_1000(tmp_path):
    ids, scores, labels, _ = make(50_000, 1000)
    arrays = predictions.compact(ids, scores, labels, target_kind="single")
    predictions.save(tmp_path / "p.npz", arrays)
    size = os.path.getsize(tmp_path / "p.npz")
    numeric = sum(v.nbytes for k, v in arrays.items() if k != "ids")  # 74 bytes per example
    assert numeric == 50_000 * (2 + 4 * 5 + 4 * 5 + 4 * 8) + 8 + 24
    # Compression may not gain much on random scores but must not lose; ids compress well.
    assert size < numeric + arrays["ids"].nbytes / 4
    assert size < scores.astype(np.float32).nbytes / 40  # vs 200 MB of full float32 scores


def test_a_predictions_file_is_readable_like_any_file_the_user_writes(tmp_path):
    import os
    import stat

    from vtabkit import predictions as predictions_module

    umask = os.umask(0o022)
    try:
        path = tmp_path / "p.npz"
        predictions_module.save(path, {"ids": np.array(["a"]), "scores": np.zeros((1, 2), np.float32)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    finally:
        os.umask(umask)
