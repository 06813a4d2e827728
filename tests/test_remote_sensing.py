"""The remote-sensing family (Neumann et al. 2019), pinned to the reference facts.

The expected numbers are written from shared/reference/robustness_remote_sensing.md and the
paper's split rule (60/20/20 % of TFDS ``train`` in record order; So2Sat: train = TFDS train,
val = validation[:25%], test = validation[25%:]), independently of the task YAML: the test
resolves the paper's percent strings with TFDS's own rounding and checks that the YAML's
absolute counts select exactly those examples. The TFDS path of every task runs under
``tfds.testing.mock_data`` (real builder code, no download).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vtabkit import regimes, source, tasks

# task id: TFDS pin, classes, target, real TFDS split sizes (reference facts).
EXPECTED = {
    "rs_bigearthnet": ("bigearthnet/rgb:1.0.0", 43, "multi", {"train": 590326}),
    "rs_eurosat": ("eurosat/rgb:2.0.0", 10, "single", {"train": 27000}),
    "rs_resisc45": ("resisc45:3.0.0", 45, "single", {"train": 31500}),
    "rs_so2sat": ("so2sat/rgb:2.1.0", 17, "single", {"train": 352366, "validation": 24119}),
    "rs_uc_merced": ("uc_merced:2.0.0", 21, "single", {"train": 2100}),
}
# The paper's splits, as percent strings (the authors' notebook writes them this way).
PAPER = {"train": "train[:60%]", "val": "train[60%:80%]", "test": "train[80%:]"}
PAPER_SO2SAT = {"train": "train", "val": "validation[:25%]", "test": "validation[25%:]"}
# Example counts (train, val, test), by hand from the sizes above (closest rounding of percents).
COUNTS = {
    "rs_bigearthnet": (354196, 118065, 118065),
    "rs_eurosat": (16200, 5400, 5400),
    "rs_resisc45": (18900, 6300, 6300),
    "rs_so2sat": (352366, 6030, 18089),
    "rs_uc_merced": (1260, 420, 420),
}
LOW_DATA_SIZES = (100, 250, 500, 1000, 2500, 5000)


def _ranges(task_id: str, split: str) -> list[tuple[str, int, int]]:
    return source.absolute_ranges(split, EXPECTED[task_id][3])


def test_suites():
    suite = tasks.get_suite("remote_sensing")
    assert suite.tasks == tuple(EXPECTED) and suite.regime == "full"
    sweep = tasks.get_suite("remote_sensing_lowdata")
    assert [r.name for r in regimes.parse_list(sweep.regime)] == [f"first:{n}" for n in LOW_DATA_SIZES] + ["full"]
    # Every task of the sweep has at least 5000 train examples (UC Merced, 1260, is left out).
    assert all(COUNTS[task_id][0] >= 5000 for task_id in sweep.tasks) and "rs_uc_merced" not in sweep.tasks


def test_ids_do_not_collide_with_vtab():
    assert tasks.get_task("eurosat").family == "specialized"  # VTAB's own, unchanged
    assert tasks.get_task("rs_eurosat").family == "remote_sensing"
    assert tasks.get_task("rs_eurosat").splits["test"] == tasks.get_task("eurosat").splits["test"]


@pytest.mark.parametrize("task_id", EXPECTED)
def test_definition_matches_reference(task_id):
    task = tasks.get_task(task_id)
    pin, classes, target, _ = EXPECTED[task_id]
    assert (task.family, task.tfds_name, task.num_classes, task.target) == ("remote_sensing", pin, classes, target)
    assert set(task.splits) == {"train800", "val200", "train800val200", "train", "val", "trainval", "test"}
    if target == "multi":
        assert task.label == {"rule": "feature", "key": "labels"}
        assert task.eval_sets[0].metrics == ("map", "micro_f1") and task.eval_sets[0].primary_metric == "map"
    else:
        assert task.eval_sets[0].primary_metric == "top1"


@pytest.mark.parametrize("task_id", EXPECTED)
def test_splits_are_the_papers_written_as_absolute_counts(task_id):
    task = tasks.get_task(task_id)
    paper = PAPER_SO2SAT if task_id == "rs_so2sat" else PAPER
    for name in ("train", "val", "test"):
        assert _ranges(task_id, task.splits[name]) == _ranges(task_id, paper[name]), name
        assert "%" not in task.splits[name]  # absolute example counts, like every other task
    counts = tuple(sum(end - start for _, start, end in _ranges(task_id, task.splits[name]))
                   for name in ("train", "val", "test"))
    assert counts == COUNTS[task_id]
    trainval = _ranges(task_id, task.splits["trainval"])
    assert trainval == _merge(_ranges(task_id, task.splits["train"]) + _ranges(task_id, task.splits["val"]))
    # 1k: the first 800 of train and the first 200 of val.
    train, val = _ranges(task_id, task.splits["train"])[0], _ranges(task_id, task.splits["val"])[0]
    assert _ranges(task_id, task.splits["train800"]) == [(train[0], train[1], train[1] + 800)]
    assert _ranges(task_id, task.splits["val200"]) == [(val[0], val[1], val[1] + 200)]
    # train, val and test never overlap, and together cover the data the paper uses.
    rows = {name: _rows(_ranges(task_id, task.splits[name])) for name in ("train", "val", "test")}
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"] or rows["val"] & rows["test"])
    assert sum(map(len, rows.values())) == sum(EXPECTED[task_id][3].values())


def _merge(ranges):
    merged = []
    for split, start, end in ranges:
        if merged and merged[-1][0] == split and merged[-1][2] == start:
            merged[-1] = (split, merged[-1][1], end)
        else:
            merged.append((split, start, end))
    return merged


def _rows(ranges) -> set[tuple[str, int]]:
    return {(split, index) for split, start, end in ranges for index in range(start, end)}


def test_low_data_regimes_take_the_first_n_train_examples():
    targets = np.zeros((COUNTS["rs_bigearthnet"][0], 43), np.uint8)  # multi-hot: first:N still applies
    for size in LOW_DATA_SIZES:
        np.testing.assert_array_equal(regimes.parse(f"first:{size}").train_indices(targets, seed=3), np.arange(size))


@pytest.mark.parametrize("task_id", EXPECTED)
def test_tfds_load_and_preprocess_under_mock_data(task_id, tmp_path):
    """Every split string loads through the real TFDS builder code; images are uint8 RGB and
    targets are in range (BigEarthNet: a 43-dim multi-hot vector of the example's `labels`)."""
    task = tasks.get_task(task_id)
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=4):
        for split in task.splits.values():
            dataset = tfds.load(task.tfds_name, split=split, data_dir=str(tmp_path))
            pairs = dataset.map(lambda ex: (ex[task.image_key], ex.get("labels", ex.get("label")), task.preprocess(ex)))
            seen = 0
            for raw, raw_label, out in pairs.as_numpy_iterator():
                seen += 1
                assert out["image"].dtype == np.uint8 and out["image"].shape[-1] == 3
                np.testing.assert_array_equal(out["image"], raw)
                if task.target == "multi":
                    label = out["label"]
                    assert label.shape == (43,) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
                    np.testing.assert_array_equal(np.flatnonzero(label), np.unique(raw_label))
                    assert all(0 <= value < 43 for value in raw_label)
                else:
                    assert 0 <= out["label"] < task.num_classes and out["label"] == raw_label
            assert seen == 4


