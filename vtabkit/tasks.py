"""Task and suite definitions: YAML files under ``tasks/``, validated against a small schema.

A task file (``task:`` key) names a TFDS dataset with a pinned version, its split strings with
absolute example counts, its class count, family and label rule. A suite file (``suite:`` key)
lists task ids and the data regime (``1k``: train800/val200/test; ``full``: train/val/test).
Users add their own folders with ``--tasks-dir`` (or ``VTABKIT_TASKS_DIR``, ``:``-separated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from vtabkit import labels
from vtabkit.errors import UserError
from vtabkit.paths import definitions_dir

FAMILIES = ("natural", "specialized", "structured", "remote_sensing", "robustness", "fewshot", "lite")
SPLIT_NAMES = ("train800", "val200", "train800val200", "train", "val", "trainval", "test")
# Which split plays train / val / test in each data regime.
REGIMES = {"1k": ("train800", "val200", "test"), "full": ("train", "val", "test")}

# Schema: key -> (type, required). Types are checked exactly; nested shapes below.
_TASK_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "task": (str, True), "family": (str, True), "dataset": (str, True),
    "num_classes": (int, True), "splits": (dict, True), "description": (str, False),
    "label": (dict, False), "image": (str, False), "image_scale": (int, False),
    "manual_download": (str, False), "citation": (str, False), "notes": (str, False),
}
_SUITE_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "suite": (str, True), "tasks": (list, True), "regime": (str, True),
    "description": (str, False), "protocols": (list, False),
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation task. ``preprocess`` maps a TFDS example to ``{"image", "label"}``."""

    id: str
    family: str
    tfds_name: str
    num_classes: int
    splits: dict[str, str]
    label: dict[str, Any]
    image_key: str = "image"
    image_scale: int = 1
    description: str = ""
    manual_download: str = ""
    source: str = ""
    definition: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @cached_property
    def hash(self) -> str:
        """Hash of the parsed definition: changes when any field changes, not with comments."""
        canonical = json.dumps(self.definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def dataset_name(self) -> str:
        """TFDS builder name with config, without the version (``clevr``, ``eurosat/rgb``)."""
        return self.tfds_name.split(":")[0]

    @property
    def dataset_version(self) -> str:
        return self.tfds_name.split(":")[1]

    def regime_splits(self, regime: str) -> tuple[str, str | None, str]:
        """The (train, val, test) split strings of ``regime``; val is None when absent."""
        train, val, test = REGIMES[regime]
        missing = [name for name in (train, test) if name not in self.splits]
        if missing:
            raise UserError(f"task {self.id!r} has no {'/'.join(missing)} split for the "
                            f"{regime!r} regime; pick a suite with another regime")
        return self.splits[train], self.splits.get(val), self.splits[test]

    def preprocess(self, example: dict[str, Any]) -> dict[str, Any]:
        """One TFDS example → ``{"image": uint8 HxWx3, "label": int64}`` (graph-safe)."""
        import tensorflow as tf

        image = labels.feature(example, self.image_key)
        if self.image_scale != 1:  # e.g. dSprites stores 0/1 pixels
            image = tf.cast(image, tf.int32) * self.image_scale
        image = tf.cast(image, tf.uint8)
        if image.shape.rank == 2:
            image = image[..., None]
        if image.shape[-1] == 1:  # grayscale → 3 channels
            image = tf.tile(image, [1, 1, 3])
        return {"image": image, "label": labels.apply_rule(self.label, example)}


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[str, ...]
    regime: str
    description: str = ""
    protocols: tuple[str, ...] = ("linear",)
    source: str = ""


def _check_schema(data: Any, schema: dict, where: str) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            raise UserError(f"{where}: unknown field {key!r}; allowed fields: {', '.join(schema)}")
    for key, (kind, required) in schema.items():
        if key not in data:
            if required:
                raise UserError(f"{where}: missing required field {key!r}")
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise UserError(f"{where}: field {key!r} must be a {expected}, got {type(value).__name__}")


def _task_from_yaml(data: dict[str, Any], where: str) -> Task:
    _check_schema(data, _TASK_SCHEMA, where)
    if data["family"] not in FAMILIES:
        raise UserError(f"{where}: field 'family' is {data['family']!r}; use one of {', '.join(FAMILIES)}")
    if data["dataset"].count(":") != 1 or not data["dataset"].split(":")[1]:
        raise UserError(f"{where}: field 'dataset' must pin a version, like 'clevr:3.1.0'")
    if data["num_classes"] < 2:
        raise UserError(f"{where}: field 'num_classes' must be at least 2")
    for name, split in data["splits"].items():
        if name not in SPLIT_NAMES:
            raise UserError(f"{where}: unknown split {name!r}; allowed: {', '.join(SPLIT_NAMES)}")
        if not isinstance(split, str) or not split:
            raise UserError(f"{where}: split {name!r} must be a TFDS split string like 'train[:800]'")
    if not any(all(s in data["splits"] for s in (r[0], r[2])) for r in REGIMES.values()):
        raise UserError(f"{where}: field 'splits' needs train800/val200/test or train/test")
    label = data.get("label", {"rule": "feature", "key": "label"})
    labels.validate_rule(label, where)
    return Task(id=data["task"], family=data["family"], tfds_name=data["dataset"],
                num_classes=data["num_classes"], splits=dict(data["splits"]), label=label,
                image_key=data.get("image", "image"), image_scale=data.get("image_scale", 1),
                description=data.get("description", ""),
                manual_download=data.get("manual_download", ""), source=where, definition=data)


def _suite_from_yaml(data: dict[str, Any], where: str) -> Suite:
    _check_schema(data, _SUITE_SCHEMA, where)
    if data["regime"] not in REGIMES:
        raise UserError(f"{where}: field 'regime' is {data['regime']!r}; use one of {', '.join(REGIMES)}")
    if not data["tasks"] or not all(isinstance(t, str) for t in data["tasks"]):
        raise UserError(f"{where}: field 'tasks' must be a non-empty list of task ids")
    return Suite(name=data["suite"], tasks=tuple(data["tasks"]), regime=data["regime"],
                 description=data.get("description", ""),
                 protocols=tuple(data.get("protocols", ["linear"])), source=where)


def task_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """The built-in definitions, then ``VTABKIT_TASKS_DIR`` folders, then ``extra``."""
    env = [p for p in os.environ.get("VTABKIT_TASKS_DIR", "").split(os.pathsep) if p]
    dirs = [definitions_dir("tasks")] + [Path(p) for p in env + list(extra or [])]
    for folder in dirs[1:]:
        if not folder.is_dir():
            raise UserError(f"task folder {folder} does not exist; check --tasks-dir / VTABKIT_TASKS_DIR")
    return dirs


class Registry:
    """All tasks and suites found in a list of folders (later folders may not redefine ids)."""

    def __init__(self, dirs: list[Path]):
        self.tasks: dict[str, Task] = {}
        self.suites: dict[str, Suite] = {}
        for folder in dirs:
            for path in sorted(folder.rglob("*.yaml")):
                self._add(path)
        for suite in self.suites.values():
            for task_id in suite.tasks:
                if task_id not in self.tasks:
                    raise UserError(f"{suite.source}: suite {suite.name!r} lists unknown task {task_id!r}")

    def _add(self, path: Path) -> None:
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise UserError(f"{where}:{line} is not valid YAML ({getattr(error, 'problem', error)})") from None
        if isinstance(data, dict) and "suite" in data:
            suite = _suite_from_yaml(data, where)
            self._check_new(suite.name, self.suites.get(suite.name), where, "suite")
            self.suites[suite.name] = suite
        elif isinstance(data, dict) and "task" in data:
            task = _task_from_yaml(data, where)
            self._check_new(task.id, self.tasks.get(task.id), where, "task")
            self.tasks[task.id] = task
        else:
            raise UserError(f"{where}: a definition needs a 'task:' or 'suite:' field")

    @staticmethod
    def _check_new(name: str, existing: Any, where: str, kind: str) -> None:
        if existing is not None:
            raise UserError(f"{where}: {kind} {name!r} is already defined in {existing.source}")


_REGISTRIES: dict[tuple[str, ...], Registry] = {}


def registry(tasks_dirs: list[str | Path] | None = None) -> Registry:
    """The (cached) registry for the built-in folders plus ``tasks_dirs``."""
    dirs = task_dirs(tasks_dirs)
    key = tuple(str(d.resolve()) for d in dirs)
    if key not in _REGISTRIES:
        _REGISTRIES[key] = Registry(dirs)
    return _REGISTRIES[key]


def get_task(task_id: str, tasks_dirs: list[str | Path] | None = None) -> Task:
    tasks = registry(tasks_dirs).tasks
    if task_id not in tasks:
        raise UserError(f"unknown task {task_id!r}; see `vtabkit list tasks`")
    return tasks[task_id]


def list_tasks(tasks_dirs: list[str | Path] | None = None) -> list[str]:
    return sorted(registry(tasks_dirs).tasks)


def get_suite(name: str, tasks_dirs: list[str | Path] | None = None) -> Suite:
    suites = registry(tasks_dirs).suites
    if name not in suites:
        raise UserError(f"unknown suite {name!r}; see `vtabkit list suites`")
    return suites[name]


def list_suites(tasks_dirs: list[str | Path] | None = None) -> list[str]:
    return sorted(registry(tasks_dirs).suites)
