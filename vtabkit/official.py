"""Official facts of the shipped tasks that a submission is checked against, without the data.

``official_splits.json`` (package data) holds per task: the hash of the definition the facts
belong to (``task_hash``), each eval set's example count (``eval_sizes``) and, where they are
pinned, the split-id hashes (`vtabkit.prepare.split_ids_hash`) of the train/val splits
(``split_ids``, by split name) and of each eval set's examples (``eval_ids``, by eval set).
The lite tasks' hashes are pinned (vtabkit generates their data, so the test suite recomputes
them); the VTAB tasks' eval sizes are the published counts, and their split-id hashes can be
added with `entry` by whoever has the data prepared.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from vtabkit.tasks import Task

TABLE = Path(__file__).resolve().parent / "official_splits.json"


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


def facts(task_id: str) -> dict[str, Any] | None:
    """The pinned facts of ``task_id``, or None when vtabkit pins none for it."""
    entry = _table().get(task_id)
    return entry if isinstance(entry, dict) else None


def entry(task: Task, data_dir: str | None, split_names: tuple[str, ...] = ("train800", "val200")) -> dict[str, Any]:
    """The facts of ``task`` computed from its prepared data (to pin them in the table).

    Only eval sets that read one of the task's own splits are covered (all shipped tasks).
    """
    from vtabkit import prepare, source

    sizes = source.split_sizes(prepare.open_builder(task, data_dir))
    own = {split: name for name, split in task.splits.items()}
    eval_sizes, eval_ids = {}, {}
    for eval_set in task.eval_sets:
        name = own[eval_set.view.split]
        eval_ids[eval_set.name] = prepare.split_ids_hash(task, name, data_dir)
        eval_sizes[eval_set.name] = sum(end - start for _, start, end in
                                        source.absolute_ranges(task.splits[name], sizes))
    return {"task_hash": task.hash, "eval_sizes": eval_sizes, "eval_ids": eval_ids,
            "split_ids": {name: prepare.split_ids_hash(task, name, data_dir) for name in split_names}}