def test_notes_say_what_was_verified_and_what_was_not():
    for task_id in EXPECTED:
        notes = tasks.get_task(task_id).definition["notes"]
        assert "rsr_datasets.ipynb" in notes and "Not verified" in notes


MULTISPECTRAL_YAML = """\
task: my_bands
family: remote_sensing
dataset: {dataset}
num_classes: 10
splits: {{train: "train[:100]", test: "train[100:200]"}}
"""


def test_multispectral_config_in_a_user_task_is_one_line_through_the_cli(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "bands.yaml").write_text(MULTISPECTRAL_YAML.format(dataset="bigearthnet/all:1.0.0"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "vtabkit", "list", "tasks", "--tasks-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "bigearthnet/all:1.0.0" in lines[0] and "3-channel" in lines[0] and "bigearthnet/rgb:1.0.0" in lines[0]


@pytest.mark.parametrize("dataset, rgb", [("eurosat/all:2.0.0", "eurosat/rgb:2.0.0"),
                                          ("so2sat/all:2.1.0", "so2sat/rgb:2.1.0")])
def test_multispectral_configs_are_refused_in_one_line(dataset, rgb, tmp_path, capsys):
    from vtabkit import cli

    (tmp_path / "bands.yaml").write_text(MULTISPECTRAL_YAML.format(dataset=dataset))
    assert cli.main(["list", "tasks", "--tasks-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3-channel" in err and rgb in err


# ---------------------------------------------------------------- preparing: BigEarthNet, So2Sat

import collections
from pathlib import Path
import importlib.util

from vtabkit import downloads, prepare

_REAL_FIND_SPEC = importlib.util.find_spec
_Usage = collections.namedtuple("_Usage", "total used free")


def _beam(monkeypatch, installed: bool) -> None:
    """apache_beam installed or not, whatever this machine has."""
    def find_spec(name, *args, **kwargs):
        if name == "apache_beam":
            return _REAL_FIND_SPEC("json") if installed else None
        return _REAL_FIND_SPEC(name, *args, **kwargs)

    monkeypatch.setattr(prepare.importlib.util, "find_spec", find_spec)


def _free(monkeypatch, gib: float) -> None:
    monkeypatch.setattr(prepare.shutil, "disk_usage", lambda path: _Usage(10 ** 13, 0, int(gib * prepare.GiB)))


def _no_download(monkeypatch) -> list:
    """Fail the test if TFDS's download would start; probes of the hosts answer 'unreachable'."""
    calls = []
    monkeypatch.setattr(downloads, "unreachable", lambda *a, **k: calls.append("probe") or
                        downloads.Unreachable(("https://zenodo.org/x.tar.gz",), ("zenodo.org",), "test: no network"))
    return calls


def test_bigearthnet_without_apache_beam_says_the_pip_command_first(tmp_path, monkeypatch):
    _beam(monkeypatch, installed=False)
    _free(monkeypatch, 500)
    calls = _no_download(monkeypatch)
    task = tasks.get_task("rs_bigearthnet")
    lines = []
    summary = prepare.prepare_datasets([task], tmp_path, log=lines.append)
    assert summary.outcomes[task.tfds_name] == (prepare.NEEDS_PACKAGE,
                                                "preparing bigearthnet/rgb:1.0.0 needs `pip install apache-beam`")
    assert "apache-beam (missing)" in lines[0] and "--data-dir" in lines[0]  # named before anything starts
    assert calls == [] and not (tmp_path / "bigearthnet").exists()
    assert "pip install apache-beam" in prepare.dataset_status(task, tmp_path)["fix"]


def test_bigearthnet_refuses_in_one_line_when_the_disk_is_short(tmp_path, monkeypatch):
    _beam(monkeypatch, installed=True)
    _free(monkeypatch, 40)
    calls = _no_download(monkeypatch)
    task = tasks.get_task("rs_bigearthnet")
    needed, free = prepare.disk_needs(task, prepare.open_builder(task, tmp_path))
    # The registered archive (70,032,164,579 bytes, TFDS's checksums) plus the build allowance.
    assert needed == 70_032_164_579 + prepare._BUILD_BYTES["bigearthnet"] and free == 40 * prepare.GiB
    lines = []
    status, detail = prepare.prepare_datasets([task], tmp_path, log=lines.append).outcomes[task.tfds_name]
    assert status == prepare.NO_SPACE and "\n" not in detail
    assert f"{needed / prepare.GiB:.1f} GiB" in detail and "40.0 GiB free" in detail and str(tmp_path) in detail
    assert calls == []  # refused before probing or downloading


def test_bigearthnet_with_room_and_beam_goes_on_to_the_download(tmp_path, monkeypatch):
    _beam(monkeypatch, installed=True)
    _free(monkeypatch, 500)
    calls = _no_download(monkeypatch)
    task = tasks.get_task("rs_bigearthnet")
    lines = []
    status, _ = prepare.prepare_datasets([task], tmp_path, log=lines.append).outcomes[task.tfds_name]
    assert status == prepare.OFFLINE and calls == ["probe"]
    assert "apache-beam (installed)" in lines[0] and "500.0 GiB free" in lines[0]


def test_prepare_accepts_an_existing_tfds_data_dir(tmp_path, monkeypatch):
    """--data-dir pointing at a folder where BigEarthNet is already prepared: ready, nothing asked."""
    _beam(monkeypatch, installed=False)
    _free(monkeypatch, 1)
    task = tasks.get_task("rs_bigearthnet")
    builder = prepare.open_builder(task, tmp_path)
    Path(builder.data_path).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)  # what a finished TFDS build leaves behind
    summary = prepare.prepare_datasets([task], tmp_path, log=lambda line: None)
    assert summary.outcomes[task.tfds_name] == (prepare.READY, "")


def test_so2sat_is_a_manual_download_with_its_steps(tmp_path, monkeypatch):
    calls = _no_download(monkeypatch)
    task = tasks.get_task("rs_so2sat")
    builder = prepare.open_builder(task, tmp_path)
    assert prepare.needs_manual_download(builder)
    manual = tmp_path / "downloads" / "manual"
    assert prepare.missing_manual_files(task, builder) == [str(manual / "training.h5"), str(manual / "validation.h5")]
    lines = []
    status, _ = prepare.prepare_datasets([task], tmp_path, log=lines.append).outcomes[task.tfds_name]
    assert status == prepare.MANUAL and calls == []
    steps = lines[1]
    assert "training.h5" in steps and f"{manual}/" in steps and "<data_dir>" not in steps
    assert "manual download" in prepare.dataset_status(task, tmp_path)["fix"]
    for name in ("training.h5", "validation.h5"):
        (manual / name).parent.mkdir(parents=True, exist_ok=True)
        (manual / name).write_bytes(b"")
    assert prepare.missing_manual_files(task, builder) == []
