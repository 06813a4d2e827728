"""Per-example views of a record's stored predictions, for intervals (report) and paired tests (compare).

A record's predictions file holds one row per test example (`vtabkit.predictions`). Here a
record becomes an `Examples`: its example ids, and a way to score its primary metric on any
multiset of rows, so that a bootstrap recomputes the metric on every resample instead of
assuming it is a mean of per-example numbers. Accuracy-type metrics (`top1`) also expose the
0/1 correctness per example, which makes their bootstrap a vectorised mean and feeds McNemar.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from vtabkit import metadata as example_metadata
from vtabkit import predictions
from vtabkit.errors import UserError

# Metrics that are the mean of a per-example 0/1 correctness (McNemar applies to these).
CORRECTNESS_METRICS = ("top1",)


@dataclasses.dataclass
class Examples:
    """One record's per-example predictions, scored by ``metric``."""

    ids: np.ndarray
    metric: str
    arrays: dict[str, np.ndarray]
    groups: dict[str, np.ndarray] | None = None  # metadata columns, for grouped metrics (top1@factor)

    @property
    def n(self) -> int:
        return len(self.ids)

    def correct(self) -> np.ndarray | None:
        """0/1 correctness per example for accuracy-type metrics, else None."""
        if self.metric not in CORRECTNESS_METRICS:
            return None
        targets = self.arrays["targets"].astype(np.int64)
        if "scores" in self.arrays:
            # argmax takes the first maximum: the lower class index wins ties, as in vtabkit.metrics.
            return (np.argmax(self.arrays["scores"], axis=1) == targets).astype(np.float64)
        return (self.arrays["top_index"][:, 0].astype(np.int64) == targets).astype(np.float64)

    def score(self, rows: np.ndarray | None = None) -> float:
        """The metric on ``rows`` (indices, repeats allowed; None = every example)."""
        if rows is None:
            arrays, groups = self.arrays, self.groups
        else:
            arrays = {key: (value[rows] if value.ndim and len(value) == self.n else value)
                      for key, value in self.arrays.items()}
            groups = None if self.groups is None else {key: value[rows] for key, value in self.groups.items()}
        values, _ = predictions.recompute([self.metric], arrays, metadata=groups)
        return float(values[self.metric])

    def reordered(self, order: np.ndarray) -> "Examples":
        """The same predictions with rows in ``order`` (to line two runs up by example id)."""
        arrays = {key: (value[order] if value.ndim and len(value) == self.n else value)
                  for key, value in self.arrays.items()}
        groups = None if self.groups is None else {key: value[order] for key, value in self.groups.items()}
        return Examples(self.ids[order], self.metric, arrays, groups)


def load(run_dir: Path, record: dict[str, Any]) -> Examples:
    """The predictions of ``record`` (checked against its sha256), scored by its primary metric."""
    stored = record.get("predictions")
    where = f"{record['task']} / {record['eval_set']}"
    if not stored:
        raise UserError(f"{where}: this record has no per-example predictions (an older vtabkit wrote it); "
                        "re-run it with a new --out to compare or get intervals")
    arrays = predictions.load(Path(run_dir) / stored["path"], stored["sha256"])
    metric = record["primary_metric"]
    groups = None
    meta = (record.get("eval") or {}).get("metadata")
    if "@" in metric and meta and not meta.get("missing"):
        column = metric.partition("@")[2]
        groups, _ = example_metadata.join(Path(meta["path"]), meta["id_column"], arrays["ids"], [column])
    return Examples(np.asarray(arrays["ids"]).astype(str), metric, arrays, groups)


def aligned(reference: Examples, other: Examples, where: str) -> Examples:
    """``other`` with its rows in ``reference``'s example order; one-line error if the ids differ."""
    if reference.n != other.n or len(np.unique(reference.ids)) != reference.n \
            or not np.array_equal(np.sort(reference.ids), np.sort(other.ids)):
        only = len(np.setdiff1d(reference.ids, other.ids)) + len(np.setdiff1d(other.ids, reference.ids))
        raise UserError(f"{where}: the two runs were scored on different test examples ({reference.n} vs "
                        f"{other.n} examples, {only} ids in one only; another dataset version or split?); "
                        "compare runs of the same task definition")
    position = {example_id: index for index, example_id in enumerate(other.ids)}
    return other.reordered(np.array([position[example_id] for example_id in reference.ids], dtype=np.int64))


def seed_mean_distribution(seeds: list[Examples], n_resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """The metric averaged over ``seeds`` (same examples, same order): its value and its value on
    each bootstrap resample of the examples (the same rows for every seed)."""
    from vtabkit import stats

    n = seeds[0].n
    correct = [examples.correct() for examples in seeds]
    if all(value is not None for value in correct):
        per_example = np.mean(correct, axis=0)  # the mean over seeds of accuracy is a mean of this
        return float(per_example.mean()), stats.bootstrap_distribution(per_example, n_resamples=n_resamples,
                                                                         seed=seed)
    value = float(np.mean([examples.score() for examples in seeds]))
    samples = stats.bootstrap_distribution(lambda rows: np.mean([e.score(rows) for e in seeds]), n,
                                           n_resamples=n_resamples, seed=seed)
    return value, samples
