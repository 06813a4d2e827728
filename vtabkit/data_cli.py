"""`vtabkit data status|prepare`: which datasets a suite needs, and getting them."""

from __future__ import annotations

import argparse

import pandas as pd

from vtabkit import prepare, tasks
from vtabkit.errors import UserError


def chosen_tasks(args: argparse.Namespace) -> list[tasks.Task]:
    """The tasks named by --suite and/or --tasks (all known tasks when neither is given)."""
    if args.suite:
        ids = list(tasks.get_suite(args.suite, args.tasks_dirs).tasks)
        if args.tasks:
            outside = [t for t in args.tasks if t not in ids]
            if outside:
                raise UserError(f"tasks {', '.join(outside)} are not in suite {args.suite!r}")
            ids = list(args.tasks)
    else:
        ids = list(args.tasks or tasks.list_tasks(args.tasks_dirs))
    return [tasks.get_task(task_id, args.tasks_dirs) for task_id in ids]


def status_table(chosen: list[tasks.Task], data_dir: str | None, with_ids: bool) -> pd.DataFrame:
    rows = []
    for task in chosen:
        status = prepare.dataset_status(task, data_dir)
        row = {"task": task.id, "dataset": task.tfds_name,
               "state": "prepared" if status["prepared"] else
                        "generated on use" if status["own_builder"] and not status["problem"] else "missing",
               "splits": " ".join(f"{name}={count}" for name, count in status["task_splits"].items()
                                  if count is not None) or "-",
               "fix": status["fix"] if not status["prepared"] and not status["own_builder"] else ""}
        if with_ids and (status["prepared"] or status["own_builder"]):
            for name in ("train800", "val200", "train800val200"):
                if name in task.splits:
                    row[f"ids {name}"] = prepare.split_ids_hash(task, name, data_dir)
        rows.append(row)
        rows += _extra_rows(task, data_dir)
    return pd.DataFrame(rows).fillna("")


def _extra_rows(task: tasks.Task, data_dir: str | None) -> list[dict[str, str]]:
    """A row per other dataset the task's eval sets read, and per eval-set metadata file."""
    rows = []
    for dataset in task.datasets[1:]:
        fix = prepare.eval_dataset_problem(task, dataset, data_dir)
        rows.append({"task": task.id, "dataset": dataset, "state": "missing" if fix else "prepared",
                     "splits": "-", "fix": fix or ""})
    for name, path, present, fix in prepare.metadata_status(task, data_dir):
        rows.append({"task": task.id, "dataset": f"{name} metadata ({path.name})",
                     "state": "prepared" if present else "missing", "splits": "-", "fix": fix})
    return rows


def main(args: argparse.Namespace) -> None:
    if args.action == "prepare" and not (args.suite or args.tasks):
        raise UserError("name what to prepare with --suite (e.g. vtab1k) or --tasks; "
                        "preparing every known dataset would download hundreds of GB")
    chosen = chosen_tasks(args)
    if args.action == "status":
        table = status_table(chosen, args.data_dir, args.ids)
        print(table.to_markdown(index=False))
        # A task has its data when every row of it (its dataset, eval-set datasets, metadata) does.
        lacking = table.loc[table["state"] == "missing", "task"].unique()
        total, missing = len(chosen), len(lacking)
        print(f"\n{total - missing} of {total} task(s) have their data"
              + (f"; {missing} missing (see the fix column)" if missing else ""))
        return
    summary = prepare.prepare_datasets(chosen, args.data_dir)
    extra = prepare.prepare_metadata(chosen, args.data_dir, getattr(args, "siscore_metadata", None))
    summary.outcomes.update(extra.outcomes)
    if not summary.ok:
        raise UserError(f"{len(summary.outcomes) - sum(summary.count(s) for s in (prepare.READY, prepare.PREPARED))} "
                        "dataset(s) not ready; the summary above says what to do for each, then run the command again")
