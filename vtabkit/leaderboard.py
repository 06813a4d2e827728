"""`vtabkit leaderboard`: one static, offline ``index.html`` from validated submission bundles.

Every bundle is validated first (`vtabkit.validate`); a page is never built from a
bundle that fails. Each bundle becomes one row per protocol setting of its suite's table; the
published reference numbers (`vtabkit.reference`) join the VTAB tables as rows marked
``published``. Per task the row shows the primary metric in percent with a 95 % interval over
test examples (Wilson for top-1 of one seed, `vtabkit.stats`; otherwise a seeded percentile
bootstrap); family means, the plain mean over tasks and the mean of the group means come from
`vtabkit.aggregate`, each under its own label, with bootstrap intervals that resample examples
within every task.

The page is ``templates/leaderboard.html`` with the data embedded as JSON in a
``<script type="application/json">`` element (no fetch, no CDN: it opens from ``file://``);
its script fills every cell with ``textContent``, so a model name is never parsed as HTML.
Each bundle's manifest and model.yaml are copied beside the page and linked from its row.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vtabkit import aggregate, bundle, predictions, reference, stats, tasks, validate
from vtabkit.errors import UserError

TEMPLATE = Path(__file__).resolve().parent / "templates" / "leaderboard.html"
DATA_MARK = "/*VTABKIT_DATA*/"
N_RESAMPLES = 2000  # per task; enough for the second decimal of a percent interval
REFERENCE_SUITES = {"1k": "vtab1k", "full": "vtab"}  # the published numbers' regimes → vtabkit suites


def find_bundles(paths: Iterable[Path]) -> list[Path]:
    """Each path as a bundle (a folder with a manifest, or a ``.tar.gz``), or a folder of bundles."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name.endswith(".tar.gz") or (path / bundle.MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if (p.is_dir() and (p / bundle.MANIFEST).is_file()) or p.name.endswith(".tar.gz"))
            if not inside:
                raise UserError(f"{path} is neither a bundle nor a folder of bundles; pass what `vtabkit submit` wrote")
            found.extend(inside)
        else:
            raise UserError(f"bundle {path} does not exist; pass a bundle folder, a .tar.gz or a folder of them")
    if not found:
        raise UserError("no bundles given; pass bundle folders, .tar.gz files or folders of them")
    return found


# ----------------------------------------------------------------------------- scores of a bundle

