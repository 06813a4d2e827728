"""The offline multi-label lite task (``vtabkit_scenes`` / ``lite_scenes``) and the multi-hot
paths of the few-shot and fine-tune protocols."""

import colorsys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import vtabkit.builders  # noqa: F401  (registers the builders)
from vtabkit import cli, results, tasks
from vtabkit.builders import scenes
from vtabkit.errors import UserError
from vtabkit.protocols import fewshot, merge_config

SIZES = {"train": 1000, "validation": 300, "test": 500}


@pytest.fixture(scope="module")
def scene_examples(data_dir):
    builder = tfds.builder("vtabkit_scenes", data_dir=data_dir)
    builder.download_and_prepare()
    return builder, {split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
                     for split in ("train", "test")}


def _kinds_by_colour(image: np.ndarray) -> list[int]:
    """Kinds present, found from pixel hues alone (independent of the renderer's bookkeeping):
    the background is grey (chroma <= 20), each kind has its own hue (±0.03)."""
    rgb = image.reshape(-1, 3).astype(np.float64) / 255
    chroma = rgb.max(1) - rgb.min(1)
    found = []
    coloured = rgb[chroma > 0.25]
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] for p in coloured])
    for kind, hue in enumerate(scenes.HUES):
        distance = np.abs((hues - hue + 0.5) % 1.0 - 0.5)
        if np.sum(distance < 0.06) >= 3:
            found.append(kind)
    return found


def test_scenes_splits_and_labels_match_the_pixels(scene_examples):
    builder, examples = scene_examples
    assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
    assert builder.info.features["labels"].feature.names == list(scenes.KINDS)
    for example in examples["train"][:150] + examples["test"][:50]:
        labels = [int(v) for v in example["labels"]]
        assert labels == sorted(set(labels)) and 1 <= len(labels) <= scenes.MAX_OBJECTS
        assert labels == _kinds_by_colour(example["image"])
    prevalence = np.mean([[k in e["labels"] for k in range(5)] for e in examples["train"]], axis=0)
    assert np.all((prevalence > 0.3) & (prevalence < 0.55))  # about 0.41 each (module doc)


def test_lite_scenes_task_is_multi_label_with_first_n_and_full_splits():
    task = tasks.get_task("lite_scenes")
    assert task.family == "lite" and task.target == "multi" and task.num_classes == 5
    assert task.splits["train"] == "train" and task.splits["val"] == "validation"
    assert task.eval_sets[0].metrics == ("map", "micro_f1")


def _multi_label_digits():
    x, y = load_digits(return_X_y=True)
    attributes = np.stack([y % 2 == 0, y > 4, np.isin(y, [2, 3, 5, 7]), y % 3 == 0], axis=1).astype(np.uint8)
    return x.astype(np.float32), attributes


def test_fewshot_multi_hot_ridge_equals_a_float64_closed_form():
    x, y = _multi_label_digits()
    # Pixels constant over the few-shot set are scaled by 1/STD_EPS; leave them out so the
    # comparison measures the solver, not float32 round-off on a 1e5 amplification.
    x = x[:, x[:120].std(0) > 0]
    config = merge_config("fewshot", {"shots": 30, "seed": 1})
    head, details = fewshot.fit((x[:1000], y[:1000]), None, num_classes=4, target="multi", config=config)
    assert details["sampling"] == "first_n" and details["num_train"] == 120 and not details["seed_changes_set"]
    few_x, few_y = x[:120].astype(np.float64), y[:120].astype(np.float64)
    mean, scale = few_x.mean(0), few_x.std(0) + fewshot.STD_EPS
    design = np.c_[(few_x - mean) / scale, np.full(120, fewshot.BIAS)]
    weights = np.linalg.solve(design.T @ design + 1024 * np.eye(design.shape[1]), design.T @ (2 * few_y - 1))
    query = np.c_[(x[1000:].astype(np.float64) - mean) / scale, np.full(len(x) - 1000, fewshot.BIAS)]
    np.testing.assert_allclose(fewshot.predict(head, x[1000:]), query @ weights, rtol=2e-3, atol=2e-3)


def test_fewshot_multi_hot_selects_l2_by_val_map_and_refuses_loo():
    x, y = _multi_label_digits()
    result = fewshot.evaluate_features((x[:900], y[:900]), (x[900:1200], y[900:1200]), (x[1200:], y[1200:]), 4,
                                       {"shots": 25, "seed": 0, "l2_selection": "val"})
    assert "map" in result and "top1" not in result and result["map"] > 0.8
    assert result["l2"] == fewshot.L2_GRID[len(fewshot.L2_GRID) - 1 - int(np.argmax(result["l2_holdout_map"][::-1]))]
    with pytest.raises(UserError, match="single-label"):
        fewshot.evaluate_features((x[:900], y[:900]), None, (x[1200:], y[1200:]), 4,
                                  {"shots": 25, "seed": 0, "l2_selection": "loo"})


CHANCE_MAP = 0.41  # prevalence of each kind (module doc of vtabkit.builders.scenes)


def test_lite_scenes_end_to_end_with_every_protocol(tmp_path, data_dir):
    out = tmp_path / "run"
    assert cli.main(["run", "--model", "pixels", "--model-arg", "resolution=16", "--suite", "lite_multilabel",
                     "--protocol", "linear,knn,fewshot", "--regime", "first:600", "--set", "fewshot.shots=[60]",
                     "--set", "fewshot.seeds=[0]", "--out", str(out), "--data-dir", data_dir, "--quiet"]) == 0
    assert cli.main(["run", "--model", "vit_tiny", "--suite", "lite_multilabel", "--protocol", "finetune",
                     "--set", "finetune.sweep=quick", "--set", "finetune.batch_size=32",
                     "--set", "finetune.micro_batch_size=16", "--out", str(out), "--data-dir", data_dir,
                     "--quiet"]) == 0
    records = {r["protocol"]: r for r in results.read_records(out / "results.jsonl")}
    assert set(records) == {"linear", "knn", "fewshot", "finetune"}
    for name, record in records.items():
        assert record["primary_metric"] == "map" and set(record["metrics"]) == {"map", "micro_f1"}
    for name in ("linear", "knn", "fewshot"):
        assert records[name]["regime"] == "first:600"
        assert records[name]["metrics"]["map"] > CHANCE_MAP + 0.15, (name, records[name]["metrics"])
    assert records["linear"]["details"]["num_train"] == 600 and records["linear"]["details"]["selected_by"] == "val_map"
    assert records["fewshot"]["details"]["sampling"] == "first_n" and records["fewshot"]["details"]["num_train"] == 300
    assert records["finetune"]["details"]["selected_by"] == "val_map"
    assert records["finetune"]["metrics"]["map"] > CHANCE_MAP, records["finetune"]["metrics"]
