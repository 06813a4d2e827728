"""lite_robust: the robustness path offline — one head, many shifted eval sets, calibration,
SI-Score-like factor sweeps joined from a metadata CSV, the robustness table and figures."""

import csv
import json
import textwrap

import numpy as np
import pytest

from vtabkit import metadata, metrics, report, report_robustness, runner, tasks
from vtabkit.builders import digits_shift, siscore
from vtabkit.errors import UserError
from vtabkit.models.registry import Model, register_model
from vtabkit.protocols import linear

BATCHES: list[int] = []
BATCH = 100


@register_model("robust_counting_pixels")
def counting_pixels() -> Model:
    """The `pixels` model (32 px, values in [0, 1], flattened) that counts the batches it is shown."""
    def apply(params, images):
        BATCHES.append(len(images))
        return np.asarray(images).reshape(len(images), -1)
    return Model(apply=apply, resolution=32, value_range=(0.0, 1.0), jittable=False, fingerprint="robust-counting")


SIZES = {"train800": 800, "val200": 200, "test": 797, **{name: 797 for name in digits_shift.split_names()},
         "siscore_size": 300, "siscore_rotation": 360, "siscore_location": 500}


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("robust") / "run"
    fits = []
    original = linear.fit

    def counted(train, val, **kwargs):
        fits.append(len(train[1]))
        return original(train, val, **kwargs)

    BATCHES.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(linear, "fit", counted)
        written = runner.run(model="robust_counting_pixels", suite="lite_robust", out=out, data_dir=data_dir,
                             use_cache=False, batch_size=BATCH, progress=False, log=lambda line: None)
    return out, written, fits, list(BATCHES)