def _sliced(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    n = len(arrays["ids"])
    return {key: (value[rows] if value.ndim and len(value) == n else value) for key, value in arrays.items()}


def _distribution(arrays: dict[str, np.ndarray], metric: str, claimed: float) -> np.ndarray:
    """The primary metric on each bootstrap resample of the eval examples (fixed seed)."""
    n = len(arrays["ids"])
    if metric == "top1" and arrays["target_kind"] == "single":
        best = arrays["top_index"][:, 0] if "top_index" in arrays else np.argmax(arrays["scores"], axis=1)
        correct = (best == arrays["targets"]).astype(np.float64)
        # The correctness vector is only the metric's if it gives the recorded score (tie rules).
        if abs(correct.mean() - claimed) <= 1e-6:
            return stats.bootstrap_distribution(correct, n_resamples=N_RESAMPLES)

    def on_rows(rows: np.ndarray) -> float:
        return predictions.recompute([metric], _sliced(arrays, rows))[0][metric]

    return stats.bootstrap_distribution(on_rows, n, n_resamples=N_RESAMPLES)


def _cell(value: float, low: float | None, high: float | None, std: float | None = None) -> dict[str, Any]:
    def pct(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else round(100.0 * x, 4)

    return {"score": pct(value), "low": pct(low), "high": pct(high), "std": pct(std)}


def _summary_cells(distributions: dict[str, np.ndarray], scores: dict[str, float], families: dict[str, str],
                   suite_tasks: list[str]) -> dict[str, Any]:
    """Family means, plain mean and group mean, each with a percentile interval over the joint
    resamples (task i's resample b sits beside task j's resample b)."""
    summary = aggregate.summarize(scores, families, suite_tasks)
    columns = np.stack([distributions[t] for t in suite_tasks]) if summary.complete else None
    out: dict[str, Any] = {"families": {}, "completeness": summary.completeness}
    family_rows: dict[str, np.ndarray] = {}
    for family, value in summary.family_means.items():
        if value is None or columns is None:
            out["families"][family] = _cell(float("nan"), None, None)
            continue
        members = [i for i, t in enumerate(suite_tasks) if families[t] == family]
        family_rows[family] = columns[members].mean(axis=0)
        out["families"][family] = _cell(value, *stats.percentile_interval(family_rows[family]))
    if summary.complete:
        out["mean"] = _cell(summary.plain_mean, *stats.percentile_interval(columns.mean(axis=0)))
        out["group_mean"] = _cell(summary.group_mean,
                                  *stats.percentile_interval(np.stack(list(family_rows.values())).mean(axis=0)))
    else:
        out["mean"] = out["group_mean"] = _cell(float("nan"), None, None)
    return out


def _bundle_rows(folder: Path, site_link: str) -> list[dict[str, Any]]:
    """One row per setting of an opened, validated bundle (seeds averaged)."""
    manifest, model, records = bundle.read(folder)
    suite = tasks.get_suite(manifest["suite"])
    families = {t: tasks.get_task(t).family for t in suite.tasks}
    rows = []
    for setting in sorted({r["setting"] for r in records}):
        chosen = [r for r in records if r["setting"] == setting and r.get("eval", {}).get("main", True)]
        task_cells, distributions, scores = {}, {}, {}
        for task_id in suite.tasks:
            mine = [r for r in chosen if r["task"] == task_id]
            seeds = []
            for record in mine:
                arrays = predictions.load(folder / record["predictions"]["path"], record["predictions"]["sha256"])
                value = float(record["metrics"][record["primary_metric"]])
                seeds.append((value, _distribution(arrays, record["primary_metric"], value), arrays, record))
            values = np.array([s[0] for s in seeds])
            distributions[task_id] = np.mean([s[1] for s in seeds], axis=0)  # same resampled rows per seed
            scores[task_id] = float(values.mean())
            value, _, arrays, record = seeds[0]
            if len(seeds) == 1 and record["primary_metric"] == "top1" and arrays["target_kind"] == "single":
                n = len(arrays["ids"])
                low, high = stats.wilson_interval(int(round(value * n)), n)
            else:
                low, high = stats.percentile_interval(distributions[task_id])
            task_cells[task_id] = {**_cell(scores[task_id], low, high, float(values.std()) if len(seeds) > 1 else None),
                                   "metric": record["primary_metric"], "n": int(len(arrays["ids"])),
                                   "seeds": len(seeds)}
        rows.append({"kind": "submission", "model": str(model["name"]), "fingerprint": manifest["model_fingerprint"],
                     "protocol": manifest["protocol"], "regime": manifest["regime"], "setting": setting,
                     "suite": suite.name, "architecture": model.get("architecture"),
                     "parameters": model.get("parameters"), "pretraining_data": model.get("pretraining_data"),
                     "license": model.get("license"), "url": model.get("url"), "description": model.get("description"),
                     "manifest": site_link, "tasks": task_cells,
                     **_summary_cells(distributions, scores, families, list(suite.tasks))})
    return rows


# ----------------------------------------------------------------------------- published rows

def reference_rows() -> list[dict[str, Any]]:
    """The shipped published numbers as rows of the ``vtab1k`` / ``vtab`` tables (not re-run).

    A method with per-task numbers gets its means computed here, by `vtabkit.aggregate`; one
    with published means only shows those, each in the column of its own averaging convention.
    A means-only row of a method that another reference lists per task is left out (its means
    come from those same numbers).
    """
    frame = reference.load_all()
    rows: dict[tuple, dict[str, Any]] = {}
    for (name, method, protocol, regime), block in frame.groupby(["reference", "method", "protocol", "regime"],
                                                                  sort=False):
        suite_name = REFERENCE_SUITES.get(regime)
        if suite_name is None:
            continue
        suite = tasks.get_suite(suite_name)
        families = {t: tasks.get_task(t).family for t in suite.tasks}
        per_task = {r.task: r for r in block.itertuples() if r.task in families}
        published = {r.task: r for r in block.itertuples() if r.task not in families}
        cell = lambda r: {"score": float(r.score), "low": None, "high": None,  # noqa: E731
                          "std": None if math.isnan(r.std) else float(r.std)}
        row = {"kind": "reference", "reference": name, "model": method, "protocol": protocol, "regime": regime,
               "setting": "published", "suite": suite_name, "architecture": block["architecture"].iloc[0],
               "pretraining_data": block["pretraining"].iloc[0], "citation": block["citation"].iloc[0],
               "tasks": {t: cell(r) for t, r in per_task.items()}, "families": {}}
        if per_task:
            summary = aggregate.summarize({t: r.score for t, r in per_task.items()}, families, list(suite.tasks))
            row["families"] = {f: {"score": v, "low": None, "high": None, "std": None}
                               for f, v in summary.family_means.items() if v is not None}
            row["mean"] = {"score": summary.plain_mean, "low": None, "high": None, "std": None}
            row["group_mean"] = {"score": summary.group_mean, "low": None, "high": None, "std": None}
            row["completeness"] = summary.completeness
            row["averaging"] = "means computed by vtabkit from the published per-task numbers"
        else:
            for key, r in published.items():
                target = row if key in reference.MEAN_TASKS else row["families"]
                target[key] = cell(r)
            row["completeness"] = "means only"
            row["averaging"] = "; ".join(sorted({r.averaging for r in published.values() if r.averaging}))
        rows[(name, method, protocol, regime)] = row
    listed = {(m, p, g) for (_, m, p, g), row in rows.items() if row["tasks"]}
    return [row for (_, m, p, g), row in rows.items() if row["tasks"] or (m, p, g) not in listed]


# ----------------------------------------------------------------------------- the page

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "bundle"


def _suite_columns(suite_name: str) -> dict[str, Any]:
    suite = tasks.get_suite(suite_name)
    columns = [{"task": t, "family": tasks.get_task(t).family} for t in suite.tasks]
    return {"name": suite.name, "description": suite.description, "tasks": columns,
            "families": list(dict.fromkeys(c["family"] for c in columns))}


def embed_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` as such."""
    text = json.dumps(data, sort_keys=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build(paths: Iterable[Path], out: Path, *, data_dir: str | None = None, with_reference: bool = True) -> dict[str, Any]:
    """Validate every bundle under ``paths`` and write ``out/index.html``; returns the embedded data."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the site")
    found = find_bundles(paths)
    rows: list[dict[str, Any]] = []
    for number, path in enumerate(found):
        validate.validate(path, data_dir)  # a UserError naming the first failed check
        with bundle.opened(path) as folder:
            slug = f"{number:03d}-{_slug(path.name.removesuffix('.tar.gz'))}"
            link = f"bundles/{slug}/{bundle.MANIFEST}"
            rows.extend(_bundle_rows(folder, link))
            staged = out / "bundles" / slug
            staged.mkdir(parents=True, exist_ok=True)
            # Copied now: a .tar.gz's folder is gone once `opened` returns.
            for name in (bundle.MANIFEST, bundle.MODEL_FILE):
                shutil.copyfile(folder / name, staged / name)
    if with_reference:
        rows.extend(reference_rows())
    suites = [_suite_columns(name) for name in dict.fromkeys(row["suite"] for row in rows)]
    data = {"suites": suites, "rows": rows, "protocols": sorted({row["protocol"] for row in rows}),
            "families": list(dict.fromkeys(f for s in suites for f in s["families"])),
            "resamples": N_RESAMPLES}
    page = TEMPLATE.read_text()
    if DATA_MARK not in page:
        raise UserError(f"{TEMPLATE} lacks the data mark {DATA_MARK}; reinstall vtabkit")
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(page.replace(DATA_MARK, embed_json(data)), encoding="utf-8")
    return data
