"""`vtabkit cache ls|clear`: what the feature cache holds, and removing entries from it.

Each entry is one ``.npz`` file: a view's features for one model, or a view's targets (labels
are cached apart, keyed by the label rule). Entries carry their facts (model, dataset, split)
so the listing needs no index file that could go stale; an entry's age is its file's age.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd

from vtabkit import compile_cache, features
from vtabkit.errors import UserError
from vtabkit.paths import cache_dir as default_cache_dir

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"2w"`` (or a bare number of days) → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match:
        raise UserError(f"--older-than {text!r} is not an age; use e.g. 7d, 12h, 30m or 2w")
    return float(match.group(1)) * _UNITS[match.group(2) or "d"]


def folder(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir() / "features"


def entries(root: Path) -> pd.DataFrame:
    """One row per cache entry: path, kind, model, dataset, split, size (MB), age (days)."""
    rows = []
    now = time.time()
    for path in sorted(root.glob("*.npz")) if root.is_dir() else []:
        meta = features.read_meta(path)
        rows.append({"kind": meta.get("kind", "?"), "model": meta.get("model", ""),
                     "dataset": meta.get("dataset", "?"), "split": meta.get("split", "?"),
                     "size_mb": path.stat().st_size / 1e6, "age_days": (now - path.stat().st_mtime) / 86400,
                     "file": path.name, "path": path})
    return pd.DataFrame(rows, columns=["kind", "model", "dataset", "split", "size_mb", "age_days", "file", "path"])


def main(args: argparse.Namespace) -> None:
    root = folder(args)
    table = entries(root)
    if args.action == "ls":
        if table.empty:
            print(f"the feature cache {root} is empty")
        else:
            shown = table.drop(columns=["path"]).round({"size_mb": 2, "age_days": 1})
            print(shown.to_markdown(index=False))
            print(f"\n{len(table)} entries, {table['size_mb'].sum():.1f} MB in {root}")
        print(compile_cache.summary())
        return
    chosen = table
    if args.model:
        chosen = chosen[chosen["model"] == args.model]
    if args.older_than:
        chosen = chosen[chosen["age_days"] * 86400 > parse_age(args.older_than)]
    for path in chosen["path"]:
        Path(path).unlink(missing_ok=True)
    print(f"removed {len(chosen)} of {len(table)} entries ({chosen['size_mb'].sum():.1f} MB) from {root}")