def test_one_head_scored_on_every_eval_set_each_image_once(robust_run):
    out, written, fits, batches = robust_run
    task = tasks.get_task("lite_robust")
    assert fits == [800]  # one head (train800), refit on nothing else, scored 16 times
    assert [r["eval_set"] for r in written] == [e.name for e in task.eval_sets] and len(written) == 16
    # Every view through the model exactly once: padded batches of 100 per split.
    assert len(batches) == sum(-(-n // BATCH) for n in SIZES.values()) and set(batches) == {BATCH}
    for record in written:
        assert {"top1", "ece", "nll", "brier"} <= set(record["metrics"]), record["eval_set"]
        assert record["num_examples"]["eval"] == SIZES[record["eval_set"]]
        assert 0 <= record["metrics"]["ece"] <= 1 and record["metrics"]["nll"] > 0
    assert report.verify(out) == (16, [])


def test_numbers_are_above_chance_and_shifts_cost_accuracy(robust_run):
    _, written, _, _ = robust_run
    top1 = {r["eval_set"]: r["metrics"]["top1"] for r in written}
    assert top1["test"] > 0.9  # clean digits, raw pixels
    for shift in digits_shift.SHIFTS:
        levels = [top1[f"{shift}_{severity}"] for severity in digits_shift.SEVERITIES]
        # Loosely: every shift costs accuracy, the worst severity most, and all stay above chance.
        assert top1["test"] - 0.03 > levels[0] > levels[2] > 0.12, (shift, levels)
    calibration = {r["eval_set"]: r["metrics"]["ece"] for r in written}
    assert np.mean([calibration[f"{s}_3"] for s in digits_shift.SHIFTS]) > calibration["test"]
    groups = {r["eval_set"]: r["metrics_by_group"] for r in written if "metrics_by_group" in r}
    size = groups["siscore_size"]["top1@area"]
    assert sorted(map(float, size)) == list(siscore.AREAS)
    assert np.mean([size["0.9"], size["1.0"]]) > np.mean([size["0.1"], size["0.2"], size["0.3"]]) + 0.2
    rotation = groups["siscore_rotation"]["top1@rotation"]
    assert sorted(map(int, rotation)) == list(siscore.ANGLES)
    assert rotation["1"] > np.mean([rotation[str(a)] for a in (61, 81, 101, 261, 281, 301)]) + 0.3
    location = groups["siscore_location"]["top1@x_coord,y_coord"]
    assert len(location) == 25 and "0.25,0.75" in location
    for record in written:
        if record["eval_set"].startswith("siscore_"):
            spec = record["primary_metric"]
            assert record["metrics"][spec] == pytest.approx(np.mean(list(record["metrics_by_group"][spec].values())))
            assert record["metrics"][spec] > 0.13  # above chance (10 classes)
            assert record["eval"]["metadata"]["id_feature"] == "image_id"


def test_robustness_table_equals_the_records(robust_run):
    out, written, _, _ = robust_run
    [table] = report_robustness.tables(report.load_frame(out))
    [head] = table.rows
    assert head == "robust_counting_pixels / linear / default"
    assert table.eval_sets == [r["eval_set"] for r in written] and table.shifted == table.eval_sets[1:]
    for record in written:
        assert table.values[head, record["eval_set"]] == pytest.approx(100 * record["metrics"][record["primary_metric"]])
    assert table.shifted_mean[head] == pytest.approx(
        np.mean([100 * r["metrics"][r["primary_metric"]] for r in written[1:]]))
    assert table.gap[head] is None  # no real_top1 eval set here
    text = report.render(out)
    assert "Robustness: lite_robust" in text and f"| {table.shifted_mean[head]:.1f} |" in text
    # The main table lists the eval sets in the task's order too (not alphabetically).
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| lite_robust")]
    assert rows[:len(written)] == ["lite_robust"] + [f"lite_robust / {r['eval_set']}" for r in written[1:]]


def test_robustness_table_reports_the_real_gap():
    import pandas as pd

    rows = [("test", "top1", True, 80.0), ("real", "real_top1", False, 85.5), ("v2", "top1", False, 70.0),
            ("sketch", "top1", False, 30.0)]
    frame = pd.DataFrame([{"base_task": "robust", "eval_set": name, "metric": metric, "main": main, "top1": value,
                           "column": "m / linear / default"} for name, metric, main, value in rows])
    [table] = report_robustness.tables(frame)
    assert table.gap["m / linear / default"] == pytest.approx(5.5)
    assert table.shifted == ["v2", "sketch"] and table.shifted_mean["m / linear / default"] == pytest.approx(50.0)
    assert "ReaL − original" in report_robustness.markdown([table])


def test_plots_are_written(robust_run, tmp_path):
    out, _, _, _ = robust_run
    text = report.render(out, plots=tmp_path / "plots")
    names = {path.name for path in (tmp_path / "plots").iterdir()}
    stem = "robust_lite_robust_siscore_{}_robust_counting_pixels_linear_default"
    for kind in ("size_top1_area", "rotation_top1_rotation", "location_top1_x_coord_y_coord"):
        assert {stem.format(kind) + ".png", stem.format(kind) + ".pdf"} <= names
    assert {"severity_lite_robust_robust_counting_pixels_linear_default.png",
            "severity_lite_robust_robust_counting_pixels_linear_default.pdf"} <= names
    for path in (tmp_path / "plots").iterdir():
        assert path.stat().st_size > 5000, path.name
        assert path.read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    assert "severity_lite_robust" in text


def test_siscore_metadata_matches_the_real_files_columns_and_the_data(robust_run, data_dir):
    import tensorflow_datasets as tfds

    for variant, rows in (("size", 300), ("rotation", 360), ("location", 500)):
        path = tasks.get_task("lite_robust").eval_sets[-1].metadata_path(data_dir).parents[2] / variant / "1.0.0" / "metadata.csv"
        with open(path) as stream:
            table = list(csv.DictReader(stream))
        assert tuple(table[0]) == siscore.METADATA_COLUMNS and len(table) == rows
        builder = tfds.builder(f"vtabkit_siscore/{variant}", data_dir=data_dir)
        examples = list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))
        by_id = {row["image_id"]: row for row in table}
        assert sorted(int(e["image_id"]) for e in examples) == list(range(rows))
        assert all(int(by_id[str(e["image_id"])]["foreground_class"]) == e["label"] for e in examples)
    assert {row["rotation"] for row in table} == {"0"} and {row["area"] for row in table} == {"0.9"}


