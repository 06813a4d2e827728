"""Task and suite definitions: YAML files under ``tasks/``, validated against a small schema.

A task file (``task:`` key) names a TFDS dataset with a pinned version, its split strings with
absolute example counts, its class count, family, label rule and target kind, and the eval
sets one fitted head is scored on (by default just ``test``). A suite file (``suite:`` key)
lists task ids and the data regime, or several comma-separated (a sweep; see `vtabkit.regimes`). Users add their own folders with
``--tasks-dir`` (or ``VTABKIT_TASKS_DIR``, ``:``-separated).
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

from vtabkit import labels, regimes
from vtabkit.errors import UserError
from vtabkit.paths import definitions_dir

FAMILIES = ("natural", "specialized", "structured", "remote_sensing", "robustness", "fewshot", "lite")
SPLIT_NAMES = ("train800", "val200", "train800val200", "train", "val", "trainval", "test")
# How a target is held: one int label; a multi-hot vector over the classes; a set of acceptable
# labels (an empty set: the example is not scored).
TARGETS = ("single", "multi", "set")
DEFAULT_METRICS = {"single": ("top1",), "multi": ("map", "micro_f1"), "set": ("real_top1",)}
# Multispectral TFDS configs and their RGB counterparts: models take 3-channel images, so a task
# reading more bands is refused (the remote-sensing family scores the RGB configs).
MULTISPECTRAL = {"bigearthnet/all": ("12 Sentinel-2 bands", "bigearthnet/rgb"),
                 "eurosat/all": ("13 Sentinel-2 bands", "eurosat/rgb"),
                 "so2sat/all": ("8 Sentinel-1 + 10 Sentinel-2 bands", "so2sat/rgb")}
# Fields that document a task but do not change what is computed: left out of its hash.
_DOCUMENTATION = ("description", "notes", "citation", "manual_download")

# Schema: key -> (type, required). Types are checked exactly; nested shapes below.
_TASK_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "task": (str, True), "family": (str, True), "dataset": (str, True),
    "num_classes": (int, True), "splits": (dict, True), "description": (str, False),
    "label": (dict, False), "image": (str, False), "image_scale": (int, False),
    "target": (str, False), "metrics": (list, False), "eval_sets": (list, False),
    "manual_download": (str, False), "citation": (str, False), "notes": (str, False),
}
_EVAL_SET_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True), "split": (str, True), "dataset": (str, False), "label": (dict, False),
    "target": (str, False), "image": (str, False), "image_scale": (int, False),
    "class_subset": (list, False), "metadata": (dict, False), "metrics": (list, False),
    "primary_metric": (str, False),
}
_METADATA_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "path": (str, True), "id_column": (str, False), "id_feature": (str, False), "url": (str, False),
}
_SUITE_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "suite": (str, True), "tasks": (list, True), "regime": (str, True),
    "description": (str, False), "protocols": (list, False),
}


@dataclasses.dataclass(frozen=True)
class View:
    """One read of data: a TFDS split through an image pipeline and a label rule.

    Two views with the same `images_facts` read the same images (their features are shared);
    `labels_facts` adds what turns an example into a target.
    """

    dataset: str  # pinned ``name[/config]:version``
    split: str  # TFDS split string
    num_classes: int
    label_json: str = '{"key":"label","rule":"feature"}'  # the label rule, canonical JSON
    target: str = "single"
    image_key: str = "image"
    image_scale: int = 1

    @property
    def label(self) -> dict[str, Any]:
        return json.loads(self.label_json)

    def images_facts(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "image": self.image_key,
                "image_scale": self.image_scale}

    def labels_facts(self) -> dict[str, Any]:
        return dict(self.images_facts(), label=self.label, target=self.target, num_classes=self.num_classes)

    def preprocess(self, example: dict[str, Any]) -> dict[str, Any]:
        """One TFDS example → ``{"image": uint8 HxWx3, "label": target}`` (graph-safe).

        The target is an int64 scalar (``single``) or a multi-hot uint8 vector over the classes
        (``multi`` and ``set``; a set becomes padded label lists on the host).
        """
        import tensorflow as tf

        image = labels.feature(example, self.image_key)
        if self.image_scale != 1:  # e.g. dSprites stores 0/1 pixels
            image = tf.cast(image, tf.int32) * self.image_scale
        image = tf.cast(image, tf.uint8)
        if image.shape.rank == 2:
            image = image[..., None]
        if image.shape[-1] == 1:  # grayscale → 3 channels
            image = tf.tile(image, [1, 1, 3])
        return {"image": image, "label": self.target_of(example)}

    def target_of(self, example: dict[str, Any]) -> Any:
        """The target of one TFDS example (graph-safe), without touching the image."""
        import tensorflow as tf

        value = labels.apply_rule(self.label, example)
        if self.target == "single":
            return value
        value = tf.reshape(tf.cast(value, tf.int64), [-1])  # one label or a list of them
        return tf.reduce_max(tf.one_hot(value, self.num_classes, dtype=tf.uint8, axis=-1), axis=0) \
            if self.num_classes else tf.zeros([0], tf.uint8)


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """One set a fitted head is scored on, with the metrics reported for it."""

    name: str
    view: View
    metrics: tuple[str, ...]
    primary_metric: str
    class_subset: tuple[int, ...] | None = None  # scores restricted to these classes before the argmax
    metadata: dict[str, str] | None = None  # {"path": csv, "id_column": column, ["id_feature": feature]}

    def metadata_columns(self) -> list[str]:
        """The metadata columns the eval set's grouped metrics need, and its id column."""
        # The spec grammar is vtabkit.metrics' (``top1@x_coord,y_coord``); parsed here too because
        # data preparation checks a fetched CSV's columns and sits below the metrics layer.
        grouped = [part for spec in self.metrics if "@" in spec for part in spec.partition("@")[2].split(",")]
        return list(dict.fromkeys([self.metadata["id_column"], *grouped])) if self.metadata else []

    def metadata_path(self, data_dir: str | None) -> Path:
        """The metadata CSV, with ``<data_dir>`` filled in (files produced by `vtabkit data prepare`)."""
        from vtabkit.paths import default_data_dir

        root = data_dir or default_data_dir() or str(Path.home() / "tensorflow_datasets")
        return Path(self.metadata["path"].replace("<data_dir>", root)).expanduser()


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation task: splits to fit a head on, eval sets to score it on."""

    id: str
    family: str
    tfds_name: str
    num_classes: int
    splits: dict[str, str]
    label: dict[str, Any]
    target: str = "single"
    image_key: str = "image"
    image_scale: int = 1
    eval_sets: tuple[EvalSet, ...] = ()
    description: str = ""
    manual_download: str = ""
    source: str = ""
    definition: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @cached_property
    def hash(self) -> str:
        """Hash of the fields that change what is computed (not the documentation fields)."""
        computed = {key: value for key, value in self.definition.items() if key not in _DOCUMENTATION}
        canonical = json.dumps(computed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def dataset_name(self) -> str:
        """TFDS builder name with config, without the version (``clevr``, ``eurosat/rgb``)."""
        return self.tfds_name.split(":")[0]

    @property
    def dataset_version(self) -> str:
        return self.tfds_name.split(":")[1]

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every pinned dataset the task reads (its own, then its eval sets'), once each."""
        return tuple(dict.fromkeys([self.tfds_name] + [e.view.dataset for e in self.eval_sets]))

    def view(self, split_name: str) -> View:
        """The view of one of the task's own splits (``train800``, ``test``, ...)."""
        return View(dataset=self.tfds_name, split=self.splits[split_name], num_classes=self.num_classes,
                    label_json=_canonical(self.label), target=self.target, image_key=self.image_key,
                    image_scale=self.image_scale)

    def regime_views(self, regime: regimes.Regime) -> tuple[View, View | None]:
        """The (train, val) views of ``regime``; val is None when the task has no such split."""
        if regime.train not in self.splits:
            raise UserError(f"task {self.id!r} has no {regime.train} split for the {regime.name!r} "
                            "regime; pick another regime (--regime)")
        val = self.view(regime.val) if regime.val in self.splits else None
        return self.view(regime.train), val

    def preprocess(self, example: dict[str, Any]) -> dict[str, Any]:
        """One TFDS example of the task's own dataset → ``{"image", "label"}`` (graph-safe)."""
        return self.view(next(iter(self.splits))).preprocess(example)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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


