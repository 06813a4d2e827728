"""The report's low-data section: the primary metric against the training-set size N.

Drawn when a run holds ``first:N`` regimes (the remote-sensing sweep, `vtabkit.regimes`): per
task one table, rows ``model / protocol`` (plus the setting when it is not ``default``),
columns the N of each ``first:N`` regime in increasing order and then ``full``; a cell is the
mean over seeds of the primary metric (top-1 or mAP) in percent. With ``--plots`` each task
also gets a figure, one curve per row, N on a log axis (``full`` drawn at its train size).

Reads the report's one-row-per-record frame (`vtabkit.report.load_frame`); writes nothing but
the figures.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from vtabkit.report_latex import table as latex_table

FULL = "full"


def _size(regime: str) -> int | None:
    match = re.fullmatch(r"first:(\d+)", str(regime))
    return int(match.group(1)) if match else None


def curve_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The records of ``first:N`` and ``full`` regimes, with ``row`` and ``n`` columns; empty
    when the run has no ``first:N`` regime (then there is no curve to show)."""
    if not frame["regime"].map(_size).notna().any():
        return frame.iloc[0:0].assign(row=pd.Series(dtype=str), n=pd.Series(dtype=object))
    kept = frame[frame["regime"].map(lambda regime: _size(regime) is not None or regime == FULL)].copy()
    setting = kept["setting"] + kept["overrides"].map(lambda text: f" ({text})" if text else "")
    kept["row"] = kept["model"] + " / " + kept["protocol"] + setting.map(lambda s: "" if s == "default" else f" / {s}")
    kept["n"] = kept["regime"].map(lambda regime: _size(regime) or FULL)
    return kept


def _columns(curves: pd.DataFrame) -> list:
    sizes = sorted({n for n in curves["n"] if n != FULL})
    return sizes + ([FULL] if (curves["n"] == FULL).any() else [])


def tables(frame: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """task label → (metric name, table of rows × N with the mean over seeds in %)."""
    curves = curve_frame(frame)
    out = {}
    for task, group in curves.groupby("task", sort=True):
        columns = _columns(group)
        means = group.groupby(["row", "n"])["top1"].mean()
        grid = pd.DataFrame(index=sorted(group["row"].unique()), columns=columns, dtype=float)
        for (row, n), value in means.items():
            grid.loc[row, n] = value
        metric = "/".join(dict.fromkeys(group["metric"]))
        out[task] = (metric, grid)
    return out


def _train_sizes(frame: pd.DataFrame) -> dict[str, int]:
    """task label → train examples of its ``full`` regime (where the full point is drawn)."""
    full = curve_frame(frame)
    full = full[full["n"] == FULL].dropna(subset=["num_train"])
    return {task: int(group["num_train"].max()) for task, group in full.groupby("task")}


def _text(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.1f}"


def markdown(frame: pd.DataFrame) -> str:
    """The section as markdown ('' when the run has no first:N regime)."""
    found = tables(frame)
    if not found:
        return ""
    sizes = _train_sizes(frame)
    lines = ["## Metric against training examples (first:N regimes)", "",
             "The first N training examples in TFDS order (not class-balanced); cells are the primary "
             "metric in %, mean over seeds."]
    for task, (metric, grid) in found.items():
        header = ["model / protocol", *[f"N={n}" if n != FULL else f"full ({sizes[task]})" if task in sizes
                                        else "full" for n in grid.columns]]
        lines += ["", f"{task} ({metric}, %)", "", "| " + " | ".join(header) + " |",
                  "| " + " | ".join(["---"] * len(header)) + " |"]
        lines += ["| " + " | ".join([row.replace("|", "\\|"), *map(_text, grid.loc[row])]) + " |"
                  for row in grid.index]
    return "\n".join(lines)


def latex(frame: pd.DataFrame) -> str:
    """One booktabs table per task ('' when the run has no first:N regime)."""
    parts = []
    for task, (metric, grid) in tables(frame).items():
        header = ["model / protocol", *[f"N={n}" if n != FULL else "full" for n in grid.columns]]
        rows = [[row, *map(_text, grid.loc[row])] for row in grid.index]
        parts.append(latex_table(header, rows, caption=f"{task}: {metric} (%) against the number of training "
                                                        "examples (first N in TFDS order), mean over seeds."))
    return "\n".join(parts)


def _file_name(task: str) -> str:
    return "regimes_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_")


def write_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """One figure per task (PNG and PDF): a curve per row; returns the files written."""
    from vtabkit.report_plots import pyplot, save

    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    sizes = _train_sizes(frame)
    for task, (metric, grid) in tables(frame).items():
        figure, axis = plt.subplots(figsize=(6, 4))
        xs = [n if n != FULL else sizes.get(task, np.nan) for n in grid.columns]
        for row in grid.index:
            points = [(x, y) for x, y in zip(xs, grid.loc[row].to_numpy(dtype=float)) if np.isfinite(x) and np.isfinite(y)]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row)
        axis.set_xscale("log")
        axis.set_xlabel("training examples (first N; full at its train size)")
        axis.set_ylabel(f"{metric} (%)")
        axis.set_title(f"{task}: {metric} against training examples")
        axis.legend(fontsize="small")
        written += save(figure, folder, _file_name(task))
        plt.close(figure)
    return written
