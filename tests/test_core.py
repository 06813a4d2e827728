"""The core shape: one fitted head scored on many eval sets, each image through the model once,
metrics from kept predictions, regimes as data, records v2 (and v1 still readable)."""

import json
import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from vtabkit import cli, features, regimes, report, results, runner, tasks
from vtabkit.errors import UserError
from vtabkit.models.registry import Model, register_model
from vtabkit.protocols import knn, linear

CALLS: list[int] = []


@register_model("test_counting_pixels")
def counting_pixels() -> Model:
    """Raw pixels at 8 px; counts the images it is shown."""
    def apply(params, images):
        CALLS.append(len(images))
        return np.asarray(images).reshape(len(images), -1)[:, ::3] / 255.0
    return Model(apply=apply, resolution=8, jittable=False, fingerprint="test-counting-pixels")


SPLITS = """
splits:
  train800: train[:800]
  val200: train[800:1000]
  train800val200: train[:800]+train[800:1000]
  train: train[:800]
  val: train[800:1000]
  test: test
"""

THREE_EVAL_SETS = """
task: core_digits
family: lite
dataset: vtabkit_digits:1.0.0
num_classes: 10
description: digits scored on three eval sets
""" + SPLITS + """
eval_sets:
  - name: test
    split: test
    metrics: [top1, top5, ece, nll, brier, mean_per_class_recall]
  - name: low_digits
    split: test
    class_subset: [0, 1, 2, 3, 4]
    metrics: [top1]
  - name: by_parity
    split: test[:400]
    metadata: {path: parity.csv, id_column: example}
    metrics: [top1, top1@parity]
    primary_metric: top1@parity
"""

SAME_IMAGES = """
task: core_digits_halves
family: lite
dataset: vtabkit_digits:1.0.0
num_classes: 2
description: the same images, labelled 0-4 vs 5-9
label: {rule: floor_divide, key: label, divisor: 5}
""" + SPLITS


@pytest.fixture
def core_tasks(tmp_path, data_dir):
    folder = tmp_path / "core_tasks"
    folder.mkdir()
    (folder / "core_digits.yaml").write_text(THREE_EVAL_SETS)
    (folder / "core_digits_halves.yaml").write_text(SAME_IMAGES)
    task = tasks.get_task("core_digits", [folder])
    targets, ids = features.load_targets(task.eval_sets[2].view, data_dir=data_dir, cache_dir=None)
    rows = [f"{example},{label % 2}" for example, label in zip(ids, targets)]
    (folder / "parity.csv").write_text("example,parity\n" + "\n".join(rows) + "\nextra-id,1\n")
    return folder


def _count_fits(monkeypatch) -> list[str]:
    fits = []
    original = linear.fit

    def counted(train, val, **kwargs):
        fits.append(kwargs["target"])
        return original(train, val, **kwargs)
    monkeypatch.setattr(linear, "fit", counted)
    return fits


def test_one_fit_per_cell_many_eval_sets_each_image_once(core_tasks, tmp_path, data_dir, monkeypatch):
    fits = _count_fits(monkeypatch)
    CALLS.clear()
    out = tmp_path / "run"
    written = runner.run(runner.RunConfig(
        model="test_counting_pixels", tasks=["core_digits", "core_digits_halves"], tasks_dirs=[str(core_tasks)],
        out=out, data_dir=data_dir, use_cache=False, batch_size=100, progress=False), log=lambda line: None)
    assert len(fits) == 2  # one head per task, however many eval sets
    # train800 (8 batches), val200 (2), test (797 → 8), test[:400] (4): every view once, both tasks.
    assert len(CALLS) == 8 + 2 + 8 + 4
    assert [(r["task"], r["eval_set"]) for r in written] == [
        ("core_digits", "test"), ("core_digits", "low_digits"), ("core_digits", "by_parity"),
        ("core_digits_halves", "test")]
    test, low, parity, halves = written
    assert set(test["metrics"]) == {"top1", "top5", "ece", "nll", "brier", "mean_per_class_recall"}
    assert test["metrics"]["top5"] >= test["metrics"]["top1"] > 0.8
    assert test["schema_version"] == results.SCHEMA_VERSION and test["primary_metric"] == "top1"
    assert test["num_examples"] == {"train": 800, "val": 200, "eval": 797}
    assert parity["num_examples"]["eval"] == 400 and parity["primary_metric"] == "top1@parity"
    by_group = parity["metrics_by_group"]["top1@parity"]
    assert set(by_group) == {"0", "1"}
    assert parity["metrics"]["top1@parity"] == pytest.approx((by_group["0"] + by_group["1"]) / 2)
    assert parity["eval"]["metadata"]["unused_rows"] == 1  # the extra CSV row
    assert halves["details"]["num_train"] == 800 and halves["metrics"]["top1"] > 0.8
    # The class subset: every prediction lies in it, and only low digits can be right.
    stored = np.load(out / low["predictions"]["path"])
    predicted = stored["scores"].argmax(axis=1)
    assert set(predicted) <= {0, 1, 2, 3, 4}
    in_subset = stored["targets"] < 5
    assert low["metrics"]["top1"] == pytest.approx(np.mean(predicted == stored["targets"]))
    assert np.all(predicted[~in_subset] != stored["targets"][~in_subset])
    checked, problems = report.verify(out)
    assert checked == 4 and problems == []


