"""`vtabkit.prepare`: dataset status, preparation and split id hashes, on real TFDS code.

Small TFDS builders defined here generate their data, so preparing works offline; the real VTAB
builders are only opened (never downloaded) to check version and manual-download handling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import types
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vtabkit import prepare, source, tasks
from vtabkit.errors import UserError
from vtabkit.tasks import Task


def _toy_info(builder) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=builder, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3)),
        "label": tfds.features.ClassLabel(num_classes=3)}))


def _toy_examples(count: int):
    for index in range(count):
        yield index, {"image": np.full((8, 8, 3), index, np.uint8), "label": index % 3}


class PrepToyData(tfds.core.GeneratorBasedBuilder):
    """Registered as ``prep_toy_data``: a dataset that 'downloads' nothing."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return _toy_info(self)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30), "test": self._generate_examples(10)}

    def _generate_examples(self, count):
        yield from _toy_examples(count)


class PrepToyManual(tfds.core.GeneratorBasedBuilder):
    """Registered as ``prep_toy_manual``: needs ``toy.txt`` in the manual folder."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put toy.txt into the manual folder."

    def _info(self):
        return _toy_info(self)

    def _split_generators(self, dl_manager):
        count = len((dl_manager.manual_dir / "toy.txt").read_text().split())
        return {"train": self._generate_examples(count)}

    def _generate_examples(self, count):
        yield from _toy_examples(count)


class VtabkitPrepToy(PrepToyData):
    """Registered as ``vtabkit_prep_toy``: stands in for one of vtabkit's own builders."""


SPLITS = {"train800": "train[:5]", "val200": "train[20:22]", "train800val200": "train[:5]+train[20:22]",
          "test": "test"}


def _task(task_id: str, dataset: str, **fields) -> Task:
    return Task(id=task_id, family="natural", tfds_name=dataset, num_classes=3, splits=dict(SPLITS),
                label={"rule": "feature", "key": "label"}, **fields)


TOY = _task("toy", "prep_toy_data:1.0.0")
MANUAL = _task("toy_manual", "prep_toy_manual:1.0.0",
               manual_download="Put toy.txt into <data_dir>/downloads/manual/, then run vtabkit data prepare.")
OWN = _task("own", "vtabkit_prep_toy:1.0.0")


@pytest.fixture
def own_builders(monkeypatch):
    """`vtabkit.builders` may not exist yet (or may be broken) here: stand in for it."""
    monkeypatch.setitem(sys.modules, "vtabkit.builders", types.ModuleType("vtabkit.builders"))


def _collect() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


# ---------------------------------------------------------------- status, missing, prepare


def test_status_missing_and_prepare(tmp_path):
    status = prepare.dataset_status(TOY, tmp_path)
    assert not status["prepared"] and status["tfds_splits"] == {}
    assert status["task_splits"] == dict.fromkeys(SPLITS)
    assert "not prepared" in status["problem"]
    fix = f"`vtabkit data prepare --tasks toy --data-dir {tmp_path}`"
    assert fix in status["fix"]
    assert prepare.missing_datasets([TOY], tmp_path) == [(TOY, status["fix"])]

    lines, log = _collect()
    summary = prepare.prepare_datasets([TOY], tmp_path, log=log)
    assert summary.ok and summary.outcomes == {"prep_toy_data:1.0.0": (prepare.PREPARED, "")}
    assert any("summary: 1 of 1" in line for line in lines)

    status = prepare.dataset_status(TOY, tmp_path)
    assert status["prepared"] and status["problem"] is None and status["version"] == "1.0.0"
    assert status["data_dir"] == str(tmp_path)
    assert status["tfds_splits"] == {"train": 30, "test": 10}
    assert status["task_splits"] == {"train800": 5, "val200": 2, "train800val200": 7, "test": 10}
    assert prepare.missing_datasets([TOY], tmp_path) == []

    again = prepare.prepare_datasets([TOY, dataclasses.replace(TOY, id="toy2")], tmp_path, log=log)
    assert again.outcomes == {"prep_toy_data:1.0.0": (prepare.READY, "")}  # one entry per dataset


