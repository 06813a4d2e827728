"""Published reference numbers (``results/reference/*.csv``), one row per published number.

Each file is one reference, named by its stem (`names`); `load` returns it in long format:

- ``method`` (as the source names it), ``architecture``, ``pretraining``;
- ``task``: a task id of the suite (``cifar100``), or a mean: ``mean`` (over all tasks),
  ``group_mean`` (mean of the family means) or a family name (``natural``) for that family's mean;
- ``family`` (the task's family, or ``all`` for ``mean``/``group_mean``), ``protocol``
  (``finetune``, ``linear``), ``regime`` (``1k``, ``full``);
- ``score`` in percent, ``std`` where the source gives one;
- ``averaging``: empty for a per-task number, else how the source averaged (sources differ:
  VTAB, ViT, BiT and Mixer headline the plain mean over tasks, PEFT papers the group mean);
- ``citation`` (every row has one) and ``note`` (e.g. UNVERIFIED values).

These numbers were copied from their sources, not re-run by vtabkit; outputs mark them so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vtabkit.errors import UserError

COLUMNS = ("method", "architecture", "pretraining", "task", "family", "protocol", "regime", "score", "std",
           "averaging", "citation", "note")
MEAN_TASKS = ("mean", "group_mean")

_PACKAGE = Path(__file__).resolve().parent


def reference_dir() -> Path:
    """The shipped reference folder: ``vtabkit/_reference`` when installed, else the repo's."""
    installed = _PACKAGE / "_reference"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / "results" / "reference"


def names() -> list[str]:
    """The shipped references, e.g. ``["vit_b16_in21k", "vtab1k_published", "vtab_leaderboard"]``."""
    return sorted(path.stem for path in reference_dir().glob("*.csv"))


def load(name: str) -> pd.DataFrame:
    """One reference in long format (see the module docstring), rows in file order."""
    if name not in names():
        raise UserError(f"unknown reference {name!r}; shipped references: {', '.join(names())}")
    path = reference_dir() / f"{name}.csv"
    frame = pd.read_csv(path, dtype={column: str for column in COLUMNS if column not in ("score", "std")},
                        keep_default_na=False)
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; see vtabkit/reference.py")
    frame["score"] = pd.to_numeric(frame["score"], errors="raise").astype(float)
    frame["std"] = pd.to_numeric(frame["std"].replace("", None), errors="raise").astype(float)
    uncited = frame.index[frame["citation"].str.strip() == ""]
    if len(uncited):
        raise UserError(f"{path}: row {uncited[0] + 2} has no citation; every published number needs one")
    frame.insert(0, "reference", name)
    return frame[["reference", *COLUMNS]]


def load_all() -> pd.DataFrame:
    """Every shipped reference, one frame (a ``reference`` column names the file)."""
    return pd.concat([load(name) for name in names()], ignore_index=True)
