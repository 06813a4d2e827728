"""Metrics on arrays: every metric by name, each a function ``(scores, targets, **options) -> float``.

Conventions (other modules rely on them):

- ``scores`` is a float array (N, C), logit-like (higher = more likely). Softmax of a row gives
  class probabilities (``ece``, ``nll``, ``brier``); sigmoid of each entry gives a per-class
  probability for multi-label targets (``micro_f1``). ``map`` ranks the raw scores. Everything is
  computed in float64, with log-sum-exp for stability.
- Target kinds: ``"single"`` int (N,) labels in [0, C); ``"multi"`` (N, C) 0/1 multi-hot;
  ``"set"`` (N, K) int, each row a set of acceptable labels padded with -1 (an all -1 row is an
  empty set and is left out of numerator and denominator, the ImageNet ReaL convention).
- Ties in the ranking of a row are broken by class index (lower index first), as ``np.argmax``
  does; ``top1``, ``top5`` and the stored top-k predictions all follow that one order.

A metric spec in task YAML is ``"NAME"`` or ``"NAME@COLUMN"``: the metric computed separately
on the examples of each value of the metadata column COLUMN, reported as the unweighted mean of
the groups (plus the per-group values). ``"NAME@A,B"`` groups by the pairs of values of columns
A and B (SI-Score's location grid: ``top1@x_coord,y_coord``); a group is then named ``"a,b"``.

The single-label metrics are written as a per-example statistic followed by a reduction
(``*_from`` functions), so that `vtabkit.predictions` can recompute them exactly from what it
stores instead of the full score matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vtabkit.errors import UserError

TARGET_KINDS = ("single", "multi", "set")
ECE_BINS = 15
_CHUNK_ROWS = 4096  # rows per softmax chunk: bounds the float64 temporaries at 4096 x C
_MAP_BLOCK = 64  # classes per average-precision block, for the same reason


@dataclass(frozen=True)
class Metric:
    name: str
    function: Callable[..., float]
    higher_is_better: bool
    targets: tuple[str, ...]
    description: str


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, higher_is_better: bool = True,
                    targets: tuple[str, ...] = ("single",)) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register ``function(scores, targets, **options) -> float`` under ``name``.

    The first line of its docstring becomes the description.
    """
    unknown = [kind for kind in targets if kind not in TARGET_KINDS]
    if unknown or not targets:
        raise UserError(f"metric {name!r}: targets must be some of {', '.join(TARGET_KINDS)}, got {targets!r}")

    def decorate(function: Callable[..., float]) -> Callable[..., float]:
        if name in METRICS:
            raise UserError(f"metric {name!r} is already registered; choose another name")
        description = next(iter((function.__doc__ or "").strip().splitlines()), "")
        METRICS[name] = Metric(name, function, higher_is_better, tuple(targets), description)
        return function

    return decorate


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(list_metrics())}")
    return METRICS[name]


def list_metrics() -> list[str]:
    return sorted(METRICS)


# ---------------------------------------------------------------------------------------------
# Validation: bad shapes are user mistakes (usually a model or head with the wrong output).

