"""`vtabkit report --reference NAME`: published numbers beside the run's own, marked as such.

Every (method, protocol, regime) of the reference becomes one column labelled "published (not
re-run)". Task rows take the source's per-task numbers. Mean rows take the means the source
itself published, with its averaging convention in the footnote; where it published per-task
numbers only, the means are computed from those over the report's suite (said so), and only
when the source covers every task of that suite.
"""

from __future__ import annotations

from vtabkit import aggregate, reference
from vtabkit.report_render import GROUP, PLAIN, PublishedColumn, family_label
from vtabkit.report_table import ScoreTable


def columns(name: str, table: ScoreTable) -> list[PublishedColumn]:
    frame = reference.load(name)
    result = []
    for (method, protocol, regime), rows in frame.groupby(["method", "protocol", "regime"], sort=False):
        per_task = {row.task: row.score for row in rows.itertuples() if row.task in table.families}
        values = dict(per_task)
        published_means = {row.task: row for row in rows.itertuples()
                           if row.task in reference.MEAN_TASKS or row.family == row.task}
        conventions = []
        on_this_suite = table.suite is not None and set(table.suite_tasks) <= set(per_task)
        for task, row in published_means.items():
            if table.suite not in ("vtab1k", "vtab") and not on_this_suite:
                continue  # a VTAB mean is not comparable to a mean over another suite
            label = PLAIN if task == "mean" else GROUP if task == "group_mean" else family_label(table, task)
            values[label] = row.score
            conventions.append(row.averaging)
        if on_this_suite and PLAIN not in values:
            summary = aggregate.summarize(per_task, table.families, table.suite_tasks)
            values.update({PLAIN: summary.plain_mean, GROUP: summary.group_mean})
            values.update({family_label(table, family): mean for family, mean in summary.family_means.items()})
            conventions.append("means computed by vtabkit from the published per-task numbers")
        averaging = "; ".join(dict.fromkeys(c for c in conventions if c)) or "per-task numbers only"
        result.append(PublishedColumn(label=f"published (not re-run): {method} [{protocol}, {regime}]",
                                      values=values, averaging=averaging, citation=rows["citation"].iloc[0]))
    return result
