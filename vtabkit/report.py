"""`vtabkit report`: per-task scores, family means and both suite means of run directories.

Scores are each eval set's primary metric (top-1 unless the task says otherwise) in percent,
averaged over seeds (with ± std when a cell has several seeds). A task's extra eval sets get
rows of their own (``task / eval set``); family and suite means use each task's main eval set.
Two suite means are given, each labelled: the plain mean over tasks (as VTAB defines its score)
and the mean of the family means (the PEFT papers' headline); a mean that would need a missing
task shows the completeness instead (`vtabkit.aggregate`).

This module reads records (`load_records`, `load_frame`, `verify`, `protocol_notes`) and
dispatches `render`; the table is `report_table`, its formats `report_render`, and the
options live in `report_intervals` (--ci), `report_reference`, `report_plots`, `report_long`;
tasks scored on several eval sets also get `report_robustness`'s table and figures, and a run
with ``first:N`` regimes `report_regimes`' section: the metric against N.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import numpy as np

from vtabkit import report_table, results
from vtabkit.errors import UserError

FORMATS = ("md", "csv", "latex", "long")


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
    for run_dir, r in load_records(run_dirs):
        value = r["metrics"].get(r["primary_metric"])
        main = r.get("eval", {}).get("main", True)  # the task's first eval set counts in the means
        task = r["task"] if main else f"{r['task']} / {r['eval_set']}"
        rows.append({"model": r["model"], "task": task, "base_task": r["task"], "family": r["family"],
                     "protocol": r["protocol"], "setting": r["setting"], "seed": r["seed"],
                     "eval_set": r["eval_set"], "metric": r["primary_metric"], "main": main,
                     "eval_position": r.get("eval", {}).get("position", 0 if main else 1),
                     "fingerprint": r.get("model_fingerprint", ""), "regime": r.get("regime", ""),
                     "config": r.get("config_hash", ""), "task_hash": r.get("task_hash", ""),
                     "overrides": report_table.overridden_settings(r),
                     "num_train": (r.get("num_examples") or {}).get("train"),
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
    from vtabkit import metadata, metrics, predictions
    from vtabkit.errors import UserError as Error

    checked, problems = 0, []
    for run_dir, record in load_records(run_dirs):
        if not record.get("predictions"):
            continue
        checked += 1
        where = f"{record['task']} / {record['eval_set']} / {record['protocol']} {record['setting']} seed {record['seed']}"
        try:
            stored = predictions.load(run_dir / record["predictions"]["path"], record["predictions"]["sha256"])
            specs = list(record["metrics"])
            groups = metadata.join_stored(record.get("eval", {}).get("metadata"), stored,
                                          metrics.metadata_columns(specs))
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

    A column is ``model / protocol / setting`` with the overridden settings as ``key=value``;
    when one such column still holds records of several model fingerprints, regimes or settings
    files, each gets a tag (``[fp 1a2b3c]``, ``[full]``, ``[cfg 9f8e7d]``). A task whose
    definition changed between records is tagged likewise.
    """
    frame["setting_label"] = frame["setting"] + frame["overrides"].map(lambda text: f" ({text})" if text else "")
    column_keys = ["model", "protocol", "setting_label"]
    for field, tag in (("fingerprint", "fp {}"), ("regime", "{}"), ("config", "cfg {}")):
        ambiguous = frame.groupby(column_keys)[field].transform("nunique") > 1
        # Hashes shorten to 6 characters; regimes stay whole (first:100 and first:1000 differ late).
        shown = frame[field].astype(str) if field == "regime" else frame[field].astype(str).str[:6]
        labels = shown.map(lambda value: " [" + tag.format(value) + "]")
        frame.loc[ambiguous, "setting_label"] = frame["setting_label"] + labels
    changed = frame.groupby(column_keys + ["task"])["task_hash"].transform("nunique") > 1
    frame.loc[changed, "task"] = frame["task"] + " [task " + frame["task_hash"].str[:6] + "]"
    frame["column"] = frame["model"] + " / " + frame["protocol"] + " / " + frame["setting_label"]
    return frame


def score_table(frame: pd.DataFrame):
    """The `vtabkit.report_table.ScoreTable` of ``frame``, in the order of the registered suites."""
    from vtabkit import tasks

    registry = tasks.registry()
    suites = {name: list(suite.tasks) for name, suite in registry.suites.items()}
    families = {task_id: task.family for task_id, task in registry.tasks.items()}
    return report_table.build(frame, suites, families)


def render(run_dirs: Path | list[Path], output_format: str = "md", *, ci: bool = False,
           reference: str | None = None, plots: Path | None = None) -> str:
    """The report of one or more run directories in ``output_format`` (see FORMATS)."""
    from vtabkit import report_render

    if output_format not in FORMATS:
        raise UserError(f"unknown report format {output_format!r}; use one of {', '.join(FORMATS)}")
    if output_format == "long":
        from vtabkit import report_long

        return report_long.long_frame(load_records(run_dirs)).to_csv(index=False)
    frame = load_frame(run_dirs)
    table = score_table(frame)
    if ci:
        from vtabkit import report_intervals

        report_intervals.add_intervals(table, frame, load_records(run_dirs))
    published = None
    if reference:
        from vtabkit import report_reference

        published = report_reference.columns(reference, table)
    from vtabkit import report_regimes

    figures = []
    if plots is not None:
        from vtabkit import report_plots, report_robustness

        figures = report_plots.write_plots(table, Path(plots)) + report_regimes.write_plots(frame, Path(plots))
        figures += report_robustness.write_plots([record for _, record in load_records(run_dirs)], Path(plots))
    if output_format == "csv":
        return report_render.csv(table, published)
    if output_format == "latex":
        curves = report_regimes.latex(frame)
        return report_render.latex(table, published) + ("\n" + curves if curves else "")
    text = report_render.markdown(table, published, protocol_notes(run_dirs))
    if frame.groupby("base_task")["eval_set"].nunique().max() > 1:  # one head on many eval sets
        from vtabkit import report_robustness

        text += "\n\n" + report_robustness.markdown(report_robustness.tables(frame))
    curves = report_regimes.markdown(frame)
    text += "\n\n" + curves if curves else ""
    return text + ("\n\nFigures: " + ", ".join(map(str, figures)) if figures else "")
