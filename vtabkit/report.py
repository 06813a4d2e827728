"""`vtabkit report`: per-task scores, family means and the overall mean of a run directory.

Scores are each eval set's primary metric (top-1 unless the task says otherwise) in percent,
averaged over seeds (with ± std when a cell has several seeds). A task's extra eval sets get
rows of their own (``task / eval set``); family and overall means use each task's ``test``.
The overall mean is the unweighted mean over tasks (as VTAB defines it), *not* the mean of
the family means; family means are a labelled breakdown.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import numpy as np

from vtabkit import results
from vtabkit.errors import UserError

FORMATS = ("md", "csv", "latex")


def load_records(run_dirs: Path | list[Path]) -> list[tuple[Path, dict]]:
    """Every record of one or more run directories, in the current schema's shape, with the run
    directory it came from (a record found twice counts once)."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    records, seen = [], set()
    for run_dir in run_dirs:
        if not Path(run_dir).is_dir():
            raise UserError(f"run directory {run_dir} does not exist; pass the --out of a `vtabkit run`")
        for record in results.read_records(Path(run_dir) / results.RESULTS_FILE):
            record = results.upgraded(record)
            if results.cell_key(record) not in seen:
                seen.add(results.cell_key(record))
                records.append((Path(run_dir), record))
    if not records:
        raise UserError(f"no results in {', '.join(map(str, run_dirs))} yet; run `vtabkit run ... --out DIR` first")
    return records


def load_frame(run_dirs: Path | list[Path]) -> pd.DataFrame:
    """One row per record of one or more run directories."""
    rows = []
    for _, r in load_records(run_dirs):
        value = r["metrics"].get(r["primary_metric"])
        main = r.get("eval", {}).get("main", True)  # the task's first eval set counts in the means
        task = r["task"] if main else f"{r['task']} / {r['eval_set']}"
        rows.append({"model": r["model"], "task": task, "family": r["family"], "protocol": r["protocol"],
                     "setting": r["setting"], "seed": r["seed"], "eval_set": r["eval_set"],
                     "metric": r["primary_metric"], "main": main, "fingerprint": r.get("model_fingerprint", ""),
                     "regime": r.get("regime", ""), "config": r.get("config_hash", ""),
                     "task_hash": r.get("task_hash", ""),
                     "top1": None if value is None else 100.0 * value})
    return _disambiguate(pd.DataFrame(rows))


def protocol_notes(run_dirs: Path | list[Path]) -> list[str]:
    """One line per cell where a protocol did something other than what was asked: fewer
    few-shot examples per class than ``shots``, a k capped at the bank size, l2 chosen on a
    hold-out of train (no val split), an L-BFGS that stopped at ``max_iter``."""
    notes = {}
    for _, r in load_records(run_dirs):
        details = r.get("details") or {}
        where = f"{r['task']} {r['protocol']} {r['setting']} seed {r['seed']}"
        if details.get("shots_per_class_min", details.get("shots", 0)) < details.get("shots", 0):
            notes[where + " shots"] = (f"{where}: only {details['shots_per_class_min']}-"
                                       f"{details['shots_per_class_max']} examples per class (asked {details['shots']})")
        if details.get("k_capped"):
            notes[where + " k"] = f"{where}: k {details['k']} capped at the bank size ({details['k_used']})"
        if details.get("val_source") == "train_holdout":
            notes[where + " val"] = f"{where}: no val split; l2 chosen on a 20% hold-out of train"
        if details.get("converged") is False:
            notes[where + " lbfgs"] = f"{where}: L-BFGS stopped at max_iter before reaching tol"
    return list(notes.values())


def verify(run_dirs: Path | list[Path]) -> tuple[int, list[str]]:
    """Recompute every metric of every record from its predictions file.

    Returns (records checked, one line per disagreement). Schema-1 records have no predictions
    and are not counted. A missing or altered predictions file is a disagreement.
    """
    from vtabkit import metadata, predictions
    from vtabkit.errors import UserError as Error

    checked, problems = 0, []
    for run_dir, record in load_records(run_dirs):
        if not record.get("predictions"):
            continue
        checked += 1
        where = f"{record['task']} / {record['eval_set']} / {record['protocol']} {record['setting']} seed {record['seed']}"
        try:
            stored = predictions.load(run_dir / record["predictions"]["path"], record["predictions"]["sha256"])
            groups = None
            meta = record.get("eval", {}).get("metadata")
            specs = list(record["metrics"])
            if meta:
                columns = sorted({spec.partition("@")[2] for spec in specs if "@" in spec})
                groups, _ = metadata.join(Path(meta["path"]), meta["id_column"], stored["ids"], columns)
            values, _ = predictions.recompute(specs, stored, metadata=groups)
        except Error as error:
            problems.append(f"{where}: {error}")
            continue
        for name, claimed in record["metrics"].items():
            again = values.get(name)
            if claimed is None and again is not None and not np.isfinite(again):
                continue  # stored as null: not a finite number
            if claimed is None or again is None or abs(again - claimed) > 1e-6:
                problems.append(f"{where}: {name} recorded {claimed}, recomputed {again}")
    return checked, problems


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
    main_tasks = set(frame.loc[frame["main"], "task"])
    averaged = per_task[per_task.index.get_level_values("task").isin(main_tasks)]
    rows = [per_task]
    for family, block in averaged.groupby(level="family"):
        rows.append(_mean_row(block, ("mean", f"{family} ({len(block)} tasks)")))
    rows.append(_mean_row(averaged, ("mean", f"all ({len(averaged)} tasks)")))
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
    metric_names = ", ".join(dict.fromkeys(frame["metric"]))
    text = [f"Primary metric ({metric_names}) in %, mean over seeds. 'mean / all' is the unweighted mean over tasks; "
            "family rows are means over that family's tasks. Empty: not every task has a result.", "",
            table.to_markdown(floatfmt=".1f")]
    if len(spread):
        text += ["", "Seed spread (cells with several seeds):", "", spread.to_markdown(index=False, floatfmt=".2f")]
    notes = protocol_notes(run_dirs)
    if notes:
        text += ["", "Where a protocol did something other than asked:", ""] + [f"- {note}" for note in notes]
    return "\n".join(text)
