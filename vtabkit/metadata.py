"""Per-example metadata joined to an eval set by example id (e.g. SI-Score's object size).

A metadata file is a CSV with one row per example: an id column and any number of factor
columns. The join is exact: every example of the eval set must have exactly one row.

Grouping by two columns at once (SI-Score's (x, y) location grid) is the metric's business:
``top1@x_coord,y_coord`` asks for both columns (`vtabkit.metrics.metadata_columns`).
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
    for column in [id_column, *columns]:
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
    return {column: rows[column].to_numpy() for column in columns}, int(len(indexed) - len(set(ids)))


def stored_keys(meta: dict, arrays: dict) -> np.ndarray:
    """The keys a record's metadata was joined on: the stored ``metadata_keys`` (the values of the
    eval set's ``id_feature``, e.g. SI-Score's image_id) when it had one, else the example ids."""
    if meta.get("id_feature"):
        if "metadata_keys" not in arrays:
            raise UserError(f"predictions lack metadata_keys (the {meta['id_feature']!r} of each example) "
                            "that this record's metadata was joined on; re-run it with this vtabkit")
        return np.asarray(arrays["metadata_keys"]).astype(str)
    return np.asarray(arrays["ids"]).astype(str)


def join_stored(meta: dict | None, arrays: dict, columns: list[str]) -> dict[str, np.ndarray] | None:
    """The metadata ``columns`` of a record (its ``eval.metadata``) aligned to its stored
    predictions; None when the record has no metadata, none is needed, or the file was missing
    when it was scored (its grouped metrics were left out then)."""
    if not meta or not columns or meta.get("missing"):
        return None
    groups, _ = join(Path(meta["path"]), meta["id_column"], stored_keys(meta, arrays), columns)
    return groups


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
