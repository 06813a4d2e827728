"""The robustness family: task definitions pinned to the reference facts, the TFDS paths under
mock data, the 200-class subsets, SI-Score's metadata, and where the 1000-way head comes from
(a linear probe shared by every task, the model's own classifier, or few-shot)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vtabkit import cli, data, downloads, metadata, metrics, prepare, regimes, results, runner, tasks
from vtabkit.errors import UserError
from vtabkit.models.model import normalise
from vtabkit.models.registry import Model, register_model
from vtabkit.protocols import fewshot, linear

# Written from the reference facts (shared/reference/robustness_remote_sensing.md) and TFDS.
PINS = {
    "imagenet": ["imagenet2012:5.1.0", "imagenet2012_real:1.0.0"],
    "imagenet_v2": ["imagenet_v2/matched-frequency:3.0.0", "imagenet_v2/threshold-0.7:3.0.0",
                    "imagenet_v2/topimages:3.0.0"],
    "imagenet_a": ["imagenet_a:0.1.0", "imagenet_a:0.1.0"],
    "imagenet_r": ["imagenet_r:0.2.0", "imagenet_r:0.2.0"],
    "imagenet_sketch": ["imagenet_sketch:1.0.0"],
    "siscore": ["siscore/size:1.0.0", "siscore/rotation:1.0.0", "siscore/location:1.0.0"],
}
BENCHMARK = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression"]
EXTRA = ["gaussian_blur", "saturate", "spatter", "speckle_noise"]
CALIBRATION = {"ece", "nll", "brier"}


def _all_robustness_tasks() -> list[tasks.Task]:
    return [tasks.get_task(t) for t in tasks.list_tasks() if tasks.get_task(t).family == "robustness"]


def test_every_robustness_task_fits_one_imagenet_head_and_pins_its_eval_sets():
    suite = tasks.get_suite("robustness")
    assert suite.regime == "per_class:50+10" and suite.protocols == ("linear",)
    assert list(suite.tasks) == list(PINS) + [f"imagenet_c_{c}" for c in BENCHMARK]
    assert tasks.get_suite("robustness_c_extra").tasks == tuple(f"imagenet_c_{c}" for c in EXTRA)
    everything = _all_robustness_tasks()
    assert len(everything) == len(PINS) + len(BENCHMARK) + len(EXTRA)
    regime = regimes.parse(suite.regime)
    train_views = {task.regime_views(regime) for task in everything}
    assert len(train_views) == 1  # one (train, val) for all: the run fits one head and shares it
    (train, val), = train_views
    assert train == val and train.dataset == "imagenet2012:5.1.0" and train.split == "train[:200000]"
    for task in everything:
        assert task.num_classes == 1000 and "ILSVRC2012_img_val.tar" in task.manual_download
        for eval_set in task.eval_sets:
            if eval_set.view.target == "single":  # calibration on softmax scores for every eval set
                assert CALIBRATION <= set(eval_set.metrics), (task.id, eval_set.name)
        if task.id in PINS:
            assert [e.view.dataset for e in task.eval_sets] == PINS[task.id]


def test_imagenet_c_is_nineteen_tasks_of_five_severities_named_for_the_report():
    from tensorflow_datasets.datasets.imagenet2012_corrupted import imagenet2012_corrupted_dataset_builder as c

    assert c.BENCHMARK_CORRUPTIONS == BENCHMARK and c.EXTRA_CORRUPTIONS == EXTRA  # TFDS's own lists
    for corruption in BENCHMARK + EXTRA:
        task = tasks.get_task(f"imagenet_c_{corruption}")
        assert [(e.name, e.view.dataset, e.view.split, e.primary_metric) for e in task.eval_sets] == [
            (f"imagenet_c_{corruption}_{s}", f"imagenet2012_corrupted/{corruption}_{s}:3.1.0", "validation", "top1")
            for s in range(1, 6)]


def test_real_labels_are_label_sets_and_imagenet_val_keeps_top5():
    val, real = tasks.get_task("imagenet").eval_sets
    assert val.metrics == ("top1", "top5", "ece", "nll", "brier") and val.view.target == "single"
    assert real.view.target == "set" and real.view.label == {"rule": "feature", "key": "real_label"}
    assert real.metrics == ("real_top1",)


# ---------------------------------------------------------------- the 200-class subsets

TFDS_WNIDS = (Path(tfds.__file__).parent / "datasets" / "imagenet2012" / "labels.txt").read_text().split()


@pytest.mark.parametrize("task_id, members", [
    # A few wnids read by hand from the releases (hendrycks/natural-adv-examples eval.py's
    # thousand_k_to_200, hendrycks/imagenet-r eval.py's imagenet_r_wnids), with their names.
    ("imagenet_a", {"n01498041": "stingray", "n01531178": "goldfinch", "n12267677": "acorn"}),
    ("imagenet_r", {"n01443537": "goldfish", "n07768694": "pomegranate", "n12267677": "acorn"}),
])
def test_200_class_lists_are_pinned(task_id, members):
    full, subset = tasks.get_task(task_id).eval_sets
    assert full.class_subset is None and subset.name == f"{task_id}_200"
    classes = subset.class_subset
    assert len(classes) == 200 and len(set(classes)) == 200 and list(classes) == sorted(classes)
    wnids = {TFDS_WNIDS[i] for i in classes}
    assert set(members) <= wnids
    assert "n01440764" not in wnids  # tench is in neither


def test_the_two_200_class_lists_differ():
    a = set(tasks.get_task("imagenet_a").eval_sets[1].class_subset)
    r = set(tasks.get_task("imagenet_r").eval_sets[1].class_subset)
    assert a != r and 0 < len(a & r) < 200


def test_restricted_argmax_matches_a_hand_written_200_way_reference():
    subset = tasks.get_task("imagenet_r").eval_sets[1].class_subset
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((300, 1000)).astype(np.float32)
    labels = rng.choice(subset, 300)
    scores[np.arange(150), labels[:150]] += 2.0  # some right, most wrong over 1000
    restricted = runner._restricted(scores, subset)
    # Reference: take the 200 columns, argmax there, map back to the ImageNet index.
    reference = np.asarray(subset)[scores[:, list(subset)].argmax(1)]
    assert metrics.top1(restricted, labels) == pytest.approx(np.mean(reference == labels))
    assert metrics.top1(restricted, labels) > metrics.top1(scores, labels)
    # Softmax over the subset only: probabilities outside it are zero.
    manual = np.exp(scores[:, list(subset)] - scores[:, list(subset)].max(1, keepdims=True))
    manual /= manual.sum(1, keepdims=True)
    position = {c: i for i, c in enumerate(subset)}
    expected_nll = -np.mean(np.log(manual[np.arange(300), [position[c] for c in labels]]))
    assert metrics.nll(restricted, labels) == pytest.approx(expected_nll, rel=1e-5)


# ---------------------------------------------------------------- TFDS paths under mock data

def _mock(num_examples: int = 3):
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=num_examples)


MOCKED = [(task_id, index) for task_id in PINS for index in range(len(PINS[task_id]))] + [
    ("imagenet_c_frost", 0), ("imagenet_c_speckle_noise", 4)]  # a few of the 95 ImageNet-C configs


@pytest.mark.parametrize("task_id, index", MOCKED)
def test_eval_set_tfds_path_under_mock_data(task_id, index, tmp_path):
    eval_set = tasks.get_task(task_id).eval_sets[index]
    with _mock():
        targets, ids = data.read_targets(eval_set.view, str(tmp_path))
        images, batch_targets, batch_ids, mask = next(data.batches(eval_set.view, resolution=16, batch_size=4,
                                                                  data_dir=str(tmp_path)))
    assert len(ids) == 3 and mask.tolist() == [True, True, True, False]
    assert images.shape == (4, 16, 16, 3) and list(batch_ids[:3]) == list(ids)
    if eval_set.view.target == "set":  # ReaL: padded label lists in ImageNet index space
        assert targets.ndim == 2 and targets.min() >= -1 and targets.max() < 1000
        np.testing.assert_array_equal(data.targets_array(batch_targets[:3], "set"), targets)
    else:
        assert targets.shape == (3,) and 0 <= targets.min() and targets.max() < 1000
        np.testing.assert_array_equal(batch_targets[:3], targets)
    if task_id == "siscore":  # metadata.csv is keyed by the image_id feature, read beside the ids
        with _mock():
            keys, key_ids = data.read_feature(eval_set.view, str(tmp_path), eval_set.metadata["id_feature"])
        assert list(key_ids) == list(ids) and all(str(value).isdigit() for value in keys)


def test_train_pool_under_mock_data(tmp_path):
    task = tasks.get_task("imagenet")
    train, _ = task.regime_views(regimes.parse("per_class:50+10"))
    with _mock(5):
        targets, ids = data.read_targets(train, str(tmp_path))
    assert len(targets) == 5 and targets.max() < 1000 and ids[0].startswith("imagenet2012-train")


def test_siscore_metadata_joins_on_image_id_with_location_pairs(tmp_path):
    location = tasks.get_task("siscore").eval_sets[2]
    assert location.metadata["id_feature"] == "image_id"
    with _mock(6):
        targets, _ = data.read_targets(location.view, str(tmp_path))
        ids, _ = data.read_feature(location.view, str(tmp_path), "image_id")
    ids = np.asarray(ids).astype(str)
    xs, ys = [0.0, 0.5, 0.0, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    rows = "\n".join(f"{i},{x},{y},0.2" for i, x, y in zip(ids, xs, ys))
    csv = tmp_path / "metadata.csv"
    csv.write_text("image_id,x_coord,y_coord,area\n" + rows + "\n999999999,0.5,0.5,0.2\n")
    groups, unused = metadata.join(csv, "image_id", ids, metrics.metadata_columns(location.metrics))
    assert unused == 1 and list(groups["x_coord"]) == xs and list(groups["y_coord"]) == ys
    scores = np.zeros((6, 1000))
    scores[np.arange(6), targets] = 1.0
    scores[5] = 0.0  # the (1, 1) example: wrong unless its label is 0
    scores[5, 0 if targets[5] else 1] = 1.0
    values, by_group = metrics.compute(list(location.metrics), scores, targets, target_kind="single", metadata=groups)
    assert by_group["top1@x_coord,y_coord"] == {"0.0,0.0": 1.0, "0.0,1.0": 1.0, "0.5,0.0": 1.0, "1.0,1.0": 0.0}
    assert values["top1@x_coord,y_coord"] == pytest.approx(0.75)  # unweighted over the 4 cells
    assert values["top1"] == pytest.approx(5 / 6)


# ---------------------------------------------------------------- data status / prepare

def test_manual_imagenet_steps_name_the_tars(tmp_path):
    task = tasks.get_task("imagenet_c_fog")
    problems = [fix for _, fix in prepare.missing_datasets([task], str(tmp_path))]
    assert len(problems) == 1 and "ILSVRC2012_img_train.tar" in problems[0]  # the task's own dataset first
    problem = prepare.eval_dataset_problem(task, "imagenet2012_corrupted/fog_3:3.1.0", str(tmp_path))
    assert "manual download" in problem and "scikit-image" in problem and "\n" not in problem
    builder = prepare.source.open_builder("imagenet2012_corrupted/fog_3:3.1.0", str(tmp_path))
    assert prepare.missing_manual_files(task, builder, "imagenet2012_corrupted/fog_3:3.1.0") == [
        str(prepare.manual_dir(builder) / "ILSVRC2012_img_val.tar")]
    line = prepare.missing_dataset_fix("imagenet2012_real:1.0.0", str(tmp_path), tasks.get_task("imagenet"))
    assert "ILSVRC2012_img_val.tar" in line and str(tmp_path) in line and "\n" not in line


def test_prepare_logs_manual_steps_for_every_imagenet_dataset(tmp_path):
    lines = []
    summary = prepare.prepare_datasets([tasks.get_task("imagenet")], str(tmp_path), log=lines.append)
    assert summary.outcomes["imagenet2012:5.1.0"][0] == prepare.MANUAL
    assert summary.outcomes["imagenet2012_real:1.0.0"][0] == prepare.MANUAL
    assert any("image-net.org" in line and str(tmp_path) in line for line in lines)


def _csv(variant_columns: str) -> str:
    return f"image_id,{variant_columns}\n1,0.1\n2,0.2\n"


def test_siscore_metadata_is_fetched_from_the_declared_urls(tmp_path, monkeypatch):
    fetched = []

    def fake_fetch(url, path, timeout=60.0):
        fetched.append(url)
        column = {"size": "area", "rotation": "rotation"}.get(Path(path).parent.name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(_csv(column) if column else "image_id,x_coord,y_coord\n1,0.0,0.5\n")
    monkeypatch.setattr(downloads, "fetch_file", fake_fetch)
    summary = prepare.prepare_metadata([tasks.get_task("siscore")], str(tmp_path), log=lambda line: None)
    assert fetched == [f"https://s3.us-east-1.amazonaws.com/si-score-dataset/object_{v}/metadata.csv"
                       for v in ("size", "rotation", "location")]
    assert [status for status, _ in summary.outcomes.values()] == [prepare.PREPARED] * 3
    assert (tmp_path / "siscore" / "location" / "metadata.csv").is_file()
    again = prepare.prepare_metadata([tasks.get_task("siscore")], str(tmp_path), log=lambda line: None)
    assert [status for status, _ in again.outcomes.values()] == [prepare.READY] * 3 and len(fetched) == 3


def test_siscore_metadata_copied_from_a_local_dir_and_columns_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "fetch_file", lambda *a, **k: pytest.fail("must not download"))
    local = tmp_path / "local"
    (local / "size").mkdir(parents=True)
    (local / "size" / "metadata.csv").write_text(_csv("area"))
    (local / "object_rotation").mkdir()  # the bucket's folder name works too
    (local / "object_rotation" / "metadata.csv").write_text(_csv("angle"))  # wrong column
    data_dir = tmp_path / "tfds"
    summary = prepare.prepare_metadata([tasks.get_task("siscore")], str(data_dir), local, log=lambda line: None)
    size, rotation, location = summary.outcomes.values()
    assert size[0] == prepare.PREPARED and (data_dir / "siscore" / "size" / "metadata.csv").read_text() == _csv("area")
    assert rotation[0] == prepare.FAILED and "no column 'rotation'" in rotation[1] and "metadata.csv" in rotation[1]
    assert location[0] == prepare.MISSING and str(local / "location" / "metadata.csv") in location[1]


def test_data_prepare_cli_reports_a_missing_metadata_file_in_one_line(tmp_path, capsys, monkeypatch):
    def offline(url, path, timeout=60.0):
        raise ConnectionError("no network")
    monkeypatch.setattr(downloads, "fetch_file", offline)
    monkeypatch.setattr(prepare, "prepare_datasets", lambda chosen, data_dir: prepare.PrepareSummary())
    code = cli.main(["data", "prepare", "--tasks", "siscore", "--data-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code != 0 and captured.err.count("\n") == 1
    assert "siscore/siscore_size metadata: offline" in captured.out
    assert str(tmp_path / "siscore" / "size" / "metadata.csv") in captured.out


# ---------------------------------------------------------------- heads: linear (shared), model, few-shot

STAND_IN = """
task: {task}
family: robustness
dataset: vtabkit_digits:1.0.0
num_classes: 10
description: a robustness stand-in (fit on digits train, scored on other splits)
splits:
  train: train
  test: test
