"""Task definitions checked against TFDS when loaded: one line naming the YAML file and field.

The schema (`vtabkit.tasks`) checks shapes and types without TFDS. What needs TFDS is checked
here, still without prepared data: each split string must parse as TFDS split syntax, and a
``num_classes`` must cover the classes of a ``feature`` label on a TFDS ``ClassLabel`` (from the
builder's code). When the dataset is prepared, every split must also fit its TFDS splits. Eval sets' splits
(on other datasets too) are checked like the task's own.
Run for the tasks of ``--tasks-dir`` folders by `vtabkit list tasks` and for the chosen tasks
before a run; the built-in tasks are pinned by tests, so listing them stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from vtabkit import source
from vtabkit.errors import UserError
from vtabkit.paths import definitions_dir
from vtabkit.tasks import Task


def _reads(task: Task) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(field, dataset, split, label rule)`` for every split string the task reads."""
    reads = [(f"field 'splits' → {name}", task.tfds_name, split, task.label) for name, split in task.splits.items()]
    for number, eval_set in enumerate(task.eval_sets):
        view = eval_set.view
        if view.dataset == task.tfds_name and view.split in task.splits.values() and view.label == task.label:
            continue  # one of the task's own splits, checked above
        reads.append((f"field 'eval_sets[{number}]' ({eval_set.name}) → split", view.dataset, view.split, view.label))
    return reads


def check_split_syntax(task: Task) -> None:
    """Every split string of ``task`` parses as a TFDS split (``train[:800]+validation[:10%]``)."""
    tfds = source.tfds()
    for field, _, split, _ in _reads(task):
        try:
            tfds.core.ReadInstruction.from_spec(split)
        except (ValueError, AssertionError, TypeError):
            raise UserError(f"{task.source}: {field}: {split!r} is not a TFDS split string; "
                            "write e.g. train[:800], train[:80%] or train[:800]+validation[:200] "
                            "(https://www.tensorflow.org/datasets/splits)") from None


def _class_label(features, key: str):
    """The ``ClassLabel`` at ``key`` (``a/b`` for nested; inside a ``Sequence`` too), or None."""
    import tensorflow_datasets as tfds

    feature = features
    for part in key.split("/"):
        try:
            feature = feature[part]
        except (KeyError, TypeError):
            return None
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for multi-label data
    return feature if isinstance(feature, tfds.features.ClassLabel) else None


def check_num_classes(task: Task, dataset: str, label: dict[str, Any], builder) -> None:
    """A ``feature`` label on a ``ClassLabel`` has at most ``num_classes`` classes."""
    if label.get("rule", "feature") != "feature":
        return  # other rules compute labels; their class count is the rule's business
    key = label.get("key", "label")
    feature = _class_label(builder.info.features, key)
    if feature is not None and task.num_classes < feature.num_classes:
        raise UserError(f"{task.source}: field 'num_classes' is {task.num_classes}, but {dataset} "
                        f"feature {key!r} has {feature.num_classes} classes; set num_classes: {feature.num_classes}")


def check_task(task: Task, data_dir: str | Path | None = None) -> None:
    """All checks of this module for one task; raises a one-line `UserError`.

    A dataset TFDS cannot open is left to the data checks (`vtabkit data status`, the run's
    missing-data stop), which report it with its fix.
    """
    check_split_syntax(task)
    builders: dict[str, Any] = {}
    for field, dataset, split, label in _reads(task):
        if dataset not in builders:
            try:
                builders[dataset] = source.open_builder(dataset, data_dir)
            except UserError:
                builders[dataset] = None
        builder = builders[dataset]
        if builder is None:
            continue
        check_num_classes(task, dataset, label, builder)
        if source.is_prepared(builder):  # the split names must exist in the prepared data
            try:
                source.absolute_ranges(split, source.split_sizes(builder))
            except (UserError, KeyError) as error:
                raise UserError(f"{task.source}: {field}: {error}") from None


def check_tasks(chosen: Iterable[Task], data_dir: str | Path | None = None) -> None:
    for task in chosen:
        check_task(task, data_dir)


def is_builtin(task: Task) -> bool:
    """Whether ``task`` comes from vtabkit's shipped definitions (not a user's folder)."""
    try:
        Path(task.source).resolve().relative_to(definitions_dir("tasks").resolve())
    except ValueError:
        return False
    return True


def check_user_tasks(tasks: Iterable[Task]) -> None:
    """The checks for the tasks that come from ``--tasks-dir`` / ``VTABKIT_TASKS_DIR`` folders."""
    check_tasks(task for task in tasks if not is_builtin(task))
