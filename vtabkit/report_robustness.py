"""The robustness part of `vtabkit report`: one head scored on many eval sets, as a table and figures.

For every task whose records have more than one eval set (``lite_robust``, the ImageNet
robustness tasks), `tables` gives one `RobustnessTable`: a row per head (``model / protocol /
setting``, as the main report's columns), a column per eval set (its primary metric in %, mean
over seeds, in the task's eval-set order), then

- ``ReaL − original``: ``real_top1`` on the eval set scored by it minus the main eval set's
  ``top1`` (only when both are there);
- ``mean over shifted``: the unweighted mean over every eval set that is neither the main one
  nor scored by ``real_top1`` (a relabelling, not a shift); left empty, with the count, while
  one of them is missing for that row.

`corruption_summary` gathers the corruption tasks (every eval set named
``<corruption>_<severity>``, like ImageNet-C's 19 tasks): per head, each corruption's mean over
its severities and the mean over the benchmark corruptions' cells (15 × 5 for ImageNet-C); the
corruptions of the ``robustness_c_extra`` suite are shown apart and stay out of that mean.

`write_plots` draws, per head: each grouped metric against its factor (SI-Score size and
rotation curves; a heat map for a two-column grouping such as the (x, y) location grid), and
accuracy per severity for eval sets named ``<corruption>_<severity>`` (ImageNet-C's
``imagenet_c_<corruption>_<severity>``, lite_robust's ``noise_1`` … ``noise_3``), each titled
with model, protocol / setting and the datasets' pinned versions.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

REAL_METRIC = "real_top1"
GAP = "ReaL − original"
SHIFTED = "mean over shifted"
_SEVERITY = re.compile(r"^(?:imagenet_c_)?(?P<corruption>.+)_(?P<severity>[1-5])$")


@dataclasses.dataclass
class RobustnessTable:
    task: str
    eval_sets: list[str]  # in the task's order, the main one first
    metrics: dict[str, str]  # eval set → its primary metric
    rows: list[str]  # heads: "model / protocol / setting"
    values: dict[tuple[str, str], float]  # (row, eval set) → % (mean over seeds)
    shifted: list[str]  # the eval sets the shifted mean is over
    gap: dict[str, float | None]
    shifted_mean: dict[str, float | None]


def _eval_set_order(task_id: str, present: list[str]) -> list[str]:
    from vtabkit import tasks
    from vtabkit.errors import UserError

    try:
        declared = [e.name for e in tasks.get_task(task_id).eval_sets]
    except UserError:  # a task from a --tasks-dir folder this report does not see
        declared = []
    return [name for name in declared if name in present] + [name for name in present if name not in declared]


def tables(frame: pd.DataFrame) -> list[RobustnessTable]:
    """The robustness tables of ``frame`` (rows of `vtabkit.report.load_frame`), one per task
    with several eval sets, in the order the tasks first appear."""
    out = []
    for task_id in dict.fromkeys(frame["base_task"]):
        records = frame[frame["base_task"] == task_id]
        if records["eval_set"].nunique() < 2:
            continue
        eval_sets = _eval_set_order(task_id, list(dict.fromkeys(records["eval_set"])))
        main = [name for name in eval_sets if records.loc[records["eval_set"] == name, "main"].any()]
        metric = {name: records.loc[records["eval_set"] == name, "metric"].iloc[0] for name in eval_sets}
        means = records.groupby(["column", "eval_set"])["top1"].mean()  # "top1": the primary metric, in %
        rows = list(dict.fromkeys(records["column"]))
        values = {(row, name): float(means[row, name]) for row in rows for name in eval_sets
                  if (row, name) in means.index and not pd.isna(means[row, name])}
        shifted = [name for name in eval_sets if name not in main and metric[name] != REAL_METRIC]
        if all(_SEVERITY.match(name) for name in eval_sets):  # one corruption's severities (ImageNet-C):
            shifted = list(eval_sets)  # the first severity is as shifted as the others
        real = [name for name in eval_sets if metric[name] == REAL_METRIC]
        gap, shifted_mean = {}, {}
        for row in rows:
            original = next((values.get((row, name)) for name in main if metric[name] == "top1"), None)
            relabelled = values.get((row, real[0])) if real else None
            gap[row] = None if original is None or relabelled is None else relabelled - original
            scores = [values.get((row, name)) for name in shifted]
            shifted_mean[row] = float(np.mean(scores)) if scores and None not in scores else None
        out.append(RobustnessTable(task_id, eval_sets, metric, rows, values, shifted, gap, shifted_mean))
    return out


@dataclasses.dataclass
class CorruptionSummary:
    rows: list[str]  # heads
    corruptions: list[str]  # benchmark corruptions, in order of appearance
    extra: list[str]  # reported apart, not in the mean
    means: dict[tuple[str, str], float]  # (row, corruption) → mean over its severities, in %
    severities: dict[tuple[str, str], int]  # how many severities that mean is over
    overall: dict[str, float | None]  # mean over every benchmark cell; None while one is missing
    cells: dict[str, tuple[int, int]]  # row → (cells present, cells expected)


def _extra_corruption_tasks() -> set[str]:
    from vtabkit import tasks
    from vtabkit.errors import UserError

    try:
        return set(tasks.get_suite("robustness_c_extra").tasks)
    except UserError:
        return set()


def corruption_summary(robustness: list[RobustnessTable], severities: int = 5) -> CorruptionSummary | None:
    """The corruption tasks of ``robustness`` summarised (None when there are none)."""
    corruption_tables = [t for t in robustness if all(_SEVERITY.match(name) for name in t.eval_sets)]
    if not corruption_tables:
        return None
    extra_tasks = _extra_corruption_tasks()
    rows = list(dict.fromkeys(row for t in corruption_tables for row in t.rows))
    corruptions, extra, means, counts, overall, cells = [], [], {}, {}, {}, {}
    for table in corruption_tables:
        name = _SEVERITY.match(table.eval_sets[0]).group("corruption")
        (extra if table.task in extra_tasks else corruptions).append(name)
        for row in rows:
            values = [table.values[row, e] for e in table.eval_sets if (row, e) in table.values]
            if values:
                means[row, name], counts[row, name] = float(np.mean(values)), len(values)
    for row in rows:
        benchmark = [table.values[row, e] for table in corruption_tables if table.task not in extra_tasks
                     for e in table.eval_sets if (row, e) in table.values]
        expected = severities * len(corruptions)
        cells[row] = (len(benchmark), expected)
        overall[row] = float(np.mean(benchmark)) if benchmark and len(benchmark) == expected else None
    return CorruptionSummary(rows, corruptions, extra, means, counts, overall, cells)


def corruption_markdown(summary: CorruptionSummary) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    def mean(row: str, name: str) -> str:
        if (row, name) not in summary.means:
            return "–"
        value, count = summary.means[row, name], summary.severities[row, name]
        return f"{value:.1f}" + ("" if count == 5 else f" ({count} of 5)")

    header = ["head", *summary.corruptions, *[f"{name} (extra)" for name in summary.extra], "mean over cells"]
    text = [f"Corruptions: each corruption's mean over its severities in %; 'mean over cells': unweighted "
            f"mean over the {len(summary.corruptions)} benchmark corruptions x 5 severities"
            + (f" (the {len(summary.extra)} extra corruptions are shown apart, not in it)" if summary.extra else "")
            + ".", "", line(header), line(["---"] * len(header))]
    for row in summary.rows:
        present, expected = summary.cells[row]
        overall = summary.overall[row]
        text.append(line([row, *[mean(row, name) for name in summary.corruptions + summary.extra],
                          f"{overall:.1f}" if overall is not None else f"{present} of {expected} cells"]))
    return "\n".join(text)


def markdown(robustness: list[RobustnessTable]) -> str:
    """The tables as markdown, each with a line saying what its numbers are."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    parts = []
    for table in robustness:
        with_gap = any(value is not None for value in table.gap.values())
        header = ["head", *table.eval_sets, *([GAP] if with_gap else []), SHIFTED]
        text = [f"Robustness: {table.task} — each eval set's primary metric in % (mean over seeds); "
                f"'{SHIFTED}': unweighted mean over the {len(table.shifted)} eval sets other than "
                f"{', '.join(name for name in table.eval_sets if name not in table.shifted)}"
                + (f"; '{GAP}': real_top1 minus the main eval set's top1" if with_gap else "") + ".",
                "", line(header), line(["---"] * len(header))]
        for row in table.rows:
            present = sum((row, name) in table.values for name in table.shifted)
            mean = table.shifted_mean[row]
            text.append(line([row, *[number(table.values.get((row, name))) for name in table.eval_sets],
                              *([number(table.gap[row])] if with_gap else []),
                              number(mean) if mean is not None else f"{present} of {len(table.shifted)} sets"]))
        metrics = {name: metric for name, metric in table.metrics.items() if metric != "top1"}
        if metrics:
            text += ["", "Primary metrics other than top1: " +
                     ", ".join(f"{name}: {metric}" for name, metric in metrics.items()) +
                     " (NAME@COLUMN: unweighted mean over the column's values)."]
        parts.append("\n".join(text))
    summary = corruption_summary(robustness)
    if summary is not None:
        parts.append(corruption_markdown(summary))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Figures.

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _head(record: dict) -> str:
    return f"{record['model']} / {record['protocol']} / {record['setting']}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_AXIS = {"area": "object size (area as a fraction of the image)", "rotation": "rotation angle (degrees)"}


