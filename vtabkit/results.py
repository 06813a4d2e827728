"""Result records: one JSON object per line of ``results.jsonl``, appended as soon as known.

Appends are single ``write`` calls of a whole line followed by fsync; a line torn by a crash
(no trailing newline) is cut off before the next append and ignored when reading, so a
killed run loses at most the cell it was writing and never duplicates one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from vtabkit.errors import UserError

RESULTS_FILE = "results.jsonl"
PREDICTIONS_DIR = "predictions"  # per-example predictions, one file per record, beside results.jsonl
SCHEMA_VERSION = 2  # 1: one record per cell, `top1` only, no eval sets or predictions
CELL_FIELDS = ("model_fingerprint", "task", "task_hash", "regime", "protocol", "setting", "seed",
               "config_hash", "eval_set")


def config_hash(config: dict[str, Any]) -> str:
    """Short hash of a protocol cell's settings: changed settings make new cells, not skips.

    ``seed`` and ``setting`` are left out: they are fields of the cell key themselves, and the
    seeds of one setting must share a hash so that reports can average over them.
    """
    settings = {key: value for key, value in config.items() if key not in ("seed", "setting")}
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def cell_key(record: dict[str, Any]) -> tuple:
    """What identifies a result cell: re-running the same cell is skipped."""
    return tuple(record.get(field) for field in CELL_FIELDS)


def _cut_torn_tail(path: Path) -> None:
    """Make the file end on a complete line: keep a last line that parses, cut a torn one."""
    with open(path, "rb+") as stream:
        size = stream.seek(0, os.SEEK_END)
        if size == 0:
            return
        stream.seek(size - 1)
        if stream.read(1) == b"\n":
            return
        start = size  # find the start of the last line, reading backwards in blocks
        while start > 0:
            block = min(start, 1 << 20)
            stream.seek(start - block)
            newline = stream.read(block).rfind(b"\n")
            if newline >= 0:
                start = start - block + newline + 1
                break
            start -= block
        stream.seek(start)
        try:
            json.loads(stream.read())
        except ValueError:
            stream.truncate(start)  # torn by a crash
        else:
            stream.seek(0, os.SEEK_END)
            stream.write(b"\n")  # complete, only its newline is missing


def _finite(value: Any) -> Any:
    """NaN/inf (e.g. a diverged loss) become None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _cut_torn_tail(path)
    line = (json.dumps(_finite(record), sort_keys=True, allow_nan=False, default=_plain) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in records become plain numbers and lists."""
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    raise TypeError(f"cannot store {type(value).__name__} in a result record")


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records of a results file (a torn last line is skipped with a warning)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the torn last line of a killed run
                warnings.warn(f"{path}: ignoring an incomplete last line (an interrupted write)")
            else:
                raise UserError(f"{path}:{number} is not a JSON record; the file was edited or "
                                "corrupted — fix or remove that line")
    return records


def done_cells(records: Iterable[dict[str, Any]]) -> set[tuple]:
    return {cell_key(record) for record in records}


def schema_version(record: dict[str, Any]) -> int:
    return int(record.get("schema_version", 1))


def check_writable_schema(records: list[dict[str, Any]], path: Path) -> None:
    """Refuse to append to a results file written with another record schema (one line)."""
    old = {schema_version(record) for record in records} - {SCHEMA_VERSION}
    if old:
        raise UserError(f"{path} holds records of schema {', '.join(map(str, sorted(old)))} from an older "
                        f"vtabkit; this one writes schema {SCHEMA_VERSION}: pass a new --out (`vtabkit "
                        "report` still reads the old file)")


def upgraded(record: dict[str, Any]) -> dict[str, Any]:
    """A record in the current schema's shape for reading (v1: one `test` eval set, top1)."""
    if schema_version(record) >= SCHEMA_VERSION:
        return record
    if not isinstance(record.get("metrics"), dict) or "top1" not in record["metrics"]:
        raise UserError(f"a schema-1 record of task {record.get('task')!r} has no top1 metric; "
                        "re-run that cell with a new --out")
    return dict(record, eval_set="test", primary_metric="top1", predictions=None)