def test_shift_builder_is_the_test_split_transformed():
    from sklearn.datasets import load_digits

    from vtabkit.builders import digits

    source = load_digits()
    images = digits.scale_to_uint8(source.images[digits.permutation(1797)[digits.NUM_TRAIN:]])
    assert np.array_equal(digits_shift.rotate(images[0].astype(float), 0.0), images[0])
    assert np.array_equal(digits_shift.rescale(images[0].astype(float), 1.0), images[0])
    noisy = digits_shift.shifted(images, "noise", 1).astype(float) - images
    unclipped = (images > 60) & (images < 195)
    assert np.std(noisy[unclipped]) == pytest.approx(digits_shift.NOISE_SIGMA[0], rel=0.05)
    assert np.array_equal(digits_shift.shifted(images, "rotate", 2), digits_shift.shifted(images, "rotate", 2))


# ---------------------------------------------------------------------------------------------
# Grouping by two columns, metadata joins, a missing metadata file.

def test_two_column_groups_match_a_hand_written_reference():
    rng = np.random.default_rng(0)
    n = 400
    scores, labels = rng.normal(size=(n, 5)), rng.integers(0, 5, n)
    x, y = rng.choice([0.0, 0.5, 1.0], n), rng.choice([0.0, 0.25], n)
    value, groups = metrics.compute(["top1@x,y", "nll@x,y"], scores, labels, target_kind="single",
                                    metadata={"x": x, "y": y})
    for spec in ("top1@x,y", "nll@x,y"):
        expected = {}
        for gx in (0.0, 0.5, 1.0):
            for gy in (0.0, 0.25):
                rows = [i for i in range(n) if x[i] == gx and y[i] == gy]
                if spec.startswith("top1"):
                    expected[f"{gx},{gy}"] = sum(scores[i].argmax() == labels[i] for i in rows) / len(rows)
                else:
                    expected[f"{gx},{gy}"] = -np.mean([scores[i, labels[i]] - np.log(np.exp(scores[i]).sum())
                                                      for i in rows])
        assert groups[spec].keys() == expected.keys()
        assert all(groups[spec][key] == pytest.approx(expected[key]) for key in expected)
        assert value[spec] == pytest.approx(np.mean(list(expected.values())))
    assert metrics.spec_columns("top1@x_coord,y_coord") == ("x_coord", "y_coord")
    assert metrics.metadata_columns(["top1", "top1@b,a", "ece@a"]) == ["a", "b"]
    with pytest.raises(UserError, match="column names after it"):
        metrics.parse_spec("top1@x,")
    with pytest.raises(UserError, match="column 'y'"):
        metrics.compute(["top1@x,y"], scores, labels, target_kind="single", metadata={"x": x})