def _factor_figure(plt, record: dict, spec: str, groups: dict[str, float]):
    """A grouped metric against its factor: a line for one column, a heat map for two."""
    metric, _, column = spec.partition("@")
    columns = column.split(",")
    title = (f"{record['model']} — {record['protocol']} / {record['setting']}\n"
             f"{record['task']} / {record['eval_set']} ({record['eval']['dataset']}): {metric} by {column}")
    if len(columns) == 2:
        cells = {tuple(_number(part) for part in key.split(",")): 100.0 * value for key, value in groups.items()}
        xs = sorted({x for x, _ in cells})
        ys = sorted({y for _, y in cells})
        grid = np.full((len(ys), len(xs)), np.nan)
        for (x, y), value in cells.items():
            grid[ys.index(y), xs.index(x)] = value
        figure, axis = plt.subplots(figsize=(5.5, 4.5))
        image = axis.imshow(grid, origin="upper", cmap="viridis", vmin=0, vmax=100)
        axis.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        axis.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        if grid.size <= 100:
            for (row, col), value in np.ndenumerate(grid):
                axis.text(col, row, "" if np.isnan(value) else f"{value:.0f}", ha="center", va="center",
                          color="white" if value < 60 else "black", fontsize=8)
        axis.set_xlabel(columns[0])
        axis.set_ylabel(columns[1])
        figure.colorbar(image, ax=axis, label=f"{metric} (%)")
    else:
        keys = list(groups)
        numeric = [_number(key) for key in keys]
        figure, axis = plt.subplots(figsize=(6, 4))
        if None in numeric:
            axis.plot(range(len(keys)), [100.0 * groups[key] for key in keys], marker="o")
            axis.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        else:
            order = np.argsort(numeric)
            axis.plot(np.asarray(numeric)[order], [100.0 * groups[keys[i]] for i in order], marker="o")
        mean = record["metrics"].get(spec)
        if mean is not None:
            axis.axhline(100.0 * mean, color="grey", linestyle="--", label=f"unweighted mean {100 * mean:.1f}")
            axis.legend(fontsize="small")
        axis.set_xlabel(_AXIS.get(column, column))
        axis.set_ylabel(f"{metric} (%)")
        axis.set_ylim(0, 100)
    axis.set_title(title, fontsize=9)
    return figure