def _check_dataset(value: str, where: str, field: str) -> None:
    if value.count(":") != 1 or not value.split(":")[1]:
        raise UserError(f"{where}: field {field!r} must pin a version, like 'clevr:3.1.0'")
    name, version = value.split(":")
    if name in MULTISPECTRAL:
        bands, rgb = MULTISPECTRAL[name]
        raise UserError(f"{where}: field {field!r} is {value!r}, a multispectral config ({bands}); "
                        f"models take 3-channel images, use {rgb}:{version}")


def _check_target(value: str, where: str, field: str) -> None:
    if value not in TARGETS:
        raise UserError(f"{where}: field {field!r} is {value!r}; use one of {', '.join(TARGETS)}")


def _task_from_yaml(data: dict[str, Any], where: str) -> Task:
    _check_schema(data, _TASK_SCHEMA, where)
    if data["family"] not in FAMILIES:
        raise UserError(f"{where}: field 'family' is {data['family']!r}; use one of {', '.join(FAMILIES)}")
    _check_dataset(data["dataset"], where, "dataset")
    if data["num_classes"] < 2:
        raise UserError(f"{where}: field 'num_classes' must be at least 2")
    for name, split in data["splits"].items():
        if name not in SPLIT_NAMES:
            raise UserError(f"{where}: unknown split {name!r}; allowed: {', '.join(SPLIT_NAMES)}")
        if not isinstance(split, str) or not split:
            raise UserError(f"{where}: split {name!r} must be a TFDS split string like 'train[:800]'")
    if not ({"train800", "train"} & set(data["splits"])):
        raise UserError(f"{where}: field 'splits' needs train800/val200 or train/val to fit on")
    if "test" not in data["splits"] and "eval_sets" not in data:
        raise UserError(f"{where}: field 'splits' needs a test split, or declare 'eval_sets'")
    label = data.get("label", {"rule": "feature", "key": "label"})
    labels.validate_rule(label, where)
    target = data.get("target", "single")
    _check_target(target, where, "target")
    task = Task(id=data["task"], family=data["family"], tfds_name=data["dataset"],
                num_classes=data["num_classes"], splits=dict(data["splits"]), label=label, target=target,
                image_key=data.get("image", "image"), image_scale=data.get("image_scale", 1),
                description=data.get("description", ""),
                manual_download=data.get("manual_download", ""), source=where, definition=data)
    metrics = _metric_list(data.get("metrics", list(DEFAULT_METRICS[target])), where, "metrics")
    declared = data.get("eval_sets", [{"name": "test", "split": "test", "metrics": list(metrics)}])
    if not declared:
        raise UserError(f"{where}: field 'eval_sets' must list at least one eval set")
    eval_sets = [_eval_set_from_yaml(item, task, where, number) for number, item in enumerate(declared)]
    names = [e.name for e in eval_sets]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: eval set names must be unique; got {', '.join(names)}")
    return dataclasses.replace(task, eval_sets=tuple(eval_sets))


