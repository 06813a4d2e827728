"""The report's `ScoreTable` as markdown, wide csv and LaTeX, all with the same rows and labels.

Rows: the tasks in suite order, then one mean row per family, the plain mean over tasks and
the mean of the group (family) means, each labelled; a mean that would need a missing task
shows the completeness ("18 of 19 tasks") instead of a number. Cells: mean over seeds, ± std
over seeds where a cell has several, the 95 % interval in brackets when asked for.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from vtabkit import metrics
from vtabkit.report_latex import table as latex_table
from vtabkit.report_table import ScoreTable

PLAIN = "mean over tasks (plain)"
GROUP = "mean of group means"
LEGEND = (f"Primary metric in %, mean over seeds (± std over seeds). '{PLAIN}': unweighted mean over "
          f"the suite's tasks (VTAB, BiT, ViT, Mixer headline this); '{GROUP}': unweighted mean of the "
          "family means (the PEFT literature's headline). A mean needing a missing task shows how many "
          "tasks are there instead.")


@dataclasses.dataclass
class PublishedColumn:
    """Numbers copied from a published source (`vtabkit.reference`), shown beside the run's own."""

    label: str
    values: dict[str, float]  # row label (task id, family mean label, PLAIN, GROUP) → score
    averaging: str
    citation: str


@dataclasses.dataclass
class DisplayRow:
    label: str
    kind: str  # "task", "family", "plain", "group"
    family: str


def display_rows(table: ScoreTable) -> list[DisplayRow]:
    rows = [DisplayRow(row.label, "task", row.family) for row in table.rows]
    families = list(dict.fromkeys(table.families[task] for task in table.suite_tasks))
    rows += [DisplayRow(family_label(table, family), "family", family) for family in families]
    return rows + [DisplayRow(PLAIN, "plain", "all"), DisplayRow(GROUP, "group", "all")]


def family_label(table: ScoreTable, family: str) -> str:
    count = sum(table.families[task] == family for task in table.suite_tasks)
    return f"{family} mean ({count} task{'' if count == 1 else 's'})"


def value(table: ScoreTable, row: DisplayRow, column: str) -> tuple[float | None, str]:
    """A cell's number (None when there is none) and its completeness note for a mean row."""
    if row.kind == "task":
        cell = table.cells.get((row.label, column))
        return (cell.mean if cell else None), ""
    summary = table.summaries[column]
    if row.kind == "family":
        members = [task for task in table.suite_tasks if table.families[task] == row.family]
        present = sum(task in table.scores(column) for task in members)
        number = summary.family_means.get(row.family)
        return number, "" if number is not None else f"{present} of {len(members)} tasks"
    number = summary.plain_mean if row.kind == "plain" else summary.group_mean
    return number, "" if number is not None else summary.completeness


def cell_text(table: ScoreTable, row: DisplayRow, column: str) -> str:
    number, note = value(table, row, column)
    if number is None:
        return note or "–"
    text = f"{number:.1f}"
    cell = table.cells.get((row.label, column)) if row.kind == "task" else None
    if cell and cell.std is not None:
        text += f" ± {cell.std:.1f}"
    if cell and cell.low is not None:
        text += f" [{cell.low:.1f}, {cell.high:.1f}]"
    return text


def _published_text(column: PublishedColumn, row: DisplayRow) -> str:
    number = column.values.get(row.label)
    return "" if number is None or math.isnan(number) else f"{number:.1f}"


def _header(table: ScoreTable, published: list[PublishedColumn] | None) -> list[str]:
    return ["task", "family", *table.columns, *[column.label for column in published or []]]


def _grid(table: ScoreTable, published: list[PublishedColumn] | None) -> list[list[str]]:
    return [[row.label, row.family, *[cell_text(table, row, column) for column in table.columns],
             *[_published_text(column, row) for column in published or []]] for row in display_rows(table)]


def _footnotes(table: ScoreTable, published: list[PublishedColumn] | None) -> list[str]:
    lines = []
    if table.suite is None:
        lines.append("No registered suite holds all these tasks: means are over the tasks present.")
    else:
        lines.append(f"Suite {table.suite} ({len(table.suite_tasks)} tasks), in the suite's order.")
    intervals = {cell.interval for cell in table.cells.values() if cell.interval}
    if intervals:
        lines.append("[low, high]: 95 % interval over test examples (" + ", ".join(sorted(intervals)) +
                     "; Wilson for one seed of accuracy, else percentile bootstrap, seed 0).")
    for column in published or []:
        lines.append(f"{column.label}: {column.averaging}; {column.citation}")
    return lines


def markdown(table: ScoreTable, published: list[PublishedColumn] | None, notes: list[str]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    header = _header(table, published)
    text = [LEGEND, "", line(header), line(["---"] * len(header))]
    text += [line(row) for row in _grid(table, published)]
    text += [""] + _footnotes(table, published)
    if notes:
        text += ["", "Where a protocol did something other than asked:", ""] + [f"- {note}" for note in notes]
    return "\n".join(text)


def csv(table: ScoreTable, published: list[PublishedColumn] | None) -> str:
    """Wide and numeric: per column its mean, std over seeds, seed count, interval, completeness."""
    records = []
    with_ci = any(cell.low is not None for cell in table.cells.values())
    for row in display_rows(table):
        record = {"row": row.label, "kind": row.kind, "family": row.family}
        for column in table.columns:
            number, note = value(table, row, column)
            cell = table.cells.get((row.label, column)) if row.kind == "task" else None
            record[column] = number
            record[f"{column} std"] = cell.std if cell else None
            record[f"{column} seeds"] = cell.seeds if cell else None
            if with_ci:
                record[f"{column} ci_low"] = cell.low if cell else None
                record[f"{column} ci_high"] = cell.high if cell else None
            record[f"{column} tasks"] = note
        for column in published or []:
            record[column.label] = column.values.get(row.label)
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    seeds = [column for column in frame.columns if column.endswith(" seeds")]
    return frame.astype({column: "Int64" for column in seeds}).to_csv(index=False)


def _higher_is_better(table: ScoreTable) -> bool:
    names = [name.partition("@")[0] for name in table.metrics]
    return not names or any(metrics.get_metric(name).higher_is_better for name in names if name in metrics.METRICS)


def latex(table: ScoreTable, published: list[PublishedColumn] | None) -> str:
    """A booktabs table; the best of the run's own columns in every row is bold."""
    rows = display_rows(table)
    grid = _grid(table, published)
    higher = _higher_is_better(table)
    bold = []
    for number, row in enumerate(rows):
        values = {index: value(table, row, column)[0] for index, column in enumerate(table.columns)}
        values = {index: v for index, v in values.items() if v is not None}
        if len(values) > 1:
            best = (max if higher else min)(values.values())
            bold += [(number, 2 + index) for index, v in values.items() if round(v, 1) == round(best, 1)]
    first_mean = next(number for number, row in enumerate(rows) if row.kind != "task")
    caption = LEGEND + " " + " ".join(_footnotes(table, published))
    return latex_table(_header(table, published), grid, bold=bold, rules_before=[first_mean, len(rows) - 2],
                       caption=caption, text_columns=2)
