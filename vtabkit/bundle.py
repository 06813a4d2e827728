"""Submission bundles: `submit` writes one from a run (`vtabkit.validate` checks one); one line on failure.

A bundle is a directory, or the same files in a ``.tar.gz`` (no folder inside):

- ``results.jsonl``: the submitted records (one protocol, one regime, one model fingerprint,
  every task of the suite and every eval set of each task, for every setting and seed);
- ``predictions/*.npz``: the per-example predictions the records were computed from;
- ``model.yaml``: what a leaderboard shows (name, fingerprint, parameters, pre-training data,
  licence, URL, description);
- ``manifest.json``: the sha256 of every other file, the suite and its tasks, per task the
  semantic task hash, the split-id hashes and each eval set's size and example-id hash, the
  vtabkit version and the record schema version.

Nothing is signed (no leaderboard surveyed signs submissions): the checksums catch accidents
and careless edits, and a consistent forgery still has to survive the checks against vtabkit's
own task definitions (`vtabkit.official`) and the recomputation of every score from the
predictions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from vtabkit import __version__, predictions, regimes, results, source, tasks
from vtabkit.errors import UserError

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.yaml"
MODEL_FIELDS = ("name", "fingerprint", "parameters", "pretraining_data", "license", "url", "description")
RECORD_FIELDS = ("schema_version", "model", "model_fingerprint", "task", "family", "task_hash", "regime",
                  "split_ids", "protocol", "setting", "seed", "config_hash", "eval_set", "metrics",
                  "primary_metric", "num_examples", "predictions")
_MAX_ARCHIVE_BYTES = 4 << 30  # what a .tar.gz may unpack to: far above any real bundle


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a valid bundle holds."""

    model: str
    fingerprint: str
    suite: str
    protocol: str
    regime: str
    records: int
    tasks: int


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- submit

def _only(values: set, what: str, flag: str) -> Any:
    if len(values) != 1:
        raise UserError(f"the run holds {len(values)} {what} ({', '.join(sorted(map(str, values)))}); "
                        f"submit one at a time with {flag}")
    return next(iter(values))


def _suite_of(task_ids: set[str], regime: str, suite: str | None) -> tasks.Suite:
    """The named suite, else the one suite of the run's regime that holds all its tasks (the
    exact match first), so a run missing a task is told which task, not "which suite?"."""
    if suite is not None:
        return tasks.get_suite(suite)
    suites = [tasks.get_suite(name) for name in tasks.list_suites()]
    exact = [s for s in suites if set(s.tasks) == task_ids]
    holding = [s for s in suites if task_ids <= set(s.tasks) and s.regime == regime]
    matching = exact if len(exact) == 1 else holding
    if len(matching) != 1:
        raise UserError(f"cannot tell which suite the run's {len(task_ids)} tasks make up; pass --suite NAME "
                        "(the run must cover all of that suite's tasks)")
    return matching[0]


def check_complete(records: list[dict[str, Any]], suite: tasks.Suite) -> None:
    """Every (setting, seed) of the records covers every eval set of every task of ``suite``."""
    have = {(r["setting"], r["config_hash"], r["seed"], r["task"], r["eval_set"]) for r in records}
    outside = sorted({r["task"] for r in records} - set(suite.tasks))
    if outside:
        raise UserError(f"tasks {', '.join(outside)} are not in suite {suite.name!r}; submit one suite at a time")
    for setting, config, seed in sorted({key[:3] for key in have}, key=str):
        for task_id in suite.tasks:
            for eval_set in tasks.get_task(task_id).eval_sets:
                if (setting, config, seed, task_id, eval_set.name) not in have:
                    raise UserError(f"incomplete suite {suite.name!r}: no result for task {task_id} "
                                    f"(eval set {eval_set.name}, setting {setting}, seed {seed}); "
                                    f"run it (`vtabkit run ... --suite {suite.name}`) before submitting")


def named_regime(name: str) -> regimes.Regime:
    regime = regimes.parse(name)
    if regime.subset is not None:
        raise UserError(f"regime {name} draws a subset of the train split; submissions take the named "
                        "regimes 1k and full, whose examples vtabkit can check")
    return regime