def test_features_are_computed_once_across_runs_sharing_images(core_tasks, tmp_path, data_dir):
    CALLS.clear()
    config = dict(model="test_counting_pixels", tasks_dirs=[str(core_tasks)], data_dir=data_dir,
                  cache_dir=tmp_path / "cache", batch_size=100, progress=False)
    runner.run(runner.RunConfig(tasks=["core_digits_halves"], out=tmp_path / "a", **config), log=lambda line: None)
    first = len(CALLS)
    runner.run(runner.RunConfig(tasks=["core_digits"], out=tmp_path / "b", **config), log=lambda line: None)
    assert first == 8 + 2 + 8 and len(CALLS) == first + 4  # only test[:400] was new to the cache


def test_every_recorded_metric_is_recomputed_from_predictions_of_a_lite_run(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    args = ["run", "--model", "pixels", "--model-arg", "resolution=8", "--suite", "lite",
            "--protocol", "linear,knn,fewshot", "--set", "fewshot.shots=[5]", "--set", "fewshot.seeds=[0]",
            "--out", str(out), "--data-dir", data_dir, "--quiet"]
    assert cli.main(args) == 0
    records = results.read_records(out / "results.jsonl")
    assert len(records) == 12 and all(r["predictions"]["sha256"] for r in records)
    checked, problems = report.verify(out)
    assert checked == 12 and problems == []
    assert cli.main(["report", str(out), "--verify"]) == 0
    # Any edit to a recorded score is caught.
    lines = (out / "results.jsonl").read_text().splitlines()
    edited = json.loads(lines[0])
    edited["metrics"]["top1"] += 0.01
    (out / "results.jsonl").write_text("\n".join([json.dumps(edited)] + lines[1:]) + "\n")
    capsys.readouterr()
    assert cli.main(["report", str(out), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "do not match" in err and err.count("\n") == 1


def test_old_v1_results_are_read_by_report_and_refused_by_run(tmp_path, data_dir, capsys):
    out = tmp_path / "old"
    out.mkdir()
    v1 = {"model": "pixels", "model_fingerprint": "abc", "task": "lite_digits", "family": "natural",
          "task_hash": "h", "regime": "1k", "protocol": "linear", "setting": "default", "seed": 0,
          "config_hash": "c", "metrics": {"top1": 0.9}}
    (out / "results.jsonl").write_text(json.dumps(v1) + "\n")
    assert cli.main(["report", str(out)]) == 0
    assert "90.0" in capsys.readouterr().out
    code = cli.main(["run", "--model", "pixels", "--suite", "lite", "--out", str(out), "--data-dir", data_dir])
    err = capsys.readouterr().err
    assert code == 2 and "schema 1" in err and "new --out" in err and err.count("\n") == 1


def test_regimes_are_data():
    assert regimes.parse("1k") == regimes.Regime("1k", "train800", "val200")
    first = regimes.parse("first:100")
    assert (first.train, first.val, first.subset, first.size) == ("train", "val", "first", 100)
    np.testing.assert_array_equal(first.train_indices(np.arange(500) % 3, seed=0), np.arange(100))
    per_class = regimes.parse("per_class:2")
    labels = np.array([0, 0, 0, 1, 1, 2, 1, 0])
    chosen = per_class.train_indices(labels, seed=1)
    assert sorted(np.bincount(labels[chosen]).tolist()) == [1, 2, 2]  # class 2 has only one
    assert np.all(np.diff(chosen) > 0)  # back in TFDS order
    np.testing.assert_array_equal(chosen, per_class.train_indices(labels, seed=1))
    assert [r.name for r in regimes.parse_list("first:10, full,first:10")] == ["first:10", "full"]
    for bad in ("2k", "first:", "first:0", "per_class:x", "last:5"):
        with pytest.raises(UserError, match="unknown regime"):
            regimes.parse(bad)
    with pytest.raises(UserError, match="only 500 examples"):
        regimes.parse("first:501").train_indices(np.zeros(500), seed=0)


def test_first_n_and_per_class_regimes_through_the_runner(core_tasks, tmp_path, data_dir):
    written = runner.run(runner.RunConfig(
        model="test_counting_pixels", tasks=["core_digits_halves"], tasks_dirs=[str(core_tasks)],
        regime="first:100,per_class:30", out=tmp_path / "run", data_dir=data_dir,
        cache_dir=tmp_path / "cache", progress=False), log=lambda line: None)
    by_regime = {r["regime"]: r for r in written}
    assert set(by_regime) == {"first:100", "per_class:30"}
    assert by_regime["first:100"]["num_examples"]["train"] == 100
    assert by_regime["per_class:30"]["num_examples"]["train"] == 60  # 2 classes x 30
    assert by_regime["first:100"]["split_ids"]["train"] != by_regime["per_class:30"]["split_ids"]["train"]
    with pytest.raises(UserError, match="unknown regime"):
        runner.run(runner.RunConfig(model="pixels", suite="lite", regime="5k", out=tmp_path / "x"))


def test_a_protocol_refuses_a_target_kind_before_any_work(tmp_path, data_dir, capsys):
    folder = tmp_path / "sets"
    folder.mkdir()
    (folder / "t.yaml").write_text(THREE_EVAL_SETS.split("eval_sets:")[0].replace("core_digits", "multi_digits")
                                   + "target: set\n")  # sets of labels score eval sets; no protocol trains on them
    CALLS.clear()
    code = cli.main(["run", "--model", "pixels", "--tasks", "multi_digits", "--tasks-dir", str(folder),
                     "--protocol", "fewshot", "--out", str(tmp_path / "run"), "--data-dir", data_dir])
    err = capsys.readouterr().err
    assert code == 2 and "cannot fit 'set' targets" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, message", [
    ("    class_subset: [0, 0]\n", "class_subset must be distinct"),
    ("    class_subset: [10]\n", r"class_subset must be distinct class indices in \[0, 10\)"),
    ("    primary_metric: top5\n", "primary_metric 'top5' is not in its metrics"),
    ("    colour: red\n", "unknown field 'colour'"),
    ("    split: trainval\n", "not one of the task.s splits"),
])
def test_eval_set_schema_errors_name_the_file_and_the_eval_set(tmp_path, change, message):
    text = THREE_EVAL_SETS.replace("    metrics: [top1]\n", "    metrics: [top1]\n" + change, 1)
    if "split: trainval" in change:
        text = text.replace("    split: test\n    class_subset", "    class_subset", 1)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError, match=message) as error:
        tasks.Registry([tmp_path])
    assert "bad.yaml: eval_sets[1]" in str(error.value)