def _severity_figure(plt, task: str, head: str, records: list[dict]):
    """Accuracy per severity for eval sets named ``<corruption>_<severity>``; None when there are none."""
    curves: dict[str, dict[int, float]] = {}
    datasets = []
    for record in records:
        match = _SEVERITY.match(record["eval_set"])
        value = record["metrics"].get(record["primary_metric"])
        if match and value is not None:
            curves.setdefault(match["corruption"], {})[int(match["severity"])] = 100.0 * value
            datasets.append(record["eval"]["dataset"])
    curves = {name: points for name, points in curves.items() if len(points) >= 2}
    if not curves:
        return None
    metric = records[0]["primary_metric"]
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, points in sorted(curves.items()):
        severities = sorted(points)
        axis.plot(severities, [points[s] for s in severities], marker="o", label=name)
    levels = sorted(set.intersection(*(set(points) for points in curves.values())))
    if levels and len(curves) > 1:
        axis.plot(levels, [np.mean([points[s] for points in curves.values()]) for s in levels], color="black",
                  linestyle="--", linewidth=2, label=f"mean over {len(curves)}")
    main = next((r for r in records if r.get("eval", {}).get("main")), None)
    if main is not None and main["metrics"].get(main["primary_metric"]) is not None:
        axis.axhline(100.0 * main["metrics"][main["primary_metric"]], color="grey", linestyle=":",
                     label=f"{main['eval_set']} (clean)")
    axis.set_xticks(sorted({s for points in curves.values() for s in points}))
    axis.set_xlabel("severity")
    axis.set_ylabel(f"{metric} (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize="small")
    model, protocol, setting = head.split(" / ", 2)
    axis.set_title(f"{model} — {protocol} / {setting}\n{task}: accuracy per severity "
                   f"({', '.join(dict.fromkeys(datasets))})", fontsize=9)
    return figure


def write_plots(records: list[dict], folder: Path) -> list[Path]:
    """The robustness figures of ``records`` (seed 0 of each head) into ``folder``, PNG and PDF."""
    from vtabkit.report_plots import pyplot, save

    by_task: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        by_task.setdefault((record["task"], _head(record)), []).append(record)
    for key, group in by_task.items():  # one seed per head: its lowest
        first = min(record.get("seed", 0) for record in group)
        by_task[key] = [record for record in group if record.get("seed", 0) == first]
    by_task = {key: group for key, group in by_task.items() if len({r["eval_set"] for r in group}) > 1}
    if not by_task:
        return []
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (task, head), group in by_task.items():
        for record in group:
            for spec, groups in (record.get("metrics_by_group") or {}).items():
                figure = _factor_figure(plt, record, spec, groups)
                written += save(figure, folder, _slug(f"robust-{task}-{record['eval_set']}-{spec}-{head}"))
                plt.close(figure)
        figure = _severity_figure(plt, task, head, group)
        if figure is not None:
            written += save(figure, folder, _slug(f"severity-{task}-{head}"))
            plt.close(figure)
    return written