def test_manual_dataset_prints_steps_and_carries_on(tmp_path):
    lines, log = _collect()
    summary = prepare.prepare_datasets([MANUAL, TOY], tmp_path, log=log)
    assert summary.outcomes["prep_toy_manual:1.0.0"][0] == prepare.MANUAL
    assert summary.outcomes["prep_toy_data:1.0.0"] == (prepare.PREPARED, "")
    assert not summary.ok
    manual_folder = tmp_path / "downloads" / "manual"
    assert any(f"Put toy.txt into {manual_folder}/" in line for line in lines)  # data dir filled in
    status = prepare.dataset_status(MANUAL, tmp_path)
    assert status["manual_download"] and status["fix"].startswith("manual download: Put toy.txt")

    manual_folder.mkdir(parents=True)
    (manual_folder / "toy.txt").write_text("a b c d")
    summary = prepare.prepare_datasets([MANUAL], tmp_path, log=log)
    assert summary.ok
    assert prepare.dataset_status(MANUAL, tmp_path)["tfds_splits"] == {"train": 4}


def test_unknown_version_or_dataset_is_one_clear_line(tmp_path):
    bad_version = dataclasses.replace(TOY, id="old", tfds_name="prep_toy_data:9.9.9")
    problem = prepare.dataset_status(bad_version, tmp_path)["problem"]
    assert "cannot load prep_toy_data at version 9.9.9 (it offers 1.0.0)" in problem
    assert "\n" not in problem
    assert prepare.missing_datasets([bad_version], tmp_path) == [(bad_version, problem)]
    with pytest.raises(UserError, match="version 9.9.9"):
        prepare.split_ids_hash(bad_version, "train800", tmp_path)

    unknown = dataclasses.replace(TOY, id="ghost", tfds_name="no_such_dataset_xyz:1.0.0")
    assert "has no dataset 'no_such_dataset_xyz'" in prepare.dataset_status(unknown, tmp_path)["problem"]

    lines, log = _collect()
    summary = prepare.prepare_datasets([bad_version, TOY], tmp_path, log=log)
    assert summary.outcomes["prep_toy_data:9.9.9"][0] == prepare.FAILED
    assert summary.outcomes["prep_toy_data:1.0.0"][0] == prepare.PREPARED  # carried on


def test_missing_package_is_named_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setitem(prepare._PREPARE_MODULES, "prep_toy_data", ("no_such_module_xyz",))
    assert "`pip install no_such_module_xyz`, then" in prepare.dataset_status(TOY, tmp_path)["fix"]
    summary = prepare.prepare_datasets([TOY], tmp_path, log=lambda line: None)
    assert summary.outcomes["prep_toy_data:1.0.0"] == (
        prepare.NEEDS_PACKAGE, "preparing prep_toy_data:1.0.0 needs `pip install no_such_module_xyz`")
    assert not (tmp_path / "prep_toy_data").exists()


def test_own_builders_are_generated_not_missing(tmp_path, own_builders):
    status = prepare.dataset_status(OWN, tmp_path)
    assert status["own_builder"] and not status["prepared"] and status["problem"] is None
    assert prepare.missing_datasets([OWN], tmp_path) == []
    assert len(prepare.split_ids_hash(OWN, "test", tmp_path)) == 16  # generates on first use
    assert prepare.dataset_status(OWN, tmp_path)["prepared"]


def test_broken_own_builders_package_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vtabkit.builders", None)  # makes `import vtabkit.builders` fail
    with pytest.raises(UserError, match="reinstall vtabkit"):
        prepare.open_builder(OWN, tmp_path)
    [(task, fix)] = prepare.missing_datasets([OWN], tmp_path)
    assert task is OWN and "reinstall vtabkit" in fix


# ---------------------------------------------------------------- the real VTAB builders (no download)


def test_old_pin_that_current_tfds_cannot_generate(tmp_path):
    """kitti 3.1.0 (the reference's pin) is readable but not generatable by TFDS 4.9."""
    old_kitti = dataclasses.replace(tasks.get_task("kitti_dist"), tfds_name="kitti:3.1.0")
    builder = prepare.open_builder(old_kitti, tmp_path)
    assert prepare.generation_problem(builder) is not None
    assert prepare.generation_problem(prepare.open_builder(tasks.get_task("kitti_dist"), tmp_path)) is None
    assert prepare.generation_problem(prepare.open_builder(tasks.get_task("clevr_count"), tmp_path)) is None
    # A newer version found in the data dir is pointed out, but not read.
    newer = tmp_path / "kitti" / "3.3.0"
    newer.mkdir(parents=True)
    (newer / "dataset_info.json").write_text("{}")
    status = prepare.dataset_status(old_kitti, tmp_path)
    assert status["other_versions"] == ["3.3.0"] and not status["prepared"]
    assert "only generates" in status["fix"] and "found 3.3.0" in status["fix"]
    summary = prepare.prepare_datasets([old_kitti], tmp_path, log=lambda line: None)
    assert summary.outcomes["kitti:3.1.0"][0] == prepare.UNAVAILABLE


