"""`vtabkit report --plots DIR`: figures of a report, each as PNG and PDF.

- ``tasks``: per-task bars, one bar per column (run / protocol / setting), error bars = std over seeds;
- ``families``: the family means and both suite means per column (complete columns only);
- ``fewshot``: few-shot accuracy against shots (log scale), one line per model, the mean over
  the suite's tasks (± the mean std over seeds), drawn only for complete shot settings;
- ``regimes_<task>``: the metric against the training-set size of ``first:N`` regimes
  (`vtabkit.report_regimes`, which draws them with `pyplot` and `save` from here).

matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vtabkit.errors import UserError
from vtabkit.report_table import ScoreTable


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib, which is not installed: pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, folder: Path, name: str) -> list[Path]:
    written = []
    for suffix in ("png", "pdf"):
        path = folder / f"{name}.{suffix}"
        figure.savefig(path, bbox_inches="tight", dpi=150)
        written.append(path)
    return written


def write_plots(table: ScoreTable, folder: Path) -> list[Path]:
    """Write the report's figures into ``folder``; returns the files written."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tasks = [row for row in table.rows if row.main]
    width = 0.8 / max(1, len(table.columns))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(tasks) * max(1, len(table.columns)) ** 0.5), 4))
    for index, column in enumerate(table.columns):
        cells = [table.cells.get((row.label, column)) for row in tasks]
        axis.bar(np.arange(len(tasks)) + index * width, [c.mean if c else np.nan for c in cells], width,
                 yerr=[(c.std or 0.0) if c else 0.0 for c in cells], label=column, capsize=2)
    axis.set_xticks(np.arange(len(tasks)) + width * (len(table.columns) - 1) / 2,
                    [row.label for row in tasks], rotation=45, ha="right")
    axis.set_ylabel("primary metric (%)")
    axis.legend(fontsize="small")
    written += save(figure, folder, "tasks")
    plt.close(figure)

    families = list(dict.fromkeys(table.families[task] for task in table.suite_tasks))
    groups = families + ["mean over tasks", "mean of group means"]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(groups)), 4))
    for index, column in enumerate(table.columns):
        summary = table.summaries[column]
        heights = [summary.family_means.get(family) for family in families] + [summary.plain_mean, summary.group_mean]
        axis.bar(np.arange(len(groups)) + index * width, [np.nan if h is None else h for h in heights], width,
                 label=column)
    axis.set_xticks(np.arange(len(groups)) + width * (len(table.columns) - 1) / 2, groups, rotation=20, ha="right")
    axis.set_ylabel("mean primary metric (%)")
    axis.legend(fontsize="small")
    written += save(figure, folder, "families")
    plt.close(figure)

    lines: dict[str, list[tuple[int, float, float]]] = {}
    for column, info in table.column_info.items():
        shots = re.fullmatch(r"(\d+)shot", str(info["setting"]))
        mean = table.summaries[column].plain_mean
        if info["protocol"] == "fewshot" and shots and mean is not None:
            spread = [table.cells[row.label, column].std or 0.0 for row in tasks if (row.label, column) in table.cells]
            name = info["model"] + (f" ({info['overrides']})" if info["overrides"] else "")
            lines.setdefault(name, []).append((int(shots.group(1)), mean, float(np.mean(spread))))
    if lines:
        figure, axis = plt.subplots(figsize=(6, 4))
        for name, points in sorted(lines.items()):
            points.sort()
            axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                          marker="o", capsize=3, label=name)
        axis.set_xscale("log")
        axis.set_xlabel("examples per class (shots)")
        axis.set_ylabel(f"mean over {len(table.suite_tasks)} tasks (%)")
        axis.legend(fontsize="small")
        written += save(figure, folder, "fewshot")
        plt.close(figure)
    return written