def test_unknown_metric_is_one_line_before_any_work(tmp_path, data_dir, capsys):
    (tmp_path / "t.yaml").write_text(THREE_EVAL_SETS.replace("[top1, top5, ece", "[top1, top7, ece"))
    code = cli.main(["run", "--model", "pixels", "--tasks", "core_digits", "--tasks-dir", str(tmp_path),
                     "--out", str(tmp_path / "run"), "--data-dir", data_dir])
    err = capsys.readouterr().err
    assert code == 2 and "top7" in err and err.count("\n") == 1


def test_metadata_join_errors(core_tasks, tmp_path, data_dir):
    from vtabkit import metadata

    ids = np.array(["a", "b", "c"])
    (tmp_path / "dup.csv").write_text("id,f\na,1\nb,2\nb,3\nc,4\n")
    (tmp_path / "missing.csv").write_text("id,f\na,1\nb,2\n")
    (tmp_path / "columns.csv").write_text("id,g\na,1\nb,2\nc,3\n")
    with pytest.raises(UserError, match="'b' appears more than once"):
        metadata.join(tmp_path / "dup.csv", "id", ids, ["f"])
    with pytest.raises(UserError, match="no row for 1 of 3 examples"):
        metadata.join(tmp_path / "missing.csv", "id", ids, ["f"])
    with pytest.raises(UserError, match="has no column 'f'"):
        metadata.join(tmp_path / "columns.csv", "id", ids, ["f"])
    with pytest.raises(UserError, match="does not exist"):
        metadata.join(tmp_path / "nowhere.csv", "id", ids, ["f"])
    groups, unused = metadata.join(tmp_path / "columns.csv", "id", np.array(["c", "a"]), ["g"])
    assert groups["g"].tolist() == [3, 1] and unused == 1


