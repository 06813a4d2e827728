"""`vtabkit report --format long`: a tidy table, one row per record and metric.

For analysis in pandas/R/spreadsheets: nothing is averaged, nothing is pivoted. Grouped
metrics (``top1@factor``) also get one row per group value (``group`` column).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vtabkit.report_table import overridden_settings

COLUMNS = ("model", "model_fingerprint", "task", "family", "eval_set", "main", "regime", "protocol", "setting",
           "seed", "config_hash", "overrides", "metric", "group", "value", "primary", "num_examples", "run_dir",
           "predictions")


def long_frame(records: list[tuple[Path, dict]]) -> pd.DataFrame:
    """One row per (record, metric) — and per group of a grouped metric — of ``records``."""
    rows = []
    for run_dir, record in records:
        base = {"model": record["model"], "model_fingerprint": record.get("model_fingerprint", ""),
                "task": record["task"], "family": record["family"], "eval_set": record["eval_set"],
                "main": record.get("eval", {}).get("main", True), "regime": record.get("regime", ""),
                "protocol": record["protocol"], "setting": record["setting"], "seed": record["seed"],
                "config_hash": record.get("config_hash", ""), "overrides": overridden_settings(record),
                "num_examples": (record.get("num_examples") or {}).get("eval"), "run_dir": str(run_dir),
                "predictions": (record.get("predictions") or {}).get("path", "")}
        for metric, value in record["metrics"].items():
            rows.append({**base, "metric": metric, "group": "", "value": value,
                         "primary": metric == record["primary_metric"]})
            for group, group_value in (record.get("metrics_by_group") or {}).get(metric, {}).items():
                rows.append({**base, "metric": metric, "group": group, "value": group_value, "primary": False})
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return frame.astype({"num_examples": "Int64"})