def test_metadata_joined_on_a_feature_needs_its_stored_keys(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,area\n7,0.5\n3,0.1\n9,1.0\n")
    meta = {"path": str(tmp_path / "m.csv"), "id_column": "image_id", "id_feature": "image_id"}
    arrays = {"ids": np.array(["ds-test__0", "ds-test__1"]), "metadata_keys": np.array(["3", "9"])}
    assert metadata.join_stored(meta, arrays, ["area"])["area"].tolist() == [0.1, 1.0]
    assert metadata.join_stored(dict(meta, missing=True), arrays, ["area"]) is None
    with pytest.raises(UserError, match="lack metadata_keys"):
        metadata.join_stored(meta, {"ids": arrays["ids"]}, ["area"])
    (tmp_path / "bad.csv").write_text("id,area\n3,0.1\n")
    with pytest.raises(UserError, match=r"bad.csv has no column 'image_id'"):
        metadata.join(tmp_path / "bad.csv", "image_id", np.array(["3"]), ["area"])


MISSING = """
task: robust_missing
family: lite
dataset: vtabkit_digits:1.0.0
num_classes: 10
splits:
  train800: train[:800]
  val200: train[800:1000]
  test: test
eval_sets:
  - name: test
    split: test
  - name: sweep
    dataset: vtabkit_siscore/size:1.0.0
    split: test
    metadata: {path: <data_dir>/nowhere/metadata.csv, id_column: image_id, id_feature: image_id}
    metrics: [top1, ece, top1@area]
    primary_metric: top1@area
"""


def test_a_missing_metadata_file_is_one_line_and_plain_metrics_are_still_scored(tmp_path, data_dir):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "robust_missing.yaml").write_text(textwrap.dedent(MISSING))
    lines = []
    written = runner.run(model="pixels", tasks=["robust_missing"], tasks_dirs=[str(tmp_path / "tasks")],
                         out=tmp_path / "run", data_dir=data_dir, model_args={"resolution": 8},
                         use_cache=False, progress=False, log=lines.append)
    [line] = [line for line in lines if "metadata" in line]
    assert f"{data_dir}/nowhere/metadata.csv is missing" in line and "top1@area left out" in line
    sweep = written[1]
    assert set(sweep["metrics"]) == {"top1", "ece"} and sweep["metrics"]["top1"] > 0
    assert sweep["eval"]["metadata"]["missing"] is True
    assert report.verify(tmp_path / "run") == (2, [])
    text = report.render(tmp_path / "run")
    assert "| robust_missing / sweep | lite | – |" in text
    json.dumps(sweep)  # the record is plain JSON


def test_corruption_summary_is_the_mean_over_severities_and_over_benchmark_cells():
    """ImageNet-C-shaped records (2 benchmark corruptions and 1 extra, 5 severities): every
    severity counts (none is the 'main' one), the extra corruption stays out of the mean, and a
    missing cell shows the count instead of a mean over fewer."""
    import pandas as pd

    rng = np.random.default_rng(0)
    head = "m / linear / default"
    values = {(task, s): float(rng.uniform(20, 80)) for task in ("imagenet_c_fog", "imagenet_c_frost",
                                                                 "imagenet_c_spatter") for s in range(1, 6)}
    frame = pd.DataFrame([{"base_task": task, "eval_set": f"{task}_{s}", "metric": "top1", "main": s == 1,
                           "top1": value, "column": head} for (task, s), value in values.items()])
    robustness = report_robustness.tables(frame)
    fog = next(t for t in robustness if t.task == "imagenet_c_fog")
    assert fog.shifted == [f"imagenet_c_fog_{s}" for s in range(1, 6)]
    assert fog.shifted_mean[head] == pytest.approx(np.mean([values["imagenet_c_fog", s] for s in range(1, 6)]))
    summary = report_robustness.corruption_summary(robustness)
    assert summary.corruptions == ["fog", "frost"] and summary.extra == ["spatter"]  # spatter: robustness_c_extra
    for name in ("fog", "frost", "spatter"):
        assert summary.means[head, name] == pytest.approx(np.mean([values[f"imagenet_c_{name}", s] for s in range(1, 6)]))
    benchmark = [v for (task, _), v in values.items() if task != "imagenet_c_spatter"]
    assert summary.overall[head] == pytest.approx(np.mean(benchmark)) and summary.cells[head] == (10, 10)
    text = report_robustness.markdown(robustness)
    assert f"| {np.mean(benchmark):.1f} |" in text and "spatter (extra)" in text

    partial = report_robustness.corruption_summary(report_robustness.tables(frame[frame["eval_set"] != "imagenet_c_frost_3"]))
    assert partial.overall[head] is None and partial.cells[head] == (9, 10)
    assert "9 of 10 cells" in report_robustness.corruption_markdown(partial)
    assert "(4 of 5)" in report_robustness.corruption_markdown(partial)