def check_scores(scores: Any, what: str = "scores") -> np.ndarray:
    """``scores`` as float64 (N, C), N >= 1, C >= 1; UserError otherwise.

    -inf is allowed: it marks a class left out of the argmax and the softmax (an eval set's
    class subset); every row needs at least one finite score, and NaN or +inf is an error.
    """
    array = np.asarray(scores)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{what} must be a non-empty 2-D array (examples, classes), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UserError(f"{what} must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if np.isnan(array).any() or np.isposinf(array).any() or not np.isfinite(array).any(axis=1).all():
        raise UserError(f"{what} contain NaN or infinity; check the model output")
    return array


def check_targets(targets: Any, kind: str, num_examples: int, num_classes: int) -> np.ndarray:
    """``targets`` of ``kind`` for N examples and C classes, validated; UserError otherwise."""
    array = np.asarray(targets)
    integral = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
    if kind == "single":
        if array.ndim != 1 or len(array) != num_examples or not integral:
            raise UserError(f"single-label targets must be an int array ({num_examples},), "
                            f"got {array.dtype} {array.shape}")
        if len(array) and (array.min() < 0 or array.max() >= num_classes):
            raise UserError(f"single-label targets must lie in [0, {num_classes}), "
                            f"got values from {array.min()} to {array.max()}")
        return array.astype(np.int64, copy=False)
    if kind == "multi":
        if array.shape != (num_examples, num_classes) or not integral:
            raise UserError(f"multi-hot targets must be a 0/1 array ({num_examples}, {num_classes}), "
                            f"got {array.dtype} {array.shape}")
        if not np.isin(array, (0, 1)).all():
            raise UserError("multi-hot targets must hold only 0 and 1")
        return array.astype(bool, copy=False)
    if kind == "set":
        if array.ndim != 2 or array.shape[0] != num_examples or array.shape[1] < 1 or not integral:
            raise UserError(f"label-set targets must be an int array ({num_examples}, K>=1) padded with -1, "
                            f"got {array.dtype} {array.shape}")
        if array.size and (array.min() < -1 or array.max() >= num_classes):
            raise UserError(f"label-set targets must lie in [0, {num_classes}) or be -1 (padding), "
                            f"got values from {array.min()} to {array.max()}")
        return array.astype(np.int64, copy=False)
    raise UserError(f"unknown target kind {kind!r}; use one of {', '.join(TARGET_KINDS)}")


def _checked(scores: Any, targets: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    scores = check_scores(scores)
    return scores, check_targets(targets, kind, *scores.shape)


# ---------------------------------------------------------------------------------------------
# Per-example statistics and reductions (shared with vtabkit.predictions).

def softmax_statistics(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example ``logsumexp``, ``sum_sq_prob`` (sum of squared softmax probabilities),
    ``max_score`` and ``argmax`` (first index of the maximum), in float64, in row chunks."""
    scores = np.asarray(scores)
    n = len(scores)
    out = {"logsumexp": np.empty(n), "sum_sq_prob": np.empty(n), "max_score": np.empty(n),
           "argmax": np.empty(n, np.int64)}
    for start in range(0, n, _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        chunk = scores[rows].astype(np.float64, copy=False)
        argmax = chunk.argmax(1)
        top = np.take_along_axis(chunk, argmax[:, None], 1)
        shifted = np.exp(chunk - top)  # largest entry is exp(0) = 1: no overflow, sum >= 1
        total = shifted.sum(1)
        out["logsumexp"][rows] = top[:, 0] + np.log(total)
        out["sum_sq_prob"][rows] = np.einsum("ij,ij->i", shifted, shifted) / total ** 2
        out["max_score"][rows] = top[:, 0]
        out["argmax"][rows] = argmax
    return out


def label_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each label in its row sorted by (score descending, class index ascending)."""
    target = np.take_along_axis(scores, labels[:, None], 1)
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > target).sum(1) + ((scores == target) & before).sum(1)


def ece_from(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error from per-example confidence and correctness.

    Bins are equal-width with edges k / bins, closed on the right: bin b holds confidences in
    (b/bins, (b+1)/bins] (the first bin also holds 0). ECE = sum over bins of
    |accuracy - mean confidence| * (examples in bin / N).
    """
    edges = np.arange(bins + 1) / bins
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct.astype(np.float64), minlength=bins) \
        - np.bincount(which, weights=confidence, minlength=bins)
    # |sum(correct) - sum(conf)| / N per bin equals |acc - conf| * share; empty bins give 0.
    return float(np.abs(gap).sum() / len(confidence))


def nll_from(label_log_prob: np.ndarray) -> float:
    return float(-np.mean(label_log_prob))


def brier_from(sum_sq_prob: np.ndarray, label_prob: np.ndarray) -> float:
    # sum_c (p_c - onehot_c)^2 = sum_c p_c^2 - 2 p_label + 1
    return float(np.mean(sum_sq_prob - 2.0 * label_prob + 1.0))


def mean_per_class_recall_from(correct: np.ndarray, labels: np.ndarray) -> float:
    present = np.unique(labels)
    hits = np.bincount(labels, weights=correct.astype(np.float64))[present]
    return float(np.mean(hits / np.bincount(labels)[present]))


def real_top1_from(prediction: np.ndarray, label_sets: np.ndarray) -> float:
    keep = (label_sets >= 0).any(1)
    if not keep.any():
        raise UserError("real_top1: every label set is empty (all -1); there is nothing to score")
    hit = (label_sets[keep] == prediction[keep, None]).any(1)
    return float(hit.mean())


# ---------------------------------------------------------------------------------------------
# The metrics.

@register_metric("top1")
def top1(scores: Any, targets: Any) -> float:
    """Top-1 accuracy: the highest score is the label (ties: lowest class index)."""
    scores, labels = _checked(scores, targets, "single")
    return float(np.mean(scores.argmax(1) == labels))


@register_metric("top5")
def top5(scores: Any, targets: Any, *, k: int = 5) -> float:
    """Top-5 accuracy: the label is among the 5 highest scores (top-C when C < 5, i.e. always 1)."""
    scores, labels = _checked(scores, targets, "single")
    return float(np.mean(label_rank(scores, labels) < k))


@register_metric("real_top1", targets=("set",))
def real_top1(scores: Any, targets: Any) -> float:
    """ReaL top-1: the highest score is in the example's label set; empty sets are left out."""
    scores, label_sets = _checked(scores, targets, "set")
    return real_top1_from(scores.argmax(1), label_sets)


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Average precision of each column (each has a positive), as scikit-learn computes it."""
    n = len(scores)
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, 0)
    hits = np.take_along_axis(positive, order, 0)
    precision = np.cumsum(hits, 0) / np.arange(1, n + 1)[:, None]
    # Tied scores form one threshold (as scikit-learn's precision-recall curve): each positive
    # counts the precision at the end of its tie group.
    group_end = np.ones_like(ranked, dtype=bool)
    group_end[:-1] = ranked[:-1] != ranked[1:]
    end_index = np.where(group_end, np.arange(n)[:, None], n)
    end_index = np.minimum.accumulate(end_index[::-1], 0)[::-1]
    at_end = np.take_along_axis(precision, end_index, 0)
    return (hits * at_end).sum(0) / hits.sum(0)


@register_metric("map", targets=("multi",))
def mean_average_precision(scores: Any, targets: Any) -> float:
    """Macro mean average precision over the classes with at least one positive (multi-hot)."""
    scores, positive = _checked(scores, targets, "multi")
    classes = np.flatnonzero(positive.any(0))
    if not len(classes):
        raise UserError("map: no class has a positive example; there is nothing to score")
    # Column blocks bound the (N, block) temporaries of the sort.
    ap = np.concatenate([_average_precision(scores[:, block], positive[:, block])
                         for block in np.array_split(classes, max(1, len(classes) // _MAP_BLOCK))])
    return float(ap.mean())


@register_metric("micro_f1", targets=("multi",))
def micro_f1(scores: Any, targets: Any) -> float:
    """Micro-averaged F1 with a class predicted where sigmoid(score) > 0.5, i.e. score > 0.

    The threshold is strict: a score of exactly 0 (sigmoid 0.5) is a negative. With no true and
    no predicted positives at all, F1 is 0 (scikit-learn's zero_division default).
    """
    scores, positive = _checked(scores, targets, "multi")
    predicted = scores > 0
    true_pos = np.sum(predicted & positive)
    denominator = predicted.sum() + positive.sum()  # 2TP + FP + FN
    return float(2 * true_pos / denominator) if denominator else 0.0


@register_metric("ece", higher_is_better=False)
def ece(scores: Any, targets: Any, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error, 15 equal-width bins (b/15, (b+1)/15] on max softmax probability."""
    scores, labels = _checked(scores, targets, "single")
    stats = softmax_statistics(scores)
    confidence = np.exp(stats["max_score"] - stats["logsumexp"])
    return ece_from(confidence, stats["argmax"] == labels, bins)


@register_metric("nll", higher_is_better=False)
def nll(scores: Any, targets: Any) -> float:
    """Mean negative log softmax probability of the label."""
    scores, labels = _checked(scores, targets, "single")
    label_score = np.take_along_axis(scores, labels[:, None], 1)[:, 0]
    return nll_from(label_score - softmax_statistics(scores)["logsumexp"])


@register_metric("brier", higher_is_better=False)
def brier(scores: Any, targets: Any) -> float:
    """Mean over examples of sum_c (softmax p_c - onehot_c)^2."""
    scores, labels = _checked(scores, targets, "single")
    stats = softmax_statistics(scores)
    label_score = np.take_along_axis(scores, labels[:, None], 1)[:, 0]
    return brier_from(stats["sum_sq_prob"], np.exp(label_score - stats["logsumexp"]))


@register_metric("mean_per_class_recall")
def mean_per_class_recall(scores: Any, targets: Any) -> float:
    """Mean over the classes present in the targets of their top-1 recall (balanced accuracy)."""
    scores, labels = _checked(scores, targets, "single")
    return mean_per_class_recall_from(scores.argmax(1) == labels, labels)


# ---------------------------------------------------------------------------------------------
# Groups and specs.

def over_groups(evaluate: Callable[[np.ndarray], float], groups: Any) -> tuple[float, dict[str, float]]:
    """``evaluate(rows)`` on the rows of each distinct value of ``groups`` (sorted by value);
    returns the unweighted mean of the groups and {str(value): value}."""
    values = np.asarray(groups)
    if values.ndim != 1 or len(values) == 0:
        raise UserError(f"groups must be a non-empty 1-D array (one value per example), got shape {values.shape}")
    items = values.tolist()  # python scalars: str(value) reads '3', not 'np.int64(3)'
    try:
        distinct = sorted(set(items))
    except TypeError:
        raise UserError("group values cannot be sorted (mixed types?); use one type per metadata column") from None
    code = {value: i for i, value in enumerate(distinct)}
    codes = np.fromiter((code[value] for value in items), np.int64, len(items))
    per_group = {group_name(value): evaluate(np.flatnonzero(codes == i)) for i, value in enumerate(distinct)}
    return float(np.mean(list(per_group.values()))), per_group


def group_name(value: Any) -> str:
    """How a group is named in records: ``'3'``, or ``'0.25,0.5'`` for a pair of columns."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def group_keys(columns: Sequence[np.ndarray]) -> np.ndarray:
    """One group value per example: the column itself, or (several columns) a 1-D array of tuples."""
    if len(columns) == 1:
        return np.asarray(columns[0])
    keys = np.empty(len(columns[0]), dtype=object)
    keys[:] = list(zip(*(np.asarray(column).tolist() for column in columns)))
    return keys


def grouped(name: str, scores: Any, targets: Any, groups: Any) -> tuple[float, dict[str, float]]:
    """Metric ``name`` per distinct value of ``groups`` (N,); (unweighted mean, {str(value): value})."""
    metric = get_metric(name)
    scores, targets = check_scores(scores), np.asarray(targets)
    if len(np.asarray(groups)) != len(scores):
        raise UserError(f"groups have {len(np.asarray(groups))} values for {len(scores)} examples")
    return over_groups(lambda rows: metric.function(scores[rows], targets[rows]), groups)


def parse_spec(spec: Any) -> tuple[str, str | None]:
    """``"NAME"`` -> (NAME, None); ``"NAME@COLUMN"`` -> (NAME, COLUMN), COLUMN possibly ``"A,B"``.
    NAME must be registered."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"a metric spec must be a string NAME or NAME@COLUMN, got {spec!r}")
    name, at, column = spec.partition("@")
    if at and (not column or "@" in column or not all(column.split(","))):
        raise UserError(f"metric spec {spec!r} must be NAME, NAME@COLUMN or NAME@COLUMN,COLUMN "
                        "(one @, column names after it)")
    get_metric(name)
    return name, (column if at else None)


def spec_columns(spec: str) -> tuple[str, ...]:
    """The metadata columns a spec groups by: () for ``top1``, ("x", "y") for ``top1@x,y``."""
    column = parse_spec(spec)[1]
    return tuple(column.split(",")) if column else ()


def metadata_columns(specs: Iterable[str]) -> list[str]:
    """Every metadata column some spec of ``specs`` groups by, sorted, once each."""
    return sorted({column for spec in specs for column in spec_columns(spec)})


def check_specs(specs: Any, target_kind: str, where: str) -> None:
    """Validate a list of metric specs for targets of ``target_kind``; UserError mentions ``where``."""
    if target_kind not in TARGET_KINDS:
        raise UserError(f"{where}: unknown target kind {target_kind!r}; use one of {', '.join(TARGET_KINDS)}")
    if isinstance(specs, str) or not isinstance(specs, (list, tuple)) or not specs:
        raise UserError(f"{where}: metrics must be a non-empty list of NAME or NAME@COLUMN, got {specs!r}")
    for spec in specs:
        try:
            name, _ = parse_spec(spec)
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
        accepted = get_metric(name).targets
        if target_kind not in accepted:
            raise UserError(f"{where}: metric {name!r} needs {' or '.join(accepted)} targets, "
                            f"but this eval set has {target_kind} targets")


def evaluate_specs(specs: Sequence[str], evaluate: Callable[[str, np.ndarray | None], float], *,
                   target_kind: str, num_examples: int, metadata: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The engine behind `compute`: ``evaluate(name, rows)`` scores metric ``name`` on ``rows``
    (None = all examples). Returns ({spec: value}, {grouped spec: {group: value}})."""
    check_specs(list(specs), target_kind, "metrics")
    metadata = metadata or {}
    values: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}
    for spec in specs:
        name, column = parse_spec(spec)
        if column is None:
            values[spec] = float(evaluate(name, None))
            continue
        parts = []
        for part in column.split(","):
            if part not in metadata:
                known = ", ".join(sorted(metadata)) or "none"
                raise UserError(f"metric {spec!r} groups by metadata column {part!r}, which this eval set "
                                f"does not have (columns: {known})")
            part_values = np.asarray(metadata[part])
            if part_values.shape != (num_examples,):
                raise UserError(f"metadata column {part!r} has shape {part_values.shape}, "
                                f"expected one value per example ({num_examples},)")
            parts.append(part_values)
        values[spec], groups[spec] = over_groups(lambda rows: evaluate(name, rows), group_keys(parts))
    return values, groups


def compute(specs: Iterable[str], scores: Any, targets: Any, *, target_kind: str,
            metadata: Mapping[str, Any] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Every metric spec on (scores, targets): ({spec: value}, {grouped spec: {group: value}}).

    A grouped spec ``NAME@COLUMN`` gives the unweighted mean over the groups of ``metadata[COLUMN]``.
    """
    specs = list(specs)
    scores = check_scores(scores)
    targets = check_targets(targets, target_kind, *scores.shape) if target_kind in TARGET_KINDS else targets

    def evaluate(name: str, rows: np.ndarray | None) -> float:
        function = get_metric(name).function
        return function(scores, targets) if rows is None else function(scores[rows], targets[rows])

    return evaluate_specs(specs, evaluate, target_kind=target_kind, num_examples=len(scores), metadata=metadata)