@pytest.mark.parametrize("task_id, entries", [
    ("resisc45", ["NWPU-RESISC45"]),
    ("retinopathy", ["train", "test", "sample", "trainLabels.csv"]),
])
def test_real_manual_datasets(task_id, entries, tmp_path):
    task = tasks.get_task(task_id)
    builder = prepare.open_builder(task, tmp_path)
    assert prepare.needs_manual_download(builder)
    manual_folder = tmp_path / "downloads" / "manual"
    assert prepare.manual_dir(builder) == manual_folder
    assert prepare.missing_manual_files(task, builder) == [str(manual_folder / e) for e in entries]
    status = prepare.dataset_status(task, tmp_path)
    assert status["manual_download"] and f"{manual_folder}/" in status["fix"]
    assert "<data_dir>" not in status["fix"]
    lines, log = _collect()
    summary = prepare.prepare_datasets([task], tmp_path, log=log)
    assert summary.outcomes[task.tfds_name][0] == prepare.MANUAL
    for entry in entries:
        (manual_folder / entry).mkdir(parents=True, exist_ok=True)
    assert prepare.missing_manual_files(task, builder) == []


# ---------------------------------------------------------------- split ids and ranges


def _expected_hash(ids: list[str]) -> str:
    return hashlib.sha256("".join(f"{example_id}\n" for example_id in ids).encode()).hexdigest()[:16]


def test_split_ids_hash_definition(tmp_path):
    with pytest.raises(UserError, match="is not prepared.*vtabkit data prepare --tasks toy"):
        prepare.split_ids_hash(TOY, "train800", tmp_path)
    prepare.prepare_datasets([TOY], tmp_path, log=lambda line: None)
    ids = [f"prep_toy_data-train-00000-of-00001__{index}" for index in range(30)]
    assert prepare.split_ids_hash(TOY, "train800", tmp_path) == _expected_hash(ids[:5])
    assert prepare.split_ids_hash(TOY, "val200", tmp_path) == _expected_hash(ids[20:22])
    assert prepare.split_ids_hash(TOY, "train800val200", tmp_path) == _expected_hash(ids[:5] + ids[20:22])
    assert prepare.split_ids_hash(TOY, "train800", tmp_path) == prepare.split_ids_hash(TOY, "train800", tmp_path)
    with pytest.raises(UserError, match="has no split 'validation'"):
        prepare.split_ids_hash(TOY, "validation", tmp_path)


def test_ids_ignore_the_storage_format():
    strip = source._FORMAT_INFIX.sub
    assert strip("", "clevr-train.array_record-00003-of-00016__41") == "clevr-train-00003-of-00016__41"
    assert strip("", "clevr-train.tfrecord-00003-of-00016__41") == "clevr-train-00003-of-00016__41"


def test_ids_only_decoders_parse_one_scalar(tmp_path):
    builder = tfds.builder("prep_toy_data", data_dir=str(tmp_path))
    decoders = prepare._ids_only_decoders(builder.info.features)
    assert isinstance(decoders, tfds.decode.PartialDecoding)
    assert list(decoders.extract_features(builder.info.features).keys()) == ["label"]


def test_absolute_ranges():
    sizes = {"train": 24300, "test": 24300}
    assert source.absolute_ranges("train+test[:50%]", sizes) == [("train", 0, 24300), ("test", 0, 12150)]
    assert source.absolute_ranges("test[50%:]", sizes) == [("test", 12150, 24300)]
    with pytest.raises(UserError, match="does not fit"):
        source.absolute_ranges("train[24000:24400]", sizes)
    with pytest.raises(UserError, match="does not fit"):
        source.absolute_ranges("validation", sizes)


def test_data_root_of_prepared_and_unprepared_builders(tmp_path):
    prepare.prepare_datasets([TOY], tmp_path, log=lambda line: None)
    for task in (TOY, tasks.get_task("sun397")):  # prepared (read-only builder) / with a config
        assert source.data_root(prepare.open_builder(task, tmp_path)) == Path(tmp_path)