def check_regime(suite: tasks.Suite, regime: regimes.Regime) -> None:
    if suite.regime != regime.name:
        raise UserError(f"suite {suite.name!r} is scored in regime {suite.regime}, the records are regime "
                        f"{regime.name}; submit them for a suite of that regime")


def _model_facts(records: list[dict[str, Any]], given: dict[str, Any]) -> dict[str, Any]:
    """model.yaml: flags first, then the model's own metadata, else empty (null)."""
    metadata = records[0].get("model_metadata") or {}
    aliases = {"parameters": ("parameters", "num_params", "n_parameters"),
               "pretraining_data": ("pretraining_data", "training_data"), "license": ("license", "licence"),
               "url": ("url", "reference"), "description": ("description",)}
    facts = {"name": given.get("name") or records[0]["model"], "fingerprint": records[0]["model_fingerprint"]}
    for field, keys in aliases.items():
        value = given.get(field)
        if value is None:
            value = next((metadata[key] for key in keys if metadata.get(key) is not None), None)
        facts[field] = value
    if facts["parameters"] is not None:
        try:
            facts["parameters"] = int(facts["parameters"])
        except (TypeError, ValueError):
            raise UserError(f"parameter count {facts['parameters']!r} is not a whole number; pass --parameters N") from None
    facts["architecture"] = metadata.get("architecture")
    return facts


def submit(run_dirs: Path | list[Path], out: Path, *, protocol: str | None = None, suite: str | None = None,
           model: dict[str, Any] | None = None) -> Summary:
    """Write the bundle of one protocol's records of ``run_dirs`` to ``out`` (a folder or ``.tar.gz``)."""
    from vtabkit.report import load_records

    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise UserError(f"{out} already exists; pass a new --out for the bundle")
    loaded = load_records(run_dirs)
    old = [r for _, r in loaded if results.schema_version(r) < results.SCHEMA_VERSION or not r.get("predictions")]
    if old:
        raise UserError(f"task {old[0]['task']} has a schema-{results.schema_version(old[0])} record without "
                        "per-example predictions; re-run it with this vtabkit before submitting")
    chosen = protocol or _only({r["protocol"] for _, r in loaded}, "protocols", "--protocol")
    loaded = [(run_dir, r) for run_dir, r in loaded if r["protocol"] == chosen]
    if not loaded:
        raise UserError(f"the run has no {chosen} results; see `vtabkit report` for what it holds")
    records = [r for _, r in loaded]
    fingerprints = {r["model_fingerprint"] for r in records}
    if len(fingerprints) > 1:
        raise UserError(f"the run mixes {len(fingerprints)} model fingerprints ({', '.join(sorted(fingerprints))}); "
                        "a bundle holds one model's weights: submit each run directory on its own")
    regime = named_regime(_only({r["regime"] for r in records}, "regimes", "a run of one regime"))
    the_suite = _suite_of({r["task"] for r in records}, regime.name, suite)
    check_regime(the_suite, regime)
    check_complete(records, the_suite)

    with tempfile.TemporaryDirectory(prefix=".vtabkit-bundle-", dir=out.parent if out.parent.exists() else None) as tmp:
        folder = Path(tmp)
        for run_dir, record in loaded:
            relative = record["predictions"]["path"]
            target = folder / relative
            if target.exists():
                raise UserError(f"two records share the predictions file {relative}; submit the run directories apart")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / relative, target)
            if sha256(target) != record["predictions"]["sha256"]:
                raise UserError(f"{run_dir / relative} does not match its record's sha256; it was changed after the "
                                "run: re-run that task")
        with open(folder / results.RESULTS_FILE, "w") as file:
            for record in records:
                file.write(json.dumps(record, sort_keys=True) + "\n")
        facts = _model_facts(records, model or {})
        (folder / MODEL_FILE).write_text(yaml.safe_dump(facts, sort_keys=False, allow_unicode=True))
        manifest = _manifest(folder, records, the_suite, chosen, regime)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _write(folder, out)
    return Summary(model=facts["name"], fingerprint=facts["fingerprint"], suite=the_suite.name, protocol=chosen,
                   regime=regime.name, records=len(records), tasks=len(the_suite.tasks))