# ---------------------------------------------------------------------------------------------
# Multi-hot targets on arrays
# ---------------------------------------------------------------------------------------------

def _multi_label_digits():
    """Real digit images with 6 overlapping binary attributes (even, > 4, prime, ...)."""
    x, y = load_digits(return_X_y=True)
    attributes = np.stack([y % 2 == 0, y > 4, np.isin(y, [2, 3, 5, 7]), np.isin(y, [0, 6, 8, 9]),
                           np.isin(y, [1, 4, 7]), y % 3 == 0], axis=1).astype(np.uint8)
    x = x.astype(np.float32)
    return (x[:900], attributes[:900]), (x[900:1200], attributes[900:1200]), (x[1200:], attributes[1200:])


def _macro_ap(targets, scores):
    return np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1])])


def test_multi_label_linear_probe_matches_sklearn_one_vs_rest():
    train, val, test = _multi_label_digits()
    result = linear.evaluate_features(train, val, test, num_classes=6)
    assert "map" in result and "top1" not in result and result["selected_by"] == "val_map"
    # scikit-learn, one binary problem per class, at the same l2 on the same standardised data:
    # C = 1 / (l2 * n) for the mean-loss objective.
    x_fit = np.concatenate([train[0], val[0]])
    y_fit = np.concatenate([train[1], val[1]])
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    scores = np.stack([
        LogisticRegression(C=1.0 / (result["l2"] * len(x_fit)), max_iter=5000)
        .fit((x_fit - mean) / std, y_fit[:, c]).decision_function((test[0] - mean) / std)
        for c in range(6)], axis=1)
    assert abs(result["map"] - _macro_ap(test[1], scores)) < 0.015
    assert result["map"] > 0.8


def test_multi_label_knn_votes_equal_a_float64_brute_force():
    (bank_x, bank_y), _, (query_x, query_y) = _multi_label_digits()
    votes = knn.knn_votes(bank_x, bank_y, query_x, 6, [10, 50])
    bank = bank_x / np.linalg.norm(bank_x, axis=1, keepdims=True)
    queries = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)
    similarity = queries.astype(np.float64) @ bank.T.astype(np.float64)
    for k in (10, 50):
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / 0.07)
        expected = np.einsum("qk,qkc->qc", weights, bank_y[nearest].astype(np.float64)) / weights.sum(1, keepdims=True)
        np.testing.assert_allclose(votes[k], expected, rtol=1e-4, atol=1e-6)
    result = knn.evaluate_features((bank_x, bank_y), None, (query_x, query_y), num_classes=6)
    assert result["map"] > 0.7


def test_protocols_that_did_something_else_are_recorded_and_marked(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--model", "pixels", "--model-arg", "resolution=8", "--suite", "lite",
                     "--tasks", "lite_count", "--protocol", "fewshot,knn", "--set", "fewshot.shots=[200]",
                     "--set", "fewshot.seeds=[0]", "--set", "knn.ks=[5000]", "--out", str(out),
                     "--data-dir", data_dir, "--quiet"]) == 0
    fewshot_record, knn_record = sorted(results.read_records(out / "results.jsonl"), key=lambda r: r["protocol"])
    details = fewshot_record["details"]
    assert details["shots"] == 200 and details["shots_per_class_max"] < 200
    assert details["num_train"] == 800  # every example of every (short) class
    assert knn_record["details"]["k"] == 5000 and knn_record["details"]["k_used"] == 1000
    assert knn_record["details"]["k_capped"] is True
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "examples per class (asked 200)" in text and "capped at the bank size (1000)" in text
