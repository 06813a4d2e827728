"""`vtabkit report --ci`: a 95 % interval per task cell, over the test examples.

One seed of an accuracy (``top1``): the Wilson score interval of k correct of n (it does not
collapse to a point at 0 % or 100 %, unlike the percentile bootstrap). Any other metric, or
the mean over several seeds: the percentile bootstrap over test examples, the metric
recomputed from the stored predictions on every resample (the same rows for every seed).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vtabkit import report_examples, stats
from vtabkit.errors import UserError
from vtabkit.report_table import ScoreTable

RESAMPLES = 2_000  # per cell; enough for a 95 % percentile interval to ±0.1 points on VTAB test sets


def add_intervals(table: ScoreTable, frame: pd.DataFrame, records: list[tuple[Path, dict]],
                  n_resamples: int = RESAMPLES) -> None:
    """Fill ``low``/``high`` of every task cell of ``table`` (``frame`` and ``records`` in the same order)."""
    if len(frame) != len(records):
        raise UserError("report --ci: the records changed while the report was read; run it again")
    groups: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
    for (label, column), pair in zip(zip(frame["task"], frame["column"]), records):
        groups.setdefault((label, column), []).append(pair)
    for key, pairs in groups.items():
        cell = table.cells.get(key)
        if cell is None:
            continue
        record = pairs[0][1]
        n = (record.get("num_examples") or {}).get("eval")
        if len(pairs) == 1 and record["primary_metric"] in report_examples.CORRECTNESS_METRICS and n:
            successes = round(record["metrics"][record["primary_metric"]] * n)
            low, high = stats.wilson_interval(successes, n)
            cell.low, cell.high, cell.interval = 100 * low, 100 * high, "wilson"
            continue
        seeds = [report_examples.load(run_dir, r) for run_dir, r in pairs]
        seeds = [seeds[0]] + [report_examples.aligned(seeds[0], other, f"task {key[0]}") for other in seeds[1:]]
        _, samples = report_examples.seed_mean_distribution(seeds, n_resamples, stats.DEFAULT_SEED)
        low, high = stats.percentile_interval(100 * samples)
        cell.low, cell.high, cell.interval = low, high, "bootstrap"