def _metric_list(value: Any, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value):
        raise UserError(f"{where}: field {field!r} must be a non-empty list of metric names, like [top1]")
    return tuple(value)


def _eval_set_from_yaml(data: Any, task: Task, where: str, number: int) -> EvalSet:
    place = f"{where}: eval_sets[{number}]"
    _check_schema(data, _EVAL_SET_SCHEMA, place)
    dataset = data.get("dataset", task.tfds_name)
    _check_dataset(dataset, place, "dataset")
    split = data["split"]
    if dataset == task.tfds_name and split in task.splits:  # a name of the task's own splits
        split = task.splits[split]
    elif dataset == task.tfds_name and split in SPLIT_NAMES:  # another dataset's 'test' is its TFDS split
        raise UserError(f"{place}: split {split!r} is not one of the task's splits; give a TFDS split "
                        "string of the eval set's dataset, like 'test' or 'validation[:50%]'")
    label = data.get("label", task.label)
    labels.validate_rule(label, place)
    target = data.get("target", task.target)
    _check_target(target, place, "target")
    view = View(dataset=dataset, split=split, num_classes=task.num_classes, label_json=_canonical(label),
                target=target, image_key=data.get("image", task.image_key),
                image_scale=data.get("image_scale", task.image_scale))
    metrics = _metric_list(data.get("metrics", list(DEFAULT_METRICS[target])), place, "metrics")
    primary = data.get("primary_metric", metrics[0])
    if primary not in metrics:
        raise UserError(f"{place}: primary_metric {primary!r} is not in its metrics ({', '.join(metrics)})")
    subset = data.get("class_subset")
    if subset is not None:
        good = all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < task.num_classes for c in subset)
        if not subset or not good or len(set(subset)) != len(subset):
            raise UserError(f"{place}: class_subset must be distinct class indices in [0, {task.num_classes})")
        if target == "multi":
            raise UserError(f"{place}: class_subset restricts an argmax; it does not apply to multi targets")
    metadata = data.get("metadata")
    if metadata is not None:
        _check_schema(metadata, _METADATA_SCHEMA, f"{place}: metadata")
        path = Path(metadata["path"]).expanduser()
        if not path.is_absolute() and "<data_dir>" not in metadata["path"]:
            path = Path(where).parent / path  # relative to the YAML file
        # Rows are matched to examples by their example id, or by a feature of the example
        # (``id_feature``: SI-Score's metadata.csv is keyed by its ``image_id`` feature).
        metadata = {"path": str(path), "id_column": metadata.get("id_column", "id"),
                    **{key: metadata[key] for key in ("id_feature", "url") if key in metadata}}
    return EvalSet(name=data["name"], view=view, metrics=metrics, primary_metric=primary,
                   class_subset=tuple(subset) if subset is not None else None, metadata=metadata)


def _suite_from_yaml(data: dict[str, Any], where: str) -> Suite:
    _check_schema(data, _SUITE_SCHEMA, where)
    try:  # one regime, or several comma-separated (a sweep: each its own cells)
        regimes.parse_list(data["regime"])
    except UserError as error:
        raise UserError(f"{where}: field 'regime': {error}") from None
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
