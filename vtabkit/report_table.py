"""The report's table as data: rows in suite order, readable columns, seed spread, suite means.

`build` turns the report's one-row-per-record frame into a `ScoreTable` that every output
format (markdown, csv, LaTeX, plots) renders the same way:

- rows: the suite's tasks in the suite's own order (VTAB: natural, specialized, structured),
  a task's extra eval sets right after it; tasks of no known suite go last, by name;
- columns: ``model / protocol / setting`` plus the settings that differ from the protocol's
  defaults as ``key=value``; settings such as ``10shot`` sort by their number, not as text;
- cells: mean over seeds, std over seeds (several seeds), optionally a 95 % interval;
- per column a `vtabkit.aggregate.SuiteSummary`: the plain mean over tasks and the mean of the
  group means, each None (shown as "k of n tasks") unless every task of the suite has a score.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from vtabkit import aggregate
from vtabkit.errors import UserError


@dataclasses.dataclass
class Cell:
    mean: float
    std: float | None  # over seeds; None with one seed
    seeds: int
    low: float | None = None  # 95 % interval, when asked for
    high: float | None = None
    interval: str = ""  # how the interval was computed: "wilson" or "bootstrap"


@dataclasses.dataclass
class Row:
    label: str  # "dtd", or "dtd / extra_eval_set"
    task: str
    family: str
    main: bool  # the task's first eval set: counts in the means


@dataclasses.dataclass
class ScoreTable:
    rows: list[Row]
    columns: list[str]
    column_info: dict[str, dict]  # label → {"model", "protocol", "setting", "overrides"}
    cells: dict[tuple[str, str], Cell]
    summaries: dict[str, aggregate.SuiteSummary]
    suite: str | None  # the registered suite whose tasks these are (None: the tasks present)
    suite_tasks: list[str]
    families: dict[str, str]
    metrics: list[str]

    def scores(self, column: str) -> dict[str, float]:
        """Main-eval-set scores of one column, task → mean over seeds."""
        # A row tagged with another task definition ("a [task 1b2c3d]") is not the suite's task.
        return {row.task: self.cells[row.label, column].mean for row in self.rows
                if row.main and row.label == row.task and (row.label, column) in self.cells}


def setting_order(setting: str) -> tuple:
    """``5shot`` before ``10shot``: numbers inside a setting name compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", setting) if part)


def suite_order(frame: pd.DataFrame, suites: dict[str, list[str]]) -> tuple[str | None, list[str]]:
    """The smallest registered suite holding every main task of ``frame`` (its name and tasks)."""
    present = set(frame.loc[frame["main"], "base_task"])
    holding = [(len(tasks), name) for name, tasks in suites.items() if present <= set(tasks)]
    if holding:
        name = min(holding)[1]
        return name, list(suites[name])
    positions = {task: index for index, task in enumerate(t for tasks in suites.values() for t in tasks)}
    return None, sorted(present, key=lambda task: (positions.get(task, len(positions)), task))


def build(frame: pd.DataFrame, suites: dict[str, list[str]], families: dict[str, str]) -> ScoreTable:
    """The table of ``frame`` (rows of `vtabkit.report.load_frame`); ``suites``: name → task ids,
    ``families``: task → family for the registered tasks (the frame's own records take precedence)."""
    suite, suite_tasks = suite_order(frame, suites)
    position = {task: index for index, task in enumerate(suite_tasks)}
    families = {**families, **dict(zip(frame["base_task"], frame["family"]))}
    labels = frame.drop_duplicates("task")
    # A task's eval sets in the order the task declares them (older records: main first, then by name).
    eval_position = dict(zip(labels["task"], labels["eval_position"])) if "eval_position" in labels else {}
    rows = sorted((Row(label=r.task, task=r.base_task, family=r.family, main=bool(r.main)) for r in labels.itertuples()),
                  key=lambda row: (position.get(row.task, len(position)), row.task, not row.main,
                                   eval_position.get(row.label, 1), row.label))
    info = frame.drop_duplicates("column").set_index("column")
    columns = sorted(info.index, key=lambda c: (info.loc[c, "model"], info.loc[c, "protocol"],
                                                setting_order(info.loc[c, "setting"]), c))
    column_info = {c: {"model": info.loc[c, "model"], "protocol": info.loc[c, "protocol"],
                       "setting": info.loc[c, "setting"], "overrides": info.loc[c, "overrides"]} for c in columns}
    cells = {}
    for (label, column), group in frame.groupby(["task", "column"]):
        values = group["top1"].dropna().to_numpy(dtype=float)
        if len(values):
            cells[label, column] = Cell(float(values.mean()), float(np.std(values, ddof=1)) if len(values) > 1 else None,
                                        len(values))
    table = ScoreTable(rows, columns, column_info, cells, {}, suite, suite_tasks, families,
                       list(dict.fromkeys(frame["metric"])))
    for column in columns:
        table.summaries[column] = aggregate.summarize(table.scores(column), families, suite_tasks)
    return table


_DEFAULTS: dict[str, dict] = {}


def overridden_settings(record: dict) -> str:
    """The record's protocol settings that differ from the protocol's defaults, as ``key=value``.

    A list default (few-shot ``shots: [1, 5, 10, 25]``) expands into one cell per item, so a cell
    holding one of its items is not an override.
    """
    from vtabkit import protocols

    protocol = record.get("protocol", "")
    if protocol not in _DEFAULTS:
        try:
            _DEFAULTS[protocol] = protocols.merge_config(protocol, None)
        except UserError:  # a protocol this vtabkit does not know: nothing to compare against
            _DEFAULTS[protocol] = {}
    defaults = _DEFAULTS[protocol]
    changed = []
    for key, value in sorted((record.get("protocol_config") or {}).items()):
        if key in ("seed", "seeds", "setting") or key not in defaults:
            continue
        default = defaults[key]
        if value == default or (isinstance(default, list) and not isinstance(value, list) and value in default):
            continue
        changed.append(f"{key}={value}")
    return ", ".join(changed)