def _manifest(folder: Path, records: list[dict[str, Any]], suite: tasks.Suite, protocol: str,
              regime: regimes.Regime) -> dict[str, Any]:
    per_task: dict[str, Any] = {}
    for record in records:
        stored = predictions.load(folder / record["predictions"]["path"])
        entry = per_task.setdefault(record["task"], {
            "family": record["family"], "task_hash": record["task_hash"],
            "split_ids": {regime.train: record["split_ids"].get("train"), regime.val: record["split_ids"].get("val")},
            "eval": {}})
        entry["eval"][record["eval_set"]] = {"num_examples": int(len(stored["ids"])),
                                             "ids_hash": source.ids_hash(stored["ids"])}
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST)
    return {"bundle_format": BUNDLE_FORMAT, "vtabkit_version": __version__,
            "schema_version": results.SCHEMA_VERSION, "suite": suite.name, "suite_tasks": list(suite.tasks),
            "protocol": protocol, "regime": regime.name, "model_fingerprint": records[0]["model_fingerprint"],
            "tasks": per_task, "files": {path.relative_to(folder).as_posix(): sha256(path) for path in files}}


def _write(folder: Path, out: Path) -> None:
    if out.name.endswith(".tar.gz"):
        with tarfile.open(out, "w:gz") as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    else:
        shutil.copytree(folder, out, dirs_exist_ok=True)


# ------------------------------------------------------------------------------------- reading

@contextlib.contextmanager
def opened(bundle: Path) -> Iterator[Path]:
    """The bundle as a folder: itself, or a ``.tar.gz`` unpacked safely into a temporary one."""
    bundle = Path(bundle)
    if bundle.is_dir():
        yield bundle
        return
    if not bundle.is_file():
        raise UserError(f"bundle {bundle} does not exist; pass a folder or .tar.gz written by `vtabkit submit`")
    with tempfile.TemporaryDirectory(prefix="vtabkit-bundle-") as tmp:
        _unpack(bundle, Path(tmp))
        yield Path(tmp)


def _unpack(archive_path: Path, into: Path) -> None:
    """Regular files only, relative names inside the archive root: no links, devices, ``..``,
    absolute paths or oversized content (each member is written by us, never by tarfile)."""
    try:
        archive = tarfile.open(archive_path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"bundle {archive_path} is not a readable .tar.gz ({error})") from None
    total = 0
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UserError(f"bundle {archive_path} is damaged ({error}); write it again with `vtabkit submit`") from None
        for member in members:
            name = member.name
            parts = name.split("/")
            if (name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]
                    or posixpath.normpath(name) != name.rstrip("/")):
                raise UserError(f"bundle {archive_path} has an unsafe member name {name!r}; refusing to unpack it")
            if member.isdir():
                continue
            if not member.isfile():
                raise UserError(f"bundle {archive_path}: member {name!r} is not a regular file (a link or device); "
                                "a bundle holds plain files only")
            total += member.size
            if total > _MAX_ARCHIVE_BYTES:
                raise UserError(f"bundle {archive_path} unpacks to more than {_MAX_ARCHIVE_BYTES >> 30} GiB; refusing")
            target = into.joinpath(*parts)
            if into.resolve() not in target.resolve().parents:
                raise UserError(f"bundle {archive_path} has an unsafe member name {name!r}; refusing to unpack it")
            target.parent.mkdir(parents=True, exist_ok=True)
            source_file = archive.extractfile(member)
            with open(target, "xb") as file:
                shutil.copyfileobj(source_file, file)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"bundle has no {what}; write bundles with `vtabkit submit`") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"bundle's {what} is not valid JSON ({error}); it was edited or damaged") from None


def read(folder: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(manifest, model facts, records) of an opened bundle, with no checks beyond parsing."""
    manifest = _read_json(folder / MANIFEST, MANIFEST)
    try:
        model = yaml.safe_load((folder / MODEL_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"bundle has no {MODEL_FILE}; write bundles with `vtabkit submit`") from None
    except yaml.YAMLError as error:
        raise UserError(f"bundle's {MODEL_FILE} is not valid YAML ({str(error).splitlines()[0]})") from None
    records = results.read_records(folder / results.RESULTS_FILE)
    return manifest, model, records


def bundle_text(summary: Summary) -> str:
    return (f"{summary.model} ({summary.fingerprint}): {summary.protocol} on suite {summary.suite} "
            f"({summary.tasks} tasks, regime {summary.regime}), {summary.records} record(s)")

