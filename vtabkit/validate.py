"""`vtabkit validate`: every check a submission bundle (`vtabkit.bundle`) must pass, in order.

The first failed check is a `UserError` of one line naming it; `validate` returns only when all
hold. What the bundle is checked against lives outside it: the installed task and suite
definitions, the official facts (`vtabkit.official`) and the recomputation of every metric from
the bundled predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtabkit import official, predictions, regimes, results, source, tasks
from vtabkit.bundle import (BUNDLE_FORMAT, MANIFEST, MODEL_FIELDS, MODEL_FILE, RECORD_FIELDS, Summary, check_complete,
                            check_regime, named_regime, opened, read, sha256)
from vtabkit.errors import UserError


def validate(path: Path, data_dir: str | None = None) -> Summary:
    """Check a bundle; the first failed check is a `UserError` naming it.

    In order: the manifest and schema; every file against its sha256 (no file missing, none
    extra); one model fingerprint; completeness against the installed suite; task hashes and
    split-id hashes against the installed definitions and `vtabkit.official` (or, for hashes it
    does not pin, against the data in ``data_dir``); eval-set sizes and example ids; every
    metric recomputed from the predictions equal to the claimed one (within 1e-6).
    """
    with opened(path) as folder:
        manifest, model, records = read(folder)
        _check_schema(manifest, model, records)
        _check_files(folder, manifest)
        _check_model(manifest, model, records)
        suite = tasks.get_suite(manifest["suite"])
        if list(suite.tasks) != list(manifest["suite_tasks"]):
            raise UserError(f"suite {suite.name!r} installed here has other tasks than the bundle declares; "
                            "validate with the vtabkit version that wrote it, or re-submit")
        if {r["protocol"] for r in records} != {manifest["protocol"]} or {r["regime"] for r in records} != {manifest["regime"]}:
            raise UserError("records of another protocol or regime than the manifest declares; re-submit the run")
        regime = named_regime(manifest["regime"])
        check_regime(suite, regime)
        check_complete(records, suite)
        for record in records:
            _check_record(folder, manifest, record, regime, data_dir)
        _check_scores(folder)
    return Summary(model=str(model["name"]), fingerprint=manifest["model_fingerprint"], suite=suite.name,
                   protocol=manifest["protocol"], regime=regime.name, records=len(records), tasks=len(suite.tasks))


def _check_schema(manifest: Any, model: Any, records: list[dict[str, Any]]) -> None:
    keys = ("bundle_format", "vtabkit_version", "schema_version", "suite", "suite_tasks", "protocol", "regime",
            "model_fingerprint", "tasks", "files")
    if not isinstance(manifest, dict) or any(key not in manifest for key in keys):
        raise UserError(f"{MANIFEST} lacks fields of bundle format {BUNDLE_FORMAT} ({', '.join(keys)}); re-submit")
    if manifest["bundle_format"] != BUNDLE_FORMAT or manifest["schema_version"] != results.SCHEMA_VERSION:
        raise UserError(f"bundle format {manifest['bundle_format']} / record schema {manifest['schema_version']}; "
                        f"this vtabkit reads format {BUNDLE_FORMAT} / schema {results.SCHEMA_VERSION}")
    if not isinstance(model, dict) or any(field not in model for field in MODEL_FIELDS):
        raise UserError(f"{MODEL_FILE} must have the fields {', '.join(MODEL_FIELDS)}; re-submit")
    if not records:
        raise UserError(f"bundle's {results.RESULTS_FILE} holds no records")
    seen = set()
    for number, record in enumerate(records, start=1):
        missing = [field for field in RECORD_FIELDS if field not in record]
        if missing:
            raise UserError(f"{results.RESULTS_FILE} record {number} lacks {', '.join(missing)}; not a schema-"
                            f"{results.SCHEMA_VERSION} record")
        if record["schema_version"] != results.SCHEMA_VERSION:
            raise UserError(f"{results.RESULTS_FILE} record {number} has schema {record['schema_version']}, "
                            f"the manifest says {results.SCHEMA_VERSION}")
        if results.cell_key(record) in seen:
            raise UserError(f"{results.RESULTS_FILE} record {number} ({record['task']}) repeats another record's cell")
        seen.add(results.cell_key(record))


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    present = {path.relative_to(folder).as_posix() for path in folder.rglob("*")
               if path.is_file() and path.name != MANIFEST}
    declared = manifest["files"]
    for name in sorted(set(declared) - present):
        raise UserError(f"bundle is missing the file {name} that its manifest lists (renamed or deleted)")
    for name in sorted(present - set(declared)):
        raise UserError(f"bundle has the file {name}, which its manifest does not list (renamed or added)")
    for name in sorted(declared):
        if sha256(folder / name) != declared[name]:
            raise UserError(f"file {name} does not match its sha256 in the manifest; it was edited or damaged")


def _check_model(manifest: dict[str, Any], model: dict[str, Any], records: list[dict[str, Any]]) -> None:
    fingerprints = {r["model_fingerprint"] for r in records}
    if len(fingerprints) > 1:
        raise UserError(f"bundle mixes {len(fingerprints)} model fingerprints ({', '.join(sorted(fingerprints))}); "
                        "a bundle holds one model's weights")
    if fingerprints != {manifest["model_fingerprint"]} or model["fingerprint"] != manifest["model_fingerprint"]:
        raise UserError("the records, model.yaml and manifest name different model fingerprints; re-submit the run")


def _expected(task: tasks.Task, kind: str, name: str, split: str, data_dir: str | None) -> str:
    """The official split-id hash of split ``name`` (pinned, or computed from ``data_dir``)."""
    facts = official.facts(task.id) or {}
    pinned = facts.get(kind, {}).get(name)
    if pinned:
        return pinned
    if data_dir is None:
        raise UserError(f"task {task.id}: vtabkit pins no example-id hash for {name}; pass --data-dir with "
                        f"{task.tfds_name} prepared to check it")
    from vtabkit import prepare

    return prepare.split_ids_hash(task, split, data_dir)


def _check_record(folder: Path, manifest: dict[str, Any], record: dict[str, Any], regime: regimes.Regime,
                  data_dir: str | None) -> None:
    where = f"task {record['task']} ({record['eval_set']}, {record['setting']}, seed {record['seed']})"
    task = tasks.get_task(record["task"])
    declared = manifest["tasks"].get(task.id)
    if declared is None:
        raise UserError(f"{where}: the manifest has no entry for this task; re-submit the run")
    if not (record["task_hash"] == declared["task_hash"] == task.hash):
        raise UserError(f"{where}: task hash {record['task_hash']} differs from the installed official definition "
                        f"({task.hash}); the task was run with another definition: re-run it with this vtabkit")
    facts = official.facts(task.id)
    if facts is None or facts.get("task_hash") != task.hash:
        raise UserError(f"{where}: vtabkit has no official facts for this task definition; only shipped, "
                        "unmodified tasks can be submitted")
    split_ids = record["split_ids"]
    for role, name in (("train", regime.train), ("val", regime.val)):
        if name not in task.splits:
            continue
        expected = _expected(task, "split_ids", name, name, data_dir)
        if split_ids.get(role) != expected or declared["split_ids"].get(name) != split_ids.get(role):
            raise UserError(f"{where}: split-id hash of {name} is {split_ids.get(role)}, the official one is "
                            f"{expected}; it learned from other examples (another dataset preparation or split)")
    eval_set = next((e for e in task.eval_sets if e.name == record["eval_set"]), None)
    if eval_set is None:
        raise UserError(f"{where}: the installed task has no eval set {record['eval_set']!r}")
    relative = record["predictions"]["path"]
    # Only files the manifest lists (so checked above), under predictions/: a record cannot point
    # outside the bundle.
    if relative not in manifest["files"] or not relative.startswith(results.PREDICTIONS_DIR + "/"):
        raise UserError(f"{where}: its predictions file {relative!r} is not one of the bundle's predictions files")
    stored = predictions.load(folder / relative, record["predictions"]["sha256"])
    size = facts.get("eval_sizes", {}).get(eval_set.name)
    claimed = declared["eval"].get(eval_set.name, {})
    if not (len(stored["ids"]) == record["num_examples"].get("eval") == claimed.get("num_examples") == size):
        raise UserError(f"{where}: the eval set has {len(stored['ids'])} predictions (record says "
                        f"{record['num_examples'].get('eval')}), the official size is {size}")
    own = {split: name for name, split in task.splits.items()}
    expected_ids = _expected(task, "eval_ids", eval_set.name, own.get(eval_set.view.split, eval_set.view.split), data_dir)
    if not (source.ids_hash(stored["ids"]) == claimed.get("ids_hash") == expected_ids):
        raise UserError(f"{where}: the predictions' example ids are not the official {eval_set.name} examples")


def _check_scores(folder: Path) -> None:
    from vtabkit.report import verify

    _, problems = verify([folder])
    if problems:
        raise UserError(f"a claimed score differs from the one recomputed from its predictions: {problems[0]}")
