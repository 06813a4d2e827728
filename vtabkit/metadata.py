"""Per-example metadata joined to an eval set by example id (e.g. SI-Score's object size).

A metadata file is a CSV with one row per example: an id column and any number of factor
columns. The join is exact: every example of the eval set must have exactly one row.

A requested column may join several with ``+`` (``x_coord+y_coord``): its value per example is
the tuple of theirs, so ``top1@x_coord+y_coord`` groups SI-Score's location grid by (x, y).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from vtabkit.errors import UserError


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def join(path: Path, id_column: str, ids: np.ndarray, columns: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """``columns`` of the CSV at ``path``, aligned to ``ids``; and how many CSV rows went unused.

    One-line errors for a missing file, a missing column, duplicate ids, and eval examples the
    file does not cover.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"metadata file {path} does not exist; put the CSV there (see the task's "
                        "eval_sets metadata path) or run `vtabkit data prepare` for the task")
    try:
        table = pd.read_csv(path, dtype={id_column: str})
    except (ValueError, OSError) as error:
        raise UserError(f"metadata file {path} is not a readable CSV ({error})") from None
    parts = [part for column in columns for part in column.split("+")]
    for column in [id_column, *parts]:
        if column not in table.columns:
            raise UserError(f"metadata file {path} has no column {column!r}; it has "
                            f"{', '.join(map(str, table.columns))}")
    duplicated = table[id_column][table[id_column].duplicated()]
    if len(duplicated):
        raise UserError(f"metadata file {path}: id {duplicated.iloc[0]!r} appears more than once "
                        f"({len(duplicated)} duplicate rows); each example needs exactly one row")
    indexed = table.set_index(id_column)
    missing = [value for value in ids if value not in indexed.index]
    if missing:
        raise UserError(f"metadata file {path} has no row for {len(missing)} of {len(ids)} examples "
                        f"(e.g. id {missing[0]!r} in column {id_column!r})")
    rows = indexed.loc[list(ids)]
    return {column: _column(rows, column) for column in columns}, int(len(indexed) - len(set(ids)))


def _column(rows, column: str) -> np.ndarray:
    """One column's values, or for ``a+b`` a 1-D object array of (a, b) tuples of Python scalars."""
    if "+" not in column:
        return rows[column].to_numpy()
    values = list(zip(*(rows[part].tolist() for part in column.split("+"))))
    joined = np.empty(len(values), dtype=object)
    joined[:] = values
    return joined


def check_columns(path: Path, columns: list[str]) -> None:
    """One line naming the file and the column when the CSV at ``path`` lacks one of ``columns``."""
    import pandas as pd

    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError) as error:
        raise UserError(f"metadata file {path} is not a readable CSV ({error})") from None
    for column in columns:
        if column not in header:
            raise UserError(f"metadata file {path} has no column {column!r}; it has {', '.join(map(str, header))}")
