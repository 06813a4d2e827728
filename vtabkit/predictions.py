"""Per-example predictions kept in the run directory, so that metrics can be recomputed later.

One record's predictions are a dict of numpy arrays (`compact`), written as one compressed
``.npz`` file (`save`, atomic, returns its sha256 for the record) and read back (`load`,
checked against that sha256). `recompute` gives the same two dicts as `metrics.compute`.

What is stored:

- always ``ids`` (unicode str array, the example ids), ``targets`` (smallest integer dtype that
  holds them; bool for multi-hot), ``num_classes`` (0-d int) and ``target_kind`` (0-d str);
- with at most ``FULL_SCORES_MAX_CLASSES`` classes, or multi-hot targets: ``scores`` as float32
  (N, C), from which every metric is recomputed by `metrics.compute` (exactly when the model
  produced float32 scores, as the JAX heads do);
- otherwise the top-k form: ``top_index`` int32 (N, 5) and ``top_score`` float32 (N, 5), in the
  ranking order of `vtabkit.metrics` (score descending, lower class index first), plus float64
  per-example statistics from which the single-label and label-set metrics are recomputed
  exactly: ``logsumexp``, ``sum_sq_prob`` (sum of squared softmax probabilities), ``max_score``
  (the top score at full precision, for ECE's confidence) and, for single targets,
  ``target_score`` (the label's score). ``top_score - logsumexp`` are the top-5
  log-probabilities.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from vtabkit import metrics, paths
from vtabkit.errors import UserError

FULL_SCORES_MAX_CLASSES = 100
TOP_K = 5
_CHUNK_ROWS = 4096  # rows per top-k chunk: bounds the temporaries at 4096 x C

# The metrics the top-k form can recompute, each from the rows it is asked for.
_TOP_K_METRICS = ("top1", "top5", "real_top1", "mean_per_class_recall", "ece", "nll", "brier")


def _compact_ints(values: np.ndarray) -> np.ndarray:
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dtype)
    return values.astype(np.int64)


def top_k(scores: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The k best (index, score) of each row, ordered by score descending then class index."""
    k = min(k, scores.shape[1])
    parts = [_top_k_rows(scores[start:start + _CHUNK_ROWS], k) for start in range(0, len(scores), _CHUNK_ROWS)]
    return np.concatenate([index for index, _ in parts]), np.concatenate([value for _, value in parts])


def _top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, candidates, 1)
    # argpartition picks arbitrarily among scores tied with the k-th; rows where such a tie
    # crosses the cut are rare, and get a full stable sort so the choice is the lowest indices.
    crossing = np.flatnonzero((scores >= values.min(1)[:, None]).sum(1) > k)
    if len(crossing):
        candidates[crossing] = np.argsort(-scores[crossing], axis=1, kind="stable")[:, :k]
        values[crossing] = np.take_along_axis(scores[crossing], candidates[crossing], 1)
    order = np.lexsort((candidates, -values), axis=1)
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(values, order, 1)


def compact(ids: Any, scores: Any, targets: Any, *, target_kind: str) -> dict[str, np.ndarray]:
    """What is stored for one record (see the module docstring)."""
    scores = metrics.check_scores(scores)
    n, c = scores.shape
    targets = metrics.check_targets(targets, target_kind, n, c)
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise UserError(f"example ids have shape {ids.shape}, expected one id per example ({n},)")
    arrays = {"ids": ids.astype(str),
              "targets": targets.astype(bool) if target_kind == "multi" else _compact_ints(targets),
              "num_classes": np.array(c, np.int64), "target_kind": np.array(target_kind)}
    if c <= FULL_SCORES_MAX_CLASSES or target_kind == "multi":
        arrays["scores"] = scores.astype(np.float32)
        return arrays
    index, top_score = top_k(scores)
    stats = metrics.softmax_statistics(scores)
    arrays.update(top_index=index.astype(np.int32), top_score=top_score.astype(np.float32),
                  logsumexp=stats["logsumexp"], sum_sq_prob=stats["sum_sq_prob"], max_score=stats["max_score"])
    if target_kind == "single":
        arrays["target_score"] = np.take_along_axis(scores, targets[:, None], 1)[:, 0]
    return arrays


def save(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``path`` (compressed npz) atomically; returns the file's sha256 hex."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".predictions-", suffix=".tmp")
    paths.readable_mode(handle)
    digest = hashlib.sha256()
    try:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
        data = buffer.getvalue()
        digest.update(data)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # A reader sees the old file or the whole new one, never a partial write.
        os.replace(temporary, path)
        _fsync_folder(folder)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return digest.hexdigest()


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder, which is harmless.
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def load(path: str | os.PathLike, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a predictions file; with ``sha256``, refuse one whose content does not match it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise UserError(f"predictions file {path} does not exist; re-run the evaluation that wrote it") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise UserError(f"predictions file {path} does not match its record's sha256; it was changed or damaged")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"predictions file {path} cannot be read as a numpy .npz archive ({error})") from None


def _require(arrays: Mapping[str, np.ndarray], keys: Iterable[str]) -> None:
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise UserError(f"predictions lack {', '.join(missing)}; they were not written by vtabkit.predictions.compact")


def _top_k_evaluator(arrays: Mapping[str, np.ndarray], target_kind: str) -> Callable[[str, np.ndarray | None], float]:
    stats = ["top_index", "logsumexp", "sum_sq_prob", "max_score"] + (["target_score"] if target_kind == "single" else [])
    _require(arrays, stats)
    n, c = len(arrays["top_index"]), int(arrays["num_classes"])
    targets = metrics.check_targets(arrays["targets"], target_kind, n, c)
    top_index = arrays["top_index"].astype(np.int64)
    lse = arrays["logsumexp"]

    def evaluate(name: str, rows: np.ndarray | None) -> float:
        if name not in _TOP_K_METRICS:
            raise UserError(f"metric {name!r} needs full scores, but these predictions keep only the top "
                            f"{TOP_K} of {c} classes; recompute it from a fresh run")
        pick = slice(None) if rows is None else rows
        labels, best = targets[pick], top_index[pick]
        if name == "real_top1":
            return metrics.real_top1_from(best[:, 0], labels)
        correct = best[:, 0] == labels
        if name == "top1":
            return float(correct.mean())
        if name == "top5":
            return float((best == labels[:, None]).any(1).mean())
        if name == "mean_per_class_recall":
            return metrics.mean_per_class_recall_from(correct, labels)
        if name == "ece":
            return metrics.ece_from(np.exp(arrays["max_score"][pick] - lse[pick]), correct)
        label_log_prob = arrays["target_score"][pick] - lse[pick]
        if name == "nll":
            return metrics.nll_from(label_log_prob)
        return metrics.brier_from(arrays["sum_sq_prob"][pick], np.exp(label_log_prob))  # brier

    return evaluate


def recompute(specs: Iterable[str], arrays: Mapping[str, np.ndarray], *,
              metadata: Mapping[str, Any] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The metric specs recomputed from stored predictions: the two dicts of `metrics.compute`."""
    specs = list(specs)
    _require(arrays, ["targets", "num_classes", "target_kind"])
    target_kind = str(arrays["target_kind"])
    if "scores" in arrays:
        return metrics.compute(specs, arrays["scores"], arrays["targets"], target_kind=target_kind, metadata=metadata)
    evaluate = _top_k_evaluator(arrays, target_kind)
    return metrics.evaluate_specs(specs, evaluate, target_kind=target_kind,
                                  num_examples=len(arrays["top_index"]), metadata=metadata)
