"""Submission bundles: submit → validate round trip on a real lite run, every kind of tampering
refused in one line, incomplete and mixed-model runs refused, the shipped bundles valid."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score

from vtabkit import bundle, cli, official, predictions, prepare, results, source, tasks, validate
from vtabkit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = REPO / "results" / "submissions"


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory, data_dir):
    """A real `vtabkit run --model pixels --suite lite` (about a minute, once per module)."""
    from vtabkit.runner import run

    out = tmp_path_factory.mktemp("lite_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VTABKIT_CACHE", str(out / "cache"))
        run(model="pixels", suite="lite", out=out / "run", data_dir=data_dir, progress=False)
    return out / "run"


@pytest.fixture(scope="module")
def lite_bundle(lite_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "pixels-lite"
    bundle.submit(lite_run, out, model={"name": "pixels", "license": "Apache-2.0", "parameters": "0"})
    return out


@pytest.fixture
def copy(lite_bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(lite_bundle, target)
    return target


def _one_line_error(path, data_dir=None) -> str:
    with pytest.raises(UserError) as caught:
        validate.validate(path, data_dir)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _rehash(folder: Path) -> None:
    """What a careful forger does after an edit: make every manifest checksum match again."""
    manifest = json.loads((folder / bundle.MANIFEST).read_text())
    manifest["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in manifest["files"]}
    (folder / bundle.MANIFEST).write_text(json.dumps(manifest))


def _edit_records(folder: Path, change) -> None:
    path = folder / results.RESULTS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _digits_record(folder: Path) -> dict:
    return next(r for r in results.read_records(folder / results.RESULTS_FILE) if r["task"] == "lite_digits")


# ------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("form", ["folder", "tar.gz"])
def test_submit_then_validate_round_trip(lite_run, lite_bundle, tmp_path, data_dir, form):
    if form == "tar.gz":
        path = tmp_path / "pixels-lite.tar.gz"
        bundle.submit(lite_run, path)
        with tarfile.open(path) as archive:
            names = set(archive.getnames())
        assert {"manifest.json", "model.yaml", "results.jsonl"} <= names
    else:
        path = lite_bundle
    summary = validate.validate(path)
    lite = tasks.get_suite("lite")
    assert (summary.suite, summary.protocol, summary.regime, summary.tasks) == ("lite", "linear", "1k", len(lite.tasks))
    assert cli.main(["validate", str(path)]) == 0


def test_bundle_contents_match_the_run_and_the_data(lite_run, lite_bundle, data_dir):
    manifest = json.loads((lite_bundle / bundle.MANIFEST).read_text())
    ran = results.read_records(lite_run / results.RESULTS_FILE)
    held = results.read_records(lite_bundle / results.RESULTS_FILE)
    assert sorted(map(results.cell_key, ran)) == sorted(map(results.cell_key, held))
    # Every file's sha256, computed here with hashlib on the bytes.
    files = {p.relative_to(lite_bundle).as_posix() for p in lite_bundle.rglob("*") if p.is_file()} - {bundle.MANIFEST}
    assert set(manifest["files"]) == files
    for name in files:
        assert manifest["files"][name] == hashlib.sha256((lite_bundle / name).read_bytes()).hexdigest()
    assert manifest["suite"] == "lite" and manifest["schema_version"] == results.SCHEMA_VERSION
    for record in held:
        task = tasks.get_task(record["task"])
        entry = manifest["tasks"][task.id]
        assert entry["task_hash"] == task.hash
        # The split-id and eval-id hashes, recomputed from the prepared data.
        assert entry["split_ids"]["train800"] == prepare.split_ids_hash(task, "train800", data_dir)
        assert entry["split_ids"]["val200"] == prepare.split_ids_hash(task, "val200", data_dir)
        assert entry["eval"]["test"]["ids_hash"] == prepare.split_ids_hash(task, "test", data_dir)
        # The claimed score against scikit-learn on the bundled predictions.
        stored = predictions.load(lite_bundle / record["predictions"]["path"])
        assert record["metrics"]["top1"] == pytest.approx(
            accuracy_score(stored["targets"], np.argmax(stored["scores"], axis=1)), abs=1e-9)
        assert entry["eval"]["test"]["num_examples"] == len(stored["ids"])
    model = yaml.safe_load((lite_bundle / bundle.MODEL_FILE).read_text())
    assert set(bundle.MODEL_FIELDS) <= set(model)
    assert model["fingerprint"] == ran[0]["model_fingerprint"] and model["parameters"] == 0
    assert model["license"] == "Apache-2.0"


def test_official_lite_facts_equal_a_recomputation_from_the_data(data_dir):
    for task_id in tasks.get_suite("lite").tasks:
        task = tasks.get_task(task_id)
        assert official.entry(task, data_dir) == official.facts(task_id), task_id


def test_official_vtab_sizes_are_the_tasks_test_counts():
    # The test split strings of the VTAB tasks carry absolute counts; an unsliced `test` is the
    # dataset's whole test split, whose published size the table holds.
    for task_id in tasks.get_suite("vtab1k").tasks:
        facts = official.facts(task_id)
        assert facts is not None and facts["task_hash"] == tasks.get_task(task_id).hash, task_id
        assert facts["eval_sizes"]["test"] > 0


# ------------------------------------------------------------------------------- tampering

def test_score_edit_is_caught_by_the_checksum(copy):
    _edit_records(copy, lambda rs: rs[0]["metrics"].update(top1=rs[0]["metrics"]["top1"] + 0.01))
    assert "results.jsonl does not match its sha256" in _one_line_error(copy)


def test_score_edit_with_matching_checksums_is_caught_by_recomputation(copy):
    _edit_records(copy, lambda rs: rs[0]["metrics"].update(top1=rs[0]["metrics"]["top1"] + 1e-5))
    _rehash(copy)
    assert "differs from the one recomputed" in _one_line_error(copy)


def _flip_one_prediction(path: Path) -> None:
    arrays = predictions.load(path)
    scores, targets = arrays["scores"].copy(), arrays["targets"]
    row = int(np.flatnonzero(np.argmax(scores, axis=1) == targets)[0])  # a correct example ...
    scores[row, targets[row]] = scores[row].min() - 1.0                 # ... made wrong
    predictions.save(path, {**arrays, "scores": scores})


def test_prediction_edit_is_caught_by_the_checksum(copy):
    _flip_one_prediction(copy / _digits_record(copy)["predictions"]["path"])
    assert "does not match its sha256" in _one_line_error(copy)


def test_prediction_edit_with_matching_checksums_is_caught_by_recomputation(copy):
    relative = _digits_record(copy)["predictions"]["path"]
    _flip_one_prediction(copy / relative)
    digest = hashlib.sha256((copy / relative).read_bytes()).hexdigest()
    _edit_records(copy, lambda rs: [r["predictions"].update(sha256=digest) for r in rs if r["task"] == "lite_digits"])
    _rehash(copy)
    message = _one_line_error(copy)
    assert "lite_digits" in message and "top1 recorded" in message


def test_file_rename_is_caught(copy):
    relative = _digits_record(copy)["predictions"]["path"]
    (copy / relative).rename(copy / "predictions" / "renamed.npz")
    assert f"missing the file {relative}" in _one_line_error(copy)


def test_file_rename_with_a_rewritten_manifest_is_caught(copy):
    relative = _digits_record(copy)["predictions"]["path"]
    (copy / relative).rename(copy / "predictions" / "renamed.npz")
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest["files"]["predictions/renamed.npz"] = manifest["files"].pop(relative)
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    assert "is not one of the bundle's predictions files" in _one_line_error(copy)


def test_a_record_pointing_outside_the_bundle_is_caught(copy, lite_run):
    outside = "../" * 6 + str(lite_run / _digits_record(copy)["predictions"]["path"]).lstrip("/")
    _edit_records(copy, lambda rs: [r["predictions"].update(path=outside) for r in rs if r["task"] == "lite_digits"])
    _rehash(copy)
    assert "is not one of the bundle's predictions files" in _one_line_error(copy)


@pytest.mark.parametrize("name", [bundle.MODEL_FILE, results.RESULTS_FILE, bundle.MANIFEST])
def test_missing_file_is_caught(copy, name):
    (copy / name).unlink()
    assert name in _one_line_error(copy)


def test_missing_predictions_file_is_caught(copy):
    relative = _digits_record(copy)["predictions"]["path"]
    (copy / relative).unlink()
    assert relative in _one_line_error(copy)


def test_extra_file_is_caught(copy):
    (copy / "predictions" / "extra.npz").write_bytes(b"")
    assert "predictions/extra.npz" in _one_line_error(copy)


def test_model_yaml_edit_is_caught(copy):
    text = (copy / bundle.MODEL_FILE).read_text().replace("name: pixels", "name: a-much-better-model")
    (copy / bundle.MODEL_FILE).write_text(text)
    assert "model.yaml does not match its sha256" in _one_line_error(copy)


def test_checksum_edit_in_the_manifest_is_caught(copy):
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest["files"][bundle.MODEL_FILE] = "0" * 64
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    assert "model.yaml does not match its sha256" in _one_line_error(copy)


def test_task_and_split_hashes_are_checked_against_the_official_definitions(copy):
    _edit_records(copy, lambda rs: [r.update(task_hash="0" * 16) for r in rs if r["task"] == "lite_count"])
    _rehash(copy)
    assert "lite_count" in _one_line_error(copy) and "task hash" in _one_line_error(copy)


def test_other_training_examples_are_caught(copy):
    def change(records):
        for record in records:
            if record["task"] == "lite_count":
                record["split_ids"]["train"] = "f" * 16
    _edit_records(copy, change)
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest["tasks"]["lite_count"]["split_ids"]["train800"] = "f" * 16
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    _rehash(copy)
    assert "split-id hash of train800" in _one_line_error(copy)


def test_fewer_test_examples_are_caught(copy):
    relative = _digits_record(copy)["predictions"]["path"]
    arrays = predictions.load(copy / relative)
    keep = {k: (v[:-1] if v.ndim and len(v) == len(arrays["ids"]) else v) for k, v in arrays.items()}
    digest = predictions.save(copy / relative, keep)
    again, _ = predictions.recompute(["top1"], keep)

    def change(records):
        for record in records:
            if record["task"] == "lite_digits":
                record["predictions"]["sha256"] = digest
                record["metrics"]["top1"] = again["top1"]
                record["num_examples"]["eval"] -= 1
    _edit_records(copy, change)
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest["tasks"]["lite_digits"]["eval"]["test"]["num_examples"] -= 1
    manifest["tasks"]["lite_digits"]["eval"]["test"]["ids_hash"] = source.ids_hash(keep["ids"])
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    _rehash(copy)
    assert "official size is 797" in _one_line_error(copy)


def test_tar_with_an_unsafe_member_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo("../outside.txt")
        member.size = 2
        archive.addfile(member, io.BytesIO(b"hi"))
    assert "unsafe member name" in _one_line_error(path)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_cli_prints_one_line_and_exits_2_on_a_tampered_bundle(copy, capsys):
    (copy / bundle.MODEL_FILE).write_text("name: other\n")
    assert cli.main(["validate", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vtabkit: error:")


# ------------------------------------------------------------------------------- refusals at submit

def _copy_run(lite_run: Path, target: Path) -> Path:
    shutil.copytree(lite_run, target, ignore=shutil.ignore_patterns("cache", ".vtabkit-run.lock"))
    return target


@pytest.mark.parametrize("suite", [None, "lite"])
def test_incomplete_run_is_refused(lite_run, tmp_path, suite):
    run_dir = _copy_run(lite_run, tmp_path / "run")
    lines = (run_dir / results.RESULTS_FILE).read_text().splitlines(keepends=True)
    (run_dir / results.RESULTS_FILE).write_text("".join(l for l in lines if '"lite_count"' not in l))
    with pytest.raises(UserError, match="incomplete suite 'lite': no result for task lite_count"):
        bundle.submit(run_dir, tmp_path / "out", suite=suite)
    assert not (tmp_path / "out").exists()


def test_mixed_model_fingerprints_are_refused(lite_run, tmp_path, data_dir, monkeypatch):
    from vtabkit.runner import run

    run_dir = _copy_run(lite_run, tmp_path / "run")
    # Another model (other resolution, so other weights/preprocessing) in the same run folder.
    run(model="pixels", suite="lite", tasks=["lite_digits"], model_args={"resolution": 16}, out=run_dir,
        data_dir=data_dir, progress=False)
    with pytest.raises(UserError, match="mixes 2 model fingerprints") as caught:
        bundle.submit(run_dir, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert cli.main(["submit", str(run_dir), "--out", str(tmp_path / "out2")]) == 2


def test_suite_of_another_regime_is_refused(lite_run, tmp_path):
    with pytest.raises(UserError):
        bundle.submit(lite_run, tmp_path / "out", suite="vtab")


def test_existing_out_is_refused(lite_run, lite_bundle):
    with pytest.raises(UserError, match="already exists"):
        bundle.submit(lite_run, lite_bundle)


# ------------------------------------------------------------------------------- shipped bundles

def test_every_shipped_submission_is_valid():
    found = sorted(p for p in SUBMISSIONS.iterdir() if (p / bundle.MANIFEST).is_file() or p.name.endswith(".tar.gz"))
    assert found, "results/submissions/ should hold at least the lite baseline bundle"
    for path in found:
        summary = validate.validate(path)
        assert summary.records > 0, path