eval_sets:
  - name: {task}_test
    split: test
    metrics: [top1, ece, nll, brier]
  - name: {task}_low
    split: test[:300]
    class_subset: [0, 1, 2, 3, 4]
    metrics: [top1, ece]
"""

HEAD_CALLS: list[int] = []


@register_model("test_digits_with_head")
def digits_with_head() -> Model:
    """Pixel features plus its own fixed 10-class 'classifier' (a seeded random projection)."""
    projection = np.random.default_rng(3).standard_normal((64, 10))

    def apply(params, images):
        return np.asarray(images).reshape(len(images), -1)[:, ::3] / 255.0

    def logits(params, images):
        HEAD_CALLS.append(len(images))
        return np.asarray(images).reshape(len(images), -1)[:, ::3] / 255.0 @ projection
    return Model(apply=apply, logits=logits, num_classes=10, resolution=8, jittable=False,
                 fingerprint="test-digits-with-head")


@register_model("test_digits_no_head")
def digits_no_head() -> Model:
    return Model(apply=lambda params, images: np.asarray(images).reshape(len(images), -1) / 255.0,
                 resolution=8, jittable=False, fingerprint="test-digits-no-head")


@pytest.fixture
def stand_ins(tmp_path):
    folder = tmp_path / "stand_in"
    folder.mkdir()
    for name in ("stand_a", "stand_b"):
        (folder / f"{name}.yaml").write_text(STAND_IN.format(task=name))
    return folder


def _run(folder, out, data_dir, **options):
    lines = []
    config = runner.RunConfig(model=options.pop("model", "test_digits_with_head"), tasks=["stand_a", "stand_b"],
                              tasks_dirs=[str(folder)], out=out, data_dir=data_dir, use_cache=False,
                              batch_size=128, progress=False, **options)
    return runner.run(config, log=lines.append), lines


def test_linear_head_fitted_once_for_all_tasks_with_val_drawn_from_train(stand_ins, tmp_path, data_dir, monkeypatch):
    fits = []
    original = linear.fit

    def counted(train, val, **kwargs):
        fits.append((len(train[1]), len(val[1])))
        return original(train, val, **kwargs)
    monkeypatch.setattr(linear, "fit", counted)
    written, lines = _run(stand_ins, tmp_path / "run", data_dir, regime="per_class:30+10")
    assert fits == [(300, 100)]  # one fit, 30 + 10 per class, for both tasks
    a_test, a_low, b_test, b_low = written
    assert [r["head"] for r in written] == ["linear"] * 4 and b_test["head_fitted_for"] == "stand_a"
    assert a_test["num_examples"] == b_test["num_examples"] == {"train": 300, "val": 100, "eval": 797}
    assert a_test["split_ids"] == b_test["split_ids"] and a_test["split_ids"]["train"] != a_test["split_ids"]["val"]
    assert a_test["metrics"]["top1"] == b_test["metrics"]["top1"] > 0.8
    assert b_test["timings"]["fit_s"] == 0.0 < a_test["timings"]["fit_s"]
    assert any("fitted for stand_a" in line for line in lines)


def test_per_class_train_and_val_never_overlap():
    regime = regimes.parse("per_class:3+2")
    labels = np.repeat(np.arange(4), 10)
    train, val = regime.train_indices(labels, 7), regime.val_indices(labels, 7)
    assert not set(train) & set(val)
    assert np.bincount(labels[train]).tolist() == [3] * 4 and np.bincount(labels[val]).tolist() == [2] * 4
    np.testing.assert_array_equal(train, regimes.parse("per_class:3").train_indices(labels, 7))
    for bad in ("per_class:3+0", "per_class:+2", "first:3+2"):
        with pytest.raises(UserError, match="unknown regime"):
            regimes.parse(bad)


def test_model_head_scores_are_the_models_logits(stand_ins, tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(linear, "fit", lambda *a, **k: pytest.fail("model_head must not fit a probe"))
    HEAD_CALLS.clear()
    out = tmp_path / "run"
    written, _ = _run(stand_ins, out, data_dir, protocols=["model_head"], regime="full")
    assert [r["head"] for r in written] == ["model"] * 4 and written[0]["num_examples"]["train"] == 0
    # Batches of 128: test (797 -> 7) and test[:300] (3), shared by both tasks; no train image.
    assert len(HEAD_CALLS) == 7 + 3
    model = digits_with_head()
    view = tasks.get_task("stand_a", [str(stand_ins)]).eval_sets[0].view
    expected = []
    for batch, _, _, mask in data.batches(view, resolution=8, batch_size=128, data_dir=data_dir):
        expected.append(model.logits(None, normalise(model, batch, np))[mask])  # as the runner feeds it
    stored = np.load(out / written[0]["predictions"]["path"])
    np.testing.assert_allclose(stored["scores"], np.concatenate(expected), rtol=1e-5)
    low = np.load(out / written[1]["predictions"]["path"])["scores"]
    assert np.isinf(low[:, 5:]).all() and np.isfinite(low[:, :5]).all()  # the class subset still applies
    assert report_verify(out) == (4, [])


def report_verify(out):
    from vtabkit import report

    return report.verify(out)


def test_model_head_without_a_head_is_one_line_before_any_work(stand_ins, tmp_path, data_dir, capsys):
    code = cli.main(["run", "--model", "test_digits_no_head", "--tasks", "stand_a", "--tasks-dir", str(stand_ins),
                     "--protocol", "model_head", "--regime", "full", "--out", str(tmp_path / "run"), "--data-dir", data_dir, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "declares none" in err and "--protocol linear" in err
    assert not (tmp_path / "run" / results.RESULTS_FILE).exists()


def test_fewshot_heads_are_scored_on_the_same_eval_sets(stand_ins, tmp_path, data_dir, monkeypatch):
    fits = []
    original = fewshot.fit

    def counted(train, val, **kwargs):
        fits.append(kwargs["config"]["shots"])
        return original(train, val, **kwargs)
    monkeypatch.setattr(fewshot, "fit", counted)
    written, _ = _run(stand_ins, tmp_path / "run", data_dir, protocols=["fewshot"], regime="full",
                      protocol_config={"fewshot": {"shots": [5, 10], "seeds": [0]}})
    assert fits == [5, 10]  # one head per shots setting, shared by both tasks
    assert [(r["task"], r["eval_set"], r["setting"]) for r in written] == [
        (t, f"{t}_{e}", s) for t in ("stand_a", "stand_b") for s in ("5shot", "10shot") for e in ("test", "low")]
    by_setting = {r["setting"]: r["metrics"]["top1"] for r in written if r["eval_set"] == "stand_a_test"}
    assert by_setting["10shot"] > 0.5 and by_setting["5shot"] > 0.3


def test_flax_model_with_its_own_head_is_scored_by_model_head(stand_ins, tmp_path, data_dir):
    """A tiny Flax ViT that keeps a 10-class head (random init, then read back from a checkpoint
    it was saved to): `model_head` scores are exactly its logits."""
    from vtabkit.models import checkpoints
    from vtabkit.models.registry import create_model

    model = create_model("vit_tiny", num_classes=10, resolution=8)
    assert model.num_classes == 10 and model.logits is not None
    assert create_model("vit_tiny", resolution=8).logits is None  # no head unless asked for
    path = tmp_path / "tiny.npz"
    checkpoints.save_npz(model.params, path)
    loaded = create_model("vit_tiny", num_classes=10, resolution=8, checkpoint=str(path))
    images = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded.logits(loaded.params, images)),
                               np.asarray(model.logits(model.params, images)), rtol=1e-6)
    out = tmp_path / "run"
    config = runner.RunConfig(model="vit_tiny", model_args={"num_classes": 10, "resolution": 8},
                              tasks=["stand_a"], tasks_dirs=[str(stand_ins)], out=out, data_dir=data_dir,
                              use_cache=False, batch_size=256, progress=False, protocols=["model_head"],
                              regime="full")
    written = runner.run(config, log=lambda line: None)
    view = tasks.get_task("stand_a", [str(stand_ins)]).eval_sets[0].view
    expected = [np.asarray(model.logits(model.params, normalise(model, batch, np)))[mask]
                for batch, _, _, mask in data.batches(view, resolution=8, batch_size=256, data_dir=data_dir)]
    stored = np.load(out / written[0]["predictions"]["path"])["scores"]
    np.testing.assert_allclose(stored, np.concatenate(expected), rtol=1e-4, atol=1e-5)
    assert written[0]["head"] == "model" and written[0]["details"] == {"head": "model", "fitted": False}


def test_a_checkpoint_without_an_imagenet_head_refuses_head_true():
    from vtabkit.models import zoo

    with pytest.raises(UserError, match="no ImageNet-1k classifier head"):
        zoo._checkpoint_factory("augreg_vit_b16")(head=True)
    assert {name for name, entry in zoo.CHECKPOINTS.items() if entry.get("head")} == {
        "bv_vit_s16_i1k", "mixer_b16_i1k", "bit_s_r50x1"}


def test_data_status_lists_eval_datasets_and_metadata_per_task(tmp_path, capsys):
    assert cli.main(["data", "status", "--tasks", "imagenet,siscore", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 task(s) have their data; 2 missing" in out
    for name in ("imagenet2012_real:1.0.0", "siscore/location:1.0.0", "siscore_location metadata"):
        assert name in out
    assert str(tmp_path / "siscore" / "size" / "metadata.csv") in out and "image-net.org" in out


def test_missing_metadata_file_is_one_line_and_plain_metrics_still_reported(tmp_path, data_dir):
    folder = tmp_path / "meta_tasks"
    folder.mkdir()
    (folder / "stand_meta.yaml").write_text(STAND_IN.format(task="stand_meta") + (
        "  - name: stand_meta_factor\n    split: test[:200]\n"
        "    metadata: {path: absent/metadata.csv, id_column: example}\n"
        "    metrics: [top1, top1@factor, ece]\n"))
    lines = []
    written = runner.run(runner.RunConfig(
        model="test_digits_with_head", tasks=["stand_meta"], tasks_dirs=[str(folder)], out=tmp_path / "run",
        data_dir=data_dir, use_cache=False, batch_size=128, progress=False, regime="full"), log=lines.append)
    factor = written[-1]
    assert set(factor["metrics"]) == {"top1", "ece"} and factor["eval"]["metadata"]["missing"] is True
    notes = [line for line in lines if "metadata file" in line and "is missing" in line]
    assert len(notes) == 1 and str(folder / "absent" / "metadata.csv") in notes[0]
    assert report_verify(tmp_path / "run") == (3, [])


def test_an_eval_set_whose_data_is_missing_is_skipped_in_one_line_unless_strict(tmp_path, data_dir, capsys):
    folder = tmp_path / "gap_tasks"
    folder.mkdir()
    (folder / "stand_gap.yaml").write_text(STAND_IN.format(task="stand_gap") + (
        "  - name: stand_gap_v2\n    dataset: svhn_cropped:3.1.0\n    split: test\n"
        "    metrics: [top1]\n"))  # not prepared in the test data dir
    base = ["run", "--model", "pixels", "--tasks", "stand_gap", "--tasks-dir", str(folder), "--regime", "full",
            "--data-dir", data_dir, "--quiet", "--no-cache"]
    capsys.readouterr()
    assert cli.main([*base, "--strict", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stand_gap / stand_gap_v2" in err and "--strict" in err
    assert not (tmp_path / "strict").exists()

    assert cli.main([*base, "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    skips = [line for line in (captured.out + captured.err).splitlines() if line.startswith("skipping eval set")]
    assert len(skips) == 1 and "stand_gap / stand_gap_v2" in skips[0] and "svhn_cropped" in skips[0]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["eval_set"] for r in records] == ["stand_gap_test", "stand_gap_low"]
