"""`vtabkit report`: per-task scores, family means and the overall mean of a run directory.

Scores are top-1 in percent, averaged over seeds (with ± std when a cell has several seeds).
The overall mean is the unweighted mean over tasks (as VTAB defines it), *not* the mean of
the family means; family means are a labelled breakdown.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vtabkit import results
from vtabkit.errors import UserError

FORMATS = ("md", "csv", "latex")


def load_frame(run_dirs: Path | list[Path]) -> pd.DataFrame:
    """One row per record of one or more run directories (a record found twice counts once)."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    records, seen = [], set()
    for run_dir in run_dirs:
        path = Path(run_dir) / results.RESULTS_FILE
        if not Path(run_dir).is_dir():
            raise UserError(f"run directory {run_dir} does not exist; pass the --out of a `vtabkit run`")
        for record in results.read_records(path):
            if results.cell_key(record) not in seen:
                seen.add(results.cell_key(record))
                records.append(record)
    if not records:
        raise UserError(f"no results in {', '.join(map(str, run_dirs))} yet; run `vtabkit run ... --out DIR` first")
    frame = pd.DataFrame([{"model": r["model"], "task": r["task"], "family": r["family"],
                           "protocol": r["protocol"], "setting": r["setting"], "seed": r["seed"],
                           "fingerprint": r.get("model_fingerprint", ""), "regime": r.get("regime", ""),
                           "config": r.get("config_hash", ""), "task_hash": r.get("task_hash", ""),
                           "top1": 100.0 * r["metrics"]["top1"]} for r in records])
    return _disambiguate(frame)


def _disambiguate(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep apart what must not be averaged: other weights, regimes, settings or task definitions.

    A column is ``model / protocol / setting``; when one such column holds records of several
    model fingerprints, regimes or settings files, each gets a tag (``[fp 1a2b3c]``, ``[full]``,
    ``[cfg 9f8e7d]``). A task whose definition changed between records is tagged likewise.
    """
    column_keys = ["model", "protocol", "setting"]
    for field, tag in (("fingerprint", "fp {}"), ("regime", "{}"), ("config", "cfg {}")):
        ambiguous = frame.groupby(column_keys)[field].transform("nunique") > 1
        labels = frame[field].astype(str).str[:6].map(lambda value: " [" + tag.format(value) + "]")
        frame.loc[ambiguous, "setting"] = frame["setting"] + labels
    changed = frame.groupby(column_keys + ["task"])["task_hash"].transform("nunique") > 1
    frame.loc[changed, "task"] = frame["task"] + " [task " + frame["task_hash"].str[:6] + "]"
    return frame


def score_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: tasks (grouped by family), then family means and the overall mean.

    Columns: one per ``model / protocol / setting``; cells hold the mean over seeds.
    """
    frame = frame.assign(column=frame["model"] + " / " + frame["protocol"] + " / " + frame["setting"])
    per_task = frame.groupby(["family", "task", "column"])["top1"].mean().unstack("column")
    per_task = per_task.sort_index()
    rows = [per_task]
    for family, block in per_task.groupby(level="family"):
        rows.append(_mean_row(block, ("mean", f"{family} ({len(block)} tasks)")))
    rows.append(_mean_row(per_task, ("mean", f"all ({len(per_task)} tasks)")))
    return pd.concat(rows)


def _mean_row(block: pd.DataFrame, label: tuple[str, str]) -> pd.DataFrame:
    # A column missing some tasks has no honest mean: leave it empty rather than average fewer.
    means = block.mean().where(block.notna().all())
    return pd.DataFrame([means], index=pd.MultiIndex.from_tuples([label], names=block.index.names))


def seed_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds, for cells with more than one seed (e.g. few-shot)."""
    grouped = frame.groupby(["model", "task", "protocol", "setting"])["top1"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    return table[table["count"] > 1]


def render(run_dirs: Path | list[Path], output_format: str = "md") -> str:
    if output_format not in FORMATS:
        raise UserError(f"unknown report format {output_format!r}; use one of {', '.join(FORMATS)}")
    frame = load_frame(run_dirs)
    table = score_table(frame).round(2)
    spread = seed_spread(frame).round(2)
    if output_format == "csv":
        return table.to_csv()
    if output_format == "latex":
        return table.to_latex(na_rep="--", float_format="%.1f")
    text = ["Top-1 accuracy (%), mean over seeds. 'mean / all' is the unweighted mean over tasks; "
            "family rows are means over that family's tasks. Empty: not every task has a result.", "",
            table.to_markdown(floatfmt=".1f")]
    if len(spread):
        text += ["", "Seed spread (cells with several seeds):", "", spread.to_markdown(index=False, floatfmt=".2f")]
    return "\n".join(text)
